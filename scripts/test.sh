#!/usr/bin/env bash
# The whole test suite, on every backend combination that matters:
#   1. unit tests + integration suite on the embedded defaults (local store + SQLite);
#   2. the integration suite on S3 (s3s-fs, real SigV4) + SQLite;
#   3. the integration suite on S3 + PostgreSQL, including the two-node test;
#   4. alone, the test that restarts PostgreSQL under a running node.
# Installs what the build needs (scripts/setup.sh) and starts the servers
# (scripts/test-servers.sh); stops them on exit. Extra arguments go to every `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# The playground's test drives a real headless Chromium; here it must run, not skip.
scripts/browser.sh
export TEST_REQUIRE_BROWSER=1
cargo build --locked --tests --bins >&2
eval "$(scripts/test-servers.sh)"
trap 'eval "$TEST_SERVERS_STOP"' EXIT

echo "== 1/4 local store + SQLite" >&2
env -u TEST_S3_ENDPOINT -u TEST_POSTGRES_URL cargo test --locked "$@"
echo "== 2/4 S3 + SQLite" >&2
env -u TEST_POSTGRES_URL cargo test --locked --test it "$@"
echo "== 3/4 S3 + PostgreSQL" >&2
cargo test --locked --test it "$@"
echo "== 4/4 PostgreSQL restart under a running node" >&2
cargo test --locked --test it "$@" -- --ignored postgres_restart_is_survived
