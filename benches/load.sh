#!/usr/bin/env bash
# Reproduces the load figures of BENCHMARKS.md: the forwarder pinned to core 1, the
# generator, receivers and emulators pinned to core 0, the syslog-ng peer measured in the
# same run. Needs syslog-ng (and syslog-ng-mod-rdkafka for the S2 peer) and, for
# s2-broker, the tansu broker that .ci/run installs.
#   bash benches/load.sh            # 600k events per scenario (200k against the broker)
#   EVENTS=50000 BROKER_EVENTS=20000 bash benches/load.sh
# 600k events: on this 2-core VM, runs of 200k events (4-7 s of our side) varied by up to
# 40 % within minutes; runs of 600k stayed within a few percent of each other.
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS=${EVENTS:-600000}
BROKER_EVENTS=${BROKER_EVENTS:-200000}
OUT=${OUT:-target/load/report.ndjson}
mkdir -p target/load
# The peer: syslog-ng with its Kafka module (Debian packages), installed when missing.
if ! dpkg -s syslog-ng-core syslog-ng-mod-rdkafka >/dev/null 2>&1 && command -v apt-get >/dev/null; then
  pkgs=(syslog-ng-core syslog-ng-mod-rdkafka)
  apt-get install -y -qq --no-install-recommends "${pkgs[@]}" ||
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${pkgs[@]}"; } ||
    echo "install ${pkgs[*]} for the syslog-ng peer" >&2
fi
cargo bench --bench load --no-run
run() { taskset -c 0 cargo bench --bench load -- --core 1 --events "$EVENTS" --out "$OUT" "$@"; }
echo "# $(date -u +%FT%TZ) $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p')"
run --mix 1.6k --latency-secs 10 --scenarios s1,s1-peer,s1-memory
run --mix 3.6k --latency-secs 10 --scenarios s1,s1-peer
run --mix 1.6k --latency-secs 0 --scenarios s2,s2-peer,s3,s4
run --latency-secs 10 --scenarios s5
if command -v tansu >/dev/null || [ -x "$HOME/.cargo/bin/tansu" ]; then
  taskset -c 0 cargo bench --bench load -- --core 1 --events "$BROKER_EVENTS" --out "$OUT" \
    --mix 1.6k --latency-secs 0 --scenarios s2-broker
fi
