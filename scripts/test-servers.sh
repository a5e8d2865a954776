#!/usr/bin/env bash
# Installs (when missing) and starts, on loopback, the real servers the backend test runs
# need: s3s-fs (an S3-compatible server that checks SigV4, pinned) and a private
# PostgreSQL cluster from Debian's `postgresql` package. Prints the settings for the test
# suite as shell assignments (TEST_S3_ENDPOINT, TEST_POSTGRES_URL, TEST_POSTGRES_RESTART,
# TEST_SERVERS_STOP). Data lives under a fresh temporary directory.
#
#   eval "$(scripts/test-servers.sh)"   # start; then `eval "$TEST_SERVERS_STOP"` stops
#
# Ports: IMGEDGE_TEST_S3_PORT (default 18014), IMGEDGE_TEST_PG_PORT (default 54329).
set -euo pipefail

S3S_VERSION=0.14.1
s3_port=${IMGEDGE_TEST_S3_PORT:-18014}
pg_port=${IMGEDGE_TEST_PG_PORT:-54329}
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

log() { echo "test-servers: $*" >&2; }

wait_for_port() {
  local port=$1 what=$2
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  log "$what did not start listening on port $port"
  return 1
}

# --- install -------------------------------------------------------------------------
if ! s3s-fs --version 2>/dev/null | grep -q "$S3S_VERSION"; then
  log "installing s3s-fs $S3S_VERSION (cargo install, about 2 minutes)"
  cargo install s3s-fs --version "$S3S_VERSION" --features binary --locked --quiet >&2
fi
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$pg_bin" ] || [ ! -x "$pg_bin/initdb" ]; then
  log "installing postgresql (apt)"
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null
  pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
fi

work=$(mktemp -d /tmp/imgedge-test-servers.XXXXXX)
chmod 755 "$work"

# --- s3s-fs --------------------------------------------------------------------------
mkdir -p "$work/s3"
s3s-fs --host 127.0.0.1 --port "$s3_port" --access-key imgedge --secret-key imgedge-secret \
  "$work/s3" >"$work/s3s.log" 2>&1 &
s3_pid=$!
wait_for_port "$s3_port" s3s-fs

# --- PostgreSQL (initdb refuses to run as root: use the package's postgres user) -----
as_pg=()
if [ "$(id -u)" -eq 0 ]; then as_pg=(runuser -u postgres --); fi
mkdir -p "$work/pg"
if [ "$(id -u)" -eq 0 ]; then chown postgres "$work/pg"; fi
"${as_pg[@]}" "$pg_bin/initdb" -D "$work/pg" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$work/initdb.log" 2>&1
pg_opts="-p $pg_port -k $work/pg -c listen_addresses=127.0.0.1 -c max_connections=400 -c fsync=off"
"${as_pg[@]}" "$pg_bin/pg_ctl" -D "$work/pg" -o "$pg_opts" -l "$work/pg/log" -w start >/dev/null
wait_for_port "$pg_port" PostgreSQL

restart="${as_pg[*]} $pg_bin/pg_ctl -D $work/pg -m fast -w restart >/dev/null"
stop="kill $s3_pid 2>/dev/null; ${as_pg[*]} $pg_bin/pg_ctl -D $work/pg -m immediate stop >/dev/null 2>&1; rm -rf $work"
log "s3s-fs on 127.0.0.1:$s3_port, PostgreSQL on 127.0.0.1:$pg_port (data in $work)"
printf 'export TEST_S3_ENDPOINT=%q\n' "http://127.0.0.1:$s3_port"
printf 'export TEST_S3_ACCESS_KEY=imgedge TEST_S3_SECRET_KEY=imgedge-secret\n'
printf 'export TEST_POSTGRES_URL=%q\n' "postgres://postgres@127.0.0.1:$pg_port/postgres"
printf 'export TEST_POSTGRES_RESTART=%q\n' "$restart"
printf 'TEST_SERVERS_STOP=%q\n' "$stop"
