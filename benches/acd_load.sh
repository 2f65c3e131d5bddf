#!/usr/bin/env bash
# The ACD under load, on loopback, bounded in count and time: AGENTS agents
# (SIPp answering at once from one port) serve queue `support`; CALLS callers
# arrive at RATE/s, are queued, offered, bridged and hang up after HOLD_MS.
#   benches/acd_load.sh [agents] [calls] [rate] [hold_ms]   default 50 1000 20 2000
# Prints SIPp's summary for callers and agents; the server is stopped by its PID.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
agents=${1:-50}
calls=${2:-1000}
rate=${3:-20}
hold=${4:-2000}

command -v sipp >/dev/null || { echo "sipp missing: apt-get install -y sip-tester" >&2; exit 1; }
cargo build --release --quiet
work=$(mktemp -d)
trap 'kill "${pid:-}" "${uas:-}" 2>/dev/null || true; wait "${pid:-}" "${uas:-}" 2>/dev/null || true; rm -rf "$work"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port)
agent_port=$(free_port)
{
  printf '[sip]\nudp = "127.0.0.1:%s"\ntcp = "127.0.0.1:%s"\n' "$port" "$port"
  printf '[http]\nlisten = ""\n[log]\nlevel = "warn"\n'
  printf '[auth]\nmax_failures = 1000000\n'
  # Recordings go with the run's other files, removed at the end.
  printf '[recording]\ndir = "%s/recordings"\n' "$work"
  printf '[limits]\nmax_calls = 0\ninvite_rate = 0\noverload_pacer_late_ticks = 0\n'
  printf '[media]\nrtp_port_min = 20000\nrtp_port_max = 40000\n'
  printf '[trunks.local]\nsources = ["127.0.0.0/8"]\n'
  printf '[numbers."402"]\nqueue = "support"\n'
  printf '[acd]\nwrap_up = "0s"\n'
  printf '[queues.support]\nannounce_agent = false\nannounce_position_every = "0s"\ncallback_after = "0s"\n'
  for i in $(seq "$agents"); do
    printf '[agents."%s"]\npassword = "load"\nqueues = ["support"]\n' $((3000 + i))
  done
} > "$work/hotline.toml"

./target/release/hotline serve --config "$work/hotline.toml" 2> "$work/hotline.log" &
pid=$!
for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done

summary() {
  python3 - "$1" "$2" <<'PY'
import csv, sys
rows = list(csv.reader(open(sys.argv[2]), delimiter=';'))
head, last = rows[0], rows[-1]
col = {n: i for i, n in enumerate(head)}
get = lambda n: last[col[n]]
print(f"   {sys.argv[1]}: successful {get('SuccessfulCall(C)')}  failed {get('FailedCall(C)')}  elapsed {get('ElapsedTime(C)')}")
PY
}

echo "== $agents agents log in from 127.0.0.1:$agent_port"
# One short SIPp run per agent, all from the port the answering SIPp listens on.
for i in $(seq "$agents"); do
  (cd "$work" && timeout 30 sipp 127.0.0.1:"$port" -i 127.0.0.1 -p "$agent_port" -m 1 \
      -sf "$root/benches/sipp/register_load.xml" -s $((3000 + i)) -au $((3000 + i)) -ap load \
      -nostdin -timeout 10s -timeout_error >/dev/null 2>&1) || echo "agent $((3000 + i)): sipp exit $?"
done

echo "== $calls callers at $rate/s, each on the line ${hold} ms"
mkdir -p "$work/uas" "$work/uac"
(cd "$work/uas" && exec timeout 600 sipp 127.0.0.1:"$port" -i 127.0.0.1 -p "$agent_port" -m "$calls" \
    -sf "$root/tests/sipp/agent_answer_race.xml" -key pt 0 -key codec PCMU \
    -mi 127.0.0.1 -mp "$(free_port)" -nostdin -timeout 500s -trace_stat -fd 1000 \
    >/dev/null 2>&1) &
uas=$!
(cd "$work/uac" && timeout 600 sipp 127.0.0.1:"$port" -i 127.0.0.1 -p 0 -m "$calls" -r "$rate" -l 2000 \
    -sf "$root/tests/sipp/caller_waits.xml" -s 402 -d "$hold" -key caller 5550000 \
    -mi 127.0.0.1 -mp "$(free_port)" -nostdin -timeout 500s -timeout_error -trace_stat -fd 1000 \
    >/dev/null 2>&1) || echo "caller sipp exit $?"
wait "$uas" || echo "agent sipp exit $?"
summary callers "$(ls -t "$work"/uac/*_.csv | head -1)"
summary agents "$(ls -t "$work"/uas/*_.csv | head -1)"
grep -c "ERROR\|panicked\|fell behind" "$work/hotline.log" | sed "s/^/   server errors or lags logged: /" || true
