#!/usr/bin/env bash
# CPU-time A/B of two forwarder builds (BENCHMARKS.md "CPU-time A/B"): the same 50,000
# records of the 1.6 KB mix converted by each build in turn, pinned to core 1, ROUNDS times,
# alternating so that a machine that speeds up or slows down affects both alike. Prints the
# CPU seconds (user + system) of every run and the mean of each build. With S1=N, also N
# alternating pairs of the load harness's S1 scenario (events/s and CPU s per million).
#   bash benches/ab.sh OLD_BINARY NEW_BINARY [ROUNDS]
#   TO=ocsf bash benches/ab.sh old new 8       # the OCSF path instead of CEF
#   S1=3 bash benches/ab.sh old new
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { sed -n '2,9p' "$0"; exit 2; }
A=$(realpath "$1"); B=$(realpath "$2"); ROUNDS=${3:-5}; TO=${TO:-cef}
MIX=target/load/mix50k.ndjson
mkdir -p target/load
if [ ! -s "$MIX" ]; then
  python3 - "$MIX" <<'PY'
import json, itertools, sys
files = ['managedidentity_signin', 'signin_interactive', 'auditlogs', 'user_risk_events',
         'risky_users', 'serviceprincipal_risk_events', 'defender_identity_logon_events',
         'defender_alert_info_evidence', 'graph_activity_logs']
recs = []
for f in files:
    r = json.load(open(f'tests/data/eventhub/{f}.json'))['records']
    if f == 'signin_interactive': r = r[:1]
    if f == 'defender_alert_info_evidence':
        r = [x for x in r if x['category'] == 'AdvancedHunting-AlertEvidence']
    recs += r
with open(sys.argv[1], 'w') as o:
    for x in itertools.islice(itertools.cycle(recs), 50000):
        o.write(json.dumps(x, separators=(',', ':')) + '\n')
PY
fi
TIMEFORMAT='%U %S'
for _ in $(seq "$ROUNDS"); do
  for bin in "$A" "$B"; do
    t=$( { time taskset -c 1 "$bin" convert --from eventhub --to "$TO" "$MIX" >/dev/null 2>/dev/null; } 2>&1 )
    echo "$bin $t"
  done
done | awk '{cpu = $2 + $3; printf "%s %.3f\n", $1, cpu; s[$1] += cpu; n[$1]++}
  END {for (k in s) printf "mean %s %.3f s (%d runs)\n", k, s[k] / n[k], n[k]}'
if [ "${S1:-0}" -gt 0 ]; then
  cargo bench --bench load --no-run 2>/dev/null
  out=target/load/ab-s1.ndjson
  for _ in $(seq "$S1"); do
    for bin in "$A" "$B"; do
      rm -f "$out"
      taskset -c 0 cargo bench --bench load -- --core 1 --events 300000 --scenarios s1 \
        --latency-secs 0 --out "$out" --forwarder "$bin" >/dev/null 2>&1
      python3 -c "import json,sys; d = json.loads(open('$out').readline()); \
print('S1', sys.argv[1], round(d['events_per_sec']), 'events/s', d['cpu_secs_per_million'], 'CPU s per M')" "$bin"
    done
  done
fi
