#!/bin/bash
# The broker's own instructions per message as `ubroker bench` runs it: the unix board's
# native-code .mpy (build/run-x64, what `ubroker run` compiles), the durable store on
# (--data), driven over loopback by bench/bin/loadgen, the broker process alone under
# callgrind. tools/fanin_v5_inprocess.py counts bytecode (its source compiled on import) and
# its client too; here a change is seen as the bench's broker sees it.
#
#   tools/fanin_broker_callgrind.sh [loadgen fanin arguments]
#   tools/fanin_broker_callgrind.sh --qos 1 --pubs 8 --subs 1 --v5            # fanin1v5
#   tools/fanin_broker_callgrind.sh --qos 1 --pubs 8 --subs 1                 # fanin1
#
# Two runs, 250 and 1,250 messages per publisher (--count): the difference of the
# instructions over the difference of the messages delivered leaves start-up out. Run it
# alone on the machine: what the broker does per second rather than per message (ticks,
# polls while it waits) is counted too, and a slower run counts more of it (about 300
# instructions per message between two runs here).
set -e
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${VENV:-$ROOT/.venv}
FW=${UBROKER_FIRMWARE:-$ROOT/firmware}
LOADGEN=${LOADGEN:-$ROOT/bench/bin/loadgen}
PORT=${PORT:-23500}
ARGS=${*:---qos 1 --pubs 8 --subs 1 --v5}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

# `ubroker run` compiles what changed into build/run-x64 beside the firmware folder
UBROKER_FIRMWARE=$FW "$VENV/bin/ubroker" run --board unix --port "$PORT" --data "$OUT/build-data" >"$OUT/build.log" 2>&1 &
P=$!
for _ in $(seq 80); do sleep 0.25; grep -q "listening\\|broker at" "$OUT/build.log" && break; done
kill $P; wait $P 2>/dev/null || true
BUILD=$(dirname "$FW")/build/run-x64

run() {  # run COUNT -> "instructions messages"
    local n=$1 port=$((PORT + $1 % 1000))
    rm -rf "$OUT/data"
    (cd "$ROOT" && exec env MICROPYPATH="$BUILD:.frozen" valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        "$VENV/bin/python" "$VENV/bin/micropython" -X heapsize=8388608 -m unix_main \
        --board-file "$ROOT/boards/unix.conf" --port "$port" --data "$OUT/data" >"$OUT/b$n.log" 2>&1) &
    local v=$!
    for _ in $(seq 120); do sleep 0.5; grep -q "listening\\|broker at" "$OUT/b$n.log" && break; done
    # shellcheck disable=SC2086
    "$LOADGEN" fanin $ARGS --port "$port" --count "$n" --duration 600 --drain 60 --idle 20 >"$OUT/r$n.json"
    kill -INT $v
    wait $v || true
    python3 - "$OUT/b$n.log" "$OUT/r$n.json" <<'PY'
import json, re, sys
r = json.load(open(sys.argv[2]))
if r.get("lost_acked") or r.get("violations"):
    sys.exit("loadgen: %s" % r)
print(re.findall(r"Collected : (\d+)", open(sys.argv[1]).read())[-1], r["received"])
PY
}

read -r c1 m1 < <(run 250)
read -r c2 m2 < <(run 1250)
echo "$ARGS: $(( (c2 - c1) / (m2 - m1) )) instructions per message ($c1 for $m1, $c2 for $m2)"
