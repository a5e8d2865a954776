#!/usr/bin/env bash
# The README's storage-API walk-through as one script: mint a key and a token, upload two
# files with presigned URLs and register them as public in two buckets (the app's own
# labels), list one bucket, show a named error, fetch a resize URL.
#
#   scripts/walkthrough.sh [path/to/imgedge] [image.jpg] [avatar.png]
#
# Runs a throw-away server in a temporary directory on IMGEDGE_CDN_ADDR / IMGEDGE_API_ADDR
# (defaults 127.0.0.1:18080 / 127.0.0.1:18081) and stops it at the end. Needs curl.
set -euo pipefail
BIN=${1:-target/release/imgedge}
IMAGE=${2:-fixtures/landscape.jpg}
AVATAR=${3:-fixtures/alpha.png}
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

# 3. Upload a file: ask for a presigned URL (declaring the size, which the store then holds
#    the upload to), PUT the bytes straight to it, register it with the app's `bucket` label.
upload() { # upload FILE NAME CONTENT-TYPE BUCKET -> prints the registered file object
  local file=$1 name=$2 ct=$3 bucket=$4 size url key
  size=$(wc -c <"$file" | tr -d ' ')
  curl -sf -X POST "http://$API/v1/files/presigned-url" \
    -H "X-API-Key: $PK" -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
    -d "{\"filename\": \"$name\", \"contentType\": \"$ct\", \"fileSize\": $size}" >"$WORK/presign.json"
  url=$(field url <"$WORK/presign.json")
  key=$(field key <"$WORK/presign.json")
  curl -sf -X PUT "$url" -H "Content-Type: $ct" --data-binary @"$file" >/dev/null
  curl -sf -X POST "http://$API/v1/files" \
    -H "X-API-Key: $PK" -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
    -d "{\"s3Key\": \"$key\", \"originalName\": \"$name\", \"mimeType\": \"$ct\", \"size\": $size, \"visibility\": \"public\", \"bucket\": \"$bucket\"}"
}
upload "$IMAGE" photo.jpg image/jpeg images >"$WORK/file.json"
echo "registered: $(cat "$WORK/file.json")"
KEY=$(field s3Key <"$WORK/file.json")
upload "$AVATAR" me.png image/png avatars >"$WORK/avatar.json"
echo "registered: $(cat "$WORK/avatar.json")"

# 4. List one bucket: only the avatar.
curl -sf "http://$API/v1/files?bucket=avatars" -H "X-API-Key: $PK" >"$WORK/avatars.json"
echo "bucket=avatars: $(cat "$WORK/avatars.json")"
grep -q '"total":1,' "$WORK/avatars.json"
grep -q '"originalName":"me.png"' "$WORK/avatars.json"

# 5. A mistake is named: the field, what was expected, what came.
curl -s -X POST "http://$API/v1/files/presigned-url" \
  -H "X-API-Key: $PK" -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
  -d '{"filename": "a.jpg", "contentType": "image/jpeg", "fileSize": "big"}' >"$WORK/error.json" || true
echo "a wrong type: $(cat "$WORK/error.json")"
grep -q 'fileSize: expected an integer, got a string' "$WORK/error.json"

# 6. Open the photo's resize URL (the `cdnUrl` of the file object is its untransformed link).
THUMB="http://$CDN/fit-in/300x200/filters:format(webp)/$KEY"
curl -sf -o "$WORK/thumb.webp" -w "GET $THUMB -> %{http_code} %{content_type} %{size_download} bytes\n" "$THUMB"
head -c 12 "$WORK/thumb.webp" | grep -q WEBP && echo "walk-through OK"
