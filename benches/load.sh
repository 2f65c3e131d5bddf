#!/usr/bin/env bash
# SIPp load against a hotline started here on loopback, bounded in count and time.
#   benches/load.sh [calls] [rate]        default: 2000 registrations and 2000 calls at 200/s
# Prints SIPp's summary for each phase; the server is stopped by its PID at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
calls=${1:-2000}
rate=${2:-200}

command -v sipp >/dev/null || { echo "sipp missing: apt-get install -y sip-tester" >&2; exit 1; }
cargo build --release --quiet
work=$(mktemp -d)
trap 'kill "${pid:-}" 2>/dev/null || true; wait "${pid:-}" 2>/dev/null || true; rm -rf "$work"' EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
{
  printf '[sip]\nudp = "127.0.0.1:%s"\ntcp = "127.0.0.1:%s"\n' "$port" "$port"
  printf '[http]\nlisten = ""\n[log]\nlevel = "warn"\n'
  printf '[auth]\nmax_failures = 1000000\n'
  # Recordings go with the run's other files, removed at the end.
  printf '[recording]\ndir = "%s/recordings"\n' "$work"
  printf '[limits]\nmax_calls = 0\ninvite_rate = 0\noverload_pacer_late_ticks = 0\n'
  printf '[trunks.local]\nsources = ["127.0.0.0/8"]\n'
  printf '[numbers."401"]\nqueue = "support"\n'
  printf '[queues.support]\n'
  printf '[registrar]\nmax_contacts = 20\n'
  printf '[agents."2001"]\npassword = "load-test"\n'
} > "$work/hotline.toml"

./target/release/hotline serve --config "$work/hotline.toml" 2> "$work/hotline.log" &
pid=$!
for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done

run() {
  local name=$1; shift
  echo "== $name: $calls at $rate/s"
  (cd "$work" && timeout 300 sipp 127.0.0.1:"$port" -i 127.0.0.1 -p 0 -m "$calls" -r "$rate" \
      -l 1000 -nostdin -timeout 120s -timeout_error -trace_stat -fd 1000 "$@" >/dev/null 2>&1) || echo "sipp exit $?"
  local stat
  stat=$(ls -t "$work"/*_.csv | head -1)
  python3 - "$stat" <<'PY'
import csv, sys
rows = list(csv.reader(open(sys.argv[1]), delimiter=';'))
head, last = rows[0], rows[-1]
col = {n: i for i, n in enumerate(head)}
get = lambda n: last[col[n]]
rt = [n for n in head if n.startswith("ResponseTime1") and n.endswith("(C)")]
print(f"   successful {get('SuccessfulCall(C)')}  failed {get('FailedCall(C)')}  "
      f"elapsed {get('ElapsedTime(C)')}" + (f"  response time {get(rt[0])}" if rt else ""))
PY
  rm -f "$work"/*_.csv
}
run "REGISTER with digest" -sf "$PWD/benches/sipp/register_load.xml" -s 2001 -au 2001 -ap load-test
run "INVITE/BYE to 401" -sn uac -s 401 -d 100
