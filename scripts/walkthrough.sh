#!/usr/bin/env bash
# The README's storage-API walk-through as one script: mint a key and a token, upload an
# image with a presigned URL, register it as public, fetch its resize URL.
#
#   scripts/walkthrough.sh [path/to/imgedge] [image.jpg]
#
# Runs a throw-away server in a temporary directory on IMGEDGE_CDN_ADDR / IMGEDGE_API_ADDR
# (defaults 127.0.0.1:18080 / 127.0.0.1:18081) and stops it at the end. Needs curl.
set -euo pipefail
BIN=${1:-target/release/imgedge}
IMAGE=${2:-fixtures/landscape.jpg}
CDN=${IMGEDGE_CDN_ADDR:-127.0.0.1:18080}
API=${IMGEDGE_API_ADDR:-127.0.0.1:18081}
WORK=$(mktemp -d)
trap 'kill "$SERVER" 2>/dev/null || true; rm -rf "$WORK"' EXIT
field() { grep -o "\"$1\":\"[^\"]*\"" | head -n1 | cut -d'"' -f4; }

# 1. A JWT secret, an API key (its hash goes into the config file), and a token for alice.
export IMGEDGE_JWT_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
PK=$("$BIN" keys new --project demo --append-to "$WORK/imgedge.toml" | grep -o 'pk_[0-9a-f]\{64\}')
TOKEN=$("$BIN" token --sub alice)

# 2. Start the service.
IMGEDGE_CDN_ADDR=$CDN IMGEDGE_API_ADDR=$API "$BIN" serve --config "$WORK/imgedge.toml" \
  --data-dir "$WORK/data" >"$WORK/server.log" 2>&1 &
SERVER=$!
for _ in $(seq 100); do curl -sf "http://$API/readyz" >/dev/null && break; sleep 0.1; done

# 3. Ask for a presigned upload URL, then PUT the file straight to it.
curl -sf -X POST "http://$API/v1/files/presigned-url" \
  -H "X-API-Key: $PK" -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
  -d '{"filename": "photo.jpg", "contentType": "image/jpeg"}' >"$WORK/presign.json"
URL=$(field url <"$WORK/presign.json")
KEY=$(field key <"$WORK/presign.json")
curl -sf -X PUT "$URL" -H 'Content-Type: image/jpeg' --data-binary @"$IMAGE" >/dev/null

# 4. Register it as public.
SIZE=$(wc -c <"$IMAGE" | tr -d ' ')
curl -sf -X POST "http://$API/v1/files" \
  -H "X-API-Key: $PK" -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
  -d "{\"s3Key\": \"$KEY\", \"originalName\": \"photo.jpg\", \"mimeType\": \"image/jpeg\", \"size\": $SIZE, \"visibility\": \"public\"}" \
  >"$WORK/file.json"
echo "registered: $(cat "$WORK/file.json")"

# 5. Open its resize URL.
THUMB="http://$CDN/fit-in/300x200/filters:format(webp)/$KEY"
curl -sf -o "$WORK/thumb.webp" -w "GET $THUMB -> %{http_code} %{content_type} %{size_download} bytes\n" "$THUMB"
head -c 12 "$WORK/thumb.webp" | grep -q WEBP && echo "walk-through OK"
