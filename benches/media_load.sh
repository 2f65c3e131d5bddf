#!/usr/bin/env bash
# The media path under load, on loopback, bounded in count and time. Each case
# starts its own hotline (release build, or $HOTLINE_BIN), drives it with SIPp
# and prints one line of figures. Callers stream µ-law RTP at 50 packets/s
# (SIPp rtp_stream, all from one media port); agents answer at once
# and echo what they get (SIPp -rtp_echo), so a bridged call carries 50 pps
# each way on both legs.
#   benches/media_load.sh bridged   [calls] [plateau_s] [rate]  default 500 20 200
#   benches/media_load.sh playback  [streams] [plateau_s] [rate] default 1000 20 200
#   benches/media_load.sh setup     [rate] [seconds]             default 500 8
#       (1 s calls into an IVR that plays a prompt, then the same rate through
#        the queue to agents; two lines, case=setup_ivr and case=setup_queue;
#        these callers send no RTP, so that SIPp is not the limit)
#   benches/media_load.sh recording [calls] [plateau_s] [rate]  default 500 15 200
#       (the bridged case with recording off, then on; the CPU delta)
#   benches/media_load.sh overload  [capacity] [plateau_s] [rate] default 500 15 200
#       (limits.max_calls = capacity, 1.5 x capacity callers; 503s counted and
#        every accepted call looked up in the CDR store)
#   benches/media_load.sh all       every case at its defaults
# Figures: cpu% is the server's CPU over the plateau (100 = one core);
# on_time_frames is the share of prompt/music frames sent within 2 ms of
# their tick;
# rss_kb_per_call is (RSS at plateau - RSS before the calls) / calls;
# pkts_expected counts 50 pps per leg and direction over the plateau;
# pkts_in/pkts_out are the server's RTP counters over the plateau;
# sock_drops are datagrams the kernel dropped on the server's sockets;
# us_per_pkt is server CPU / (packets in + out), us_per_relayed server CPU /
# packets out; setup latency is SIPp's
# INVITE -> 200 response time. Every server is stopped by its PID, every
# SIPp is bounded by `timeout`, the run's files are removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
probe="$root/benches/media_probe.py"
case_name=${1:-all}
shift || true

case "$case_name" in
  bridged | playback | setup | recording | overload | all) ;;
  *) sed -n '2,28p' "$0" >&2; exit 2 ;;
esac
command -v sipp >/dev/null || { echo "sipp missing: apt-get install -y sip-tester" >&2; exit 1; }
if [ -z "${HOTLINE_BIN:-}" ]; then
  cargo build --release --quiet
  HOTLINE_BIN=$root/target/release/hotline
fi
work=$(mktemp -d)
pids=()
stop_all() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
}
# MEDIA_LOAD_KEEP=1 keeps the run's files (configs, logs, SIPp traces) to look into.
trap 'stop_all; [ -n "${MEDIA_LOAD_KEEP:-}" ] && echo "files kept in $work" >&2 || rm -rf "$work"' EXIT
# More sockets than the default 1024: four per bridged call on the server,
# one per call in SIPp.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# A port free for both TCP and UDP (hotline's SIP listens on both).
free_port() {
  python3 - <<'PY'
import socket
while True:
    t = socket.socket()
    t.bind(("127.0.0.1", 0))
    port = t.getsockname()[1]
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.bind(("127.0.0.1", port))
    except OSError:
        continue
    print(port)
    break
PY
}
# SIPp binds its media port and the port two above (RTCP): both must be free.
free_media_port() {
  python3 - <<'PY'
import socket
while True:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    try:
        for p in (port + 2, port + 3, port + 1):
            t = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            t.bind(("127.0.0.1", p))
            t.close()
    except OSError:
        continue
    print(port)
    break
PY
}
# One second of quiet µ-law noise: what a caller says, looped.
python3 -c 'import random,sys; r=random.Random(7); sys.stdout.buffer.write(bytes(0xf0 + r.randrange(15) for _ in range(8000)))' > "$work/speech.ulaw"

# Writes the case's configuration: $1 agents, $2 recording (true/false), $3 max_calls.
write_config() {
  local agents=$1 recording=$2 max_calls=$3
  sip_port=$(free_port)
  http_port=$(free_port)
  agent_port=$(free_port)
  {
    printf '[sip]\nudp = "127.0.0.1:%s"\ntcp = "127.0.0.1:%s"\n' "$sip_port" "$sip_port"
    printf '[http]\nlisten = "127.0.0.1:%s"\n[log]\nlevel = "warn"\n' "$http_port"
    printf '[auth]\nmax_failures = 1000000\n'
    printf '[store]\npath = "%s/hotline.db"\n' "$run"
    printf '[recording]\nenabled = %s\ndir = "%s/recordings"\n' "$recording" "$run"
    # The pacer's lateness is measured here, not obeyed: on a shared machine
    # it also answers to the neighbours' load.
    printf '[limits]\nmax_calls = %s\ninvite_rate = 0\noverload_pacer_late_ticks = 0\n' "$max_calls"
    printf '[media]\nprompts = "%s/prompts"\nrtp_port_min = 10000\nrtp_port_max = 30000\n' "$root"
    printf '[trunks.local]\nsources = ["127.0.0.0/8"]\n'
    printf '[numbers."402"]\nqueue = "support"\n'
    printf '[numbers."403"]\nqueue = "hold"\n'
    printf '[numbers."404"]\nivr = "prompt"\n'
    printf '[acd]\nwrap_up = "0s"\n'
    printf '[queues.support]\nannounce_agent = false\nannounce_position_every = "0s"\ncallback_after = "0s"\n'
    printf '[queues.hold]\nannounce_position_every = "0s"\ncallback_after = "0s"\n'
    printf '[ivr.prompt]\nstart = "greeting"\n'
    printf '[ivr.prompt.nodes.greeting]\ntype = "play"\nprompts = ["greeting"]\nnext = "menu"\n'
    printf '[ivr.prompt.nodes.menu]\ntype = "menu"\nprompts = ["menu"]\nchoices = { "1" = "hold" }\ndefault = "hold"\ntimeout = "30s"\n'
    printf '[ivr.prompt.nodes.hold]\ntype = "queue"\nqueue = "hold"\n'
    for i in $(seq "$agents"); do
      printf '[agents."%s"]\npassword = "load"\nqueues = ["support"]\n' $((100000 + i))
    done
    # The hold queue needs an agent that serves it; it never logs in.
    printf '[agents."99999"]\npassword = "load"\nqueues = ["hold"]\n'
  } > "$run/hotline.toml"
}

start_server() {
  "$HOTLINE_BIN" serve --config "$run/hotline.toml" 2> "$run/hotline.log" &
  server=$!
  pids+=("$server")
  metrics_url="http://127.0.0.1:$http_port/metrics"
  for _ in $(seq 100); do curl -sf -o /dev/null "$metrics_url" && return 0; sleep 0.1; done
  echo "hotline did not start:" >&2; tail -5 "$run/hotline.log" >&2; return 1
}

stop_server() {
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
}

# Logs $1 agents in from $agent_port, $2 a second.
register_agents() {
  local agents=$1
  [ "$agents" -gt 0 ] || return 0
  { echo SEQUENTIAL
    for i in $(seq 100001 $((100000 + agents))); do
      echo "$i;[authentication username=$i password=load]"
    done; } > "$run/agents.csv"
  mkdir -p "$run/reg"
  (cd "$run/reg" && timeout 120 sipp 127.0.0.1:"$sip_port" -i 127.0.0.1 -p "$agent_port" -m "$agents" -r 500 \
      -sf "$root/benches/sipp/agent_register.xml" -inf "$run/agents.csv" \
      -nostdin -timeout 100s -timeout_error -trace_stat -fd 1 >/dev/null 2>&1) || true
  local ok
  ok=$(python3 "$probe" sipp "$(ls -t "$run"/reg/*_.csv | head -1)" | sed 's/ .*//; s/successful=//')
  [ "$ok" = "$agents" ] || echo "   warning: $ok of $agents agents logged in" >&2
}

# Agents answer every offer at once and echo the RTP they get.
start_agents() {
  local calls=$1
  mkdir -p "$run/uas"
  # -l: SIPp's default ceiling on calls at once is below a large plateau's.
  (cd "$run/uas" && exec timeout 170 sipp 127.0.0.1:"$sip_port" -i 127.0.0.1 -p "$agent_port" -m "$calls" -l "$calls" \
      -sf "$root/benches/sipp/agent_echo.xml" -key pt 0 -key codec PCMU \
      -mi 127.0.0.1 -mp "$(free_media_port)" -rtp_echo -nostdin -timeout 160s -trace_stat -trace_err -fd 1 \
      >/dev/null 2>&1) &
  uas=$!
  pids+=("$uas")
}

# Callers: $1 calls at $2/s to number $3, each on the line $4 ms, talking
# (scenario caller_rtp) or not ($5 = caller_quiet).
start_callers() {
  local calls=$1 rate=$2 number=$3 hold_ms=$4 scenario=${5:-caller_rtp}
  mkdir -p "$run/uac"
  cp "$work/speech.ulaw" "$run/uac/"
  (cd "$run/uac" && exec timeout 170 sipp 127.0.0.1:"$sip_port" -i 127.0.0.1 -p 0 -m "$calls" -r "$rate" \
      -l "$calls" -sf "$root/benches/sipp/$scenario.xml" -s "$number" -d "$hold_ms" \
      -key caller 5550000 -mi 127.0.0.1 -mp "$(free_media_port)" \
      -nostdin -timeout 160s -timeout_error -trace_stat -trace_err -fd 1 -trace_counts -trace_rtt -rtt_freq 1 \
      >/dev/null 2>&1) &
  uac=$!
  pids+=("$uac")
}

# Figures of the callers' SIPp, once it has ended (waited for here: a
# command substitution could not wait for it).
callers_summary() {
  python3 "$probe" sipp "$(ls -t "$run"/uac/*_.csv | head -1)" \
    "$(ls -t "$run"/uac/*_counts.csv 2>/dev/null | head -1)" \
    "$(ls -t "$run"/uac/*_rtt.csv 2>/dev/null | head -1)"
}

# Once the callers are done, the agents' SIPp gets a few seconds to end its
# last calls, then is stopped (offers that never came would keep it waiting).
finish_agents() {
  for _ in $(seq 10); do kill -0 "$uas" 2>/dev/null || break; sleep 0.5; done
  kill "$uas" 2>/dev/null || true
  wait "$uas" 2>/dev/null || true
}

sample() { python3 "$probe" sample "$server" "$metrics_url" > "$1"; }

# Waits up to $2 s until $1 trunk calls are up.
await_calls() {
  local want=$1 limit=$2 active=0
  for _ in $(seq $((limit * 2))); do
    active=$(curl -sf "$metrics_url" | awk '$1 ~ /^hotline_trunk_calls_active/ {n += $2} END {print n + 0}')
    [ "${active:-0}" -ge "$want" ] && return 0
    sleep 0.5
  done
  echo "   warning: $active of $want calls up before the plateau; SIPp's first errors:" >&2
  cat "$run"/uac/*_errors.log "$run"/uas/*_errors.log 2>/dev/null | grep -v '^$' | head -4 | cut -c1-200 >&2 || true
}

new_run() { run=$(mktemp -d -p "$work"); }

kv() { sed -n "s/.* $1=\([^ ]*\).*/\1/p; s/^$1=\([^ ]*\).*/\1/p" <<<" $2" | head -1; }

# Starts $2 callers at $3/s to number $4, waits until $1 calls are up, and
# samples $5 s of plateau; sets d (the probe's delta over the plateau) and s
# (the callers' summary, once they ended).
plateau_run() {
  local up=$1 callers=$2 rate=$3 number=$4 plateau=$5
  local ramp=$(( (callers + rate - 1) / rate ))
  start_callers "$callers" "$rate" "$number" $(( (ramp + 5 + plateau + 3) * 1000 ))
  await_calls "$up" $((ramp + 10))
  sleep 3
  sample "$run/p0.json"
  sleep "$plateau"
  sample "$run/p1.json"
  d=$(python3 "$probe" delta "$run/p0.json" "$run/p1.json")
  wait "$uac" 2>/dev/null || true
  s=$(callers_summary)
}

# The server's RSS (KB) in a sample file.
rss_of() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["rss_kb"])' "$1"; }

# Bridged calls: $1 calls, $2 s of plateau, $3 calls/s, $4 recording, $5 label.
bridged() {
  local calls=${1:-500} plateau=${2:-20} rate=${3:-200} recording=${4:-false} label=${5:-bridged}
  new_run
  write_config "$calls" "$recording" 0
  start_server
  register_agents "$calls"
  sample "$run/start.json"
  start_agents "$calls"
  local d s rss_start
  plateau_run "$calls" "$calls" "$rate" 402 "$plateau"
  rss_start=$(rss_of "$run/start.json")
  finish_agents
  stop_server
  python3 - "$label" "$calls" "$plateau" "$rss_start" "$d" "$s" <<'PY'
import sys
label, calls, plateau, rss_start, d, s = sys.argv[1:]
calls, plateau, rss_start = int(calls), float(plateau), int(rss_start)
kv = dict(x.split("=", 1) for x in (d + " " + s).split())
secs = float(kv["secs"])
pkts = int(kv["pkts_in"]) + int(kv["pkts_out"])
expected = int(calls * 2 * 50 * secs)
us = 1e6 * float(kv["cpu_s"]) / pkts if pkts else 0
relayed = int(kv["pkts_out"])
us_relayed = 1e6 * float(kv["cpu_s"]) / relayed if relayed else 0
print(f"case={label} calls={calls} failed={int(kv['failed']) + int(kv['refused_503'])} "
      f"cpu%={kv['cpu_pct']} rss_kb_per_call={(int(kv['rss_kb']) - rss_start) / calls:.1f} "
      f"pkts_expected={expected} pkts_in={kv['pkts_in']} pkts_out={kv['pkts_out']} "
      f"dropped={int(kv['rtp_rejected']) + int(kv['socket_drops'])} sock_drops={kv['socket_drops']} "
      f"rejected_foreign={kv['rejected_foreign']} rejected_unconfirmed={kv['rejected_unconfirmed']} "
      f"us_per_pkt={us:.2f} us_per_relayed={us_relayed:.2f} setup_p50_ms={kv['setup_p50_ms']} p99_ms={kv['setup_p99_ms']}")
PY
  grep -c "ERROR\|panicked\|fell behind" "$run/hotline.log" | sed "s/^/   server errors or lags logged: /" || true
}

# Music on hold: $1 callers wait in a queue nobody serves, $2 s plateau, $3 calls/s.
playback() {
  local calls=${1:-1000} plateau=${2:-20} rate=${3:-200}
  new_run
  write_config 0 false 0
  start_server
  sample "$run/start.json"
  local d s rss_start
  plateau_run "$calls" "$calls" "$rate" 403 "$plateau"
  rss_start=$(rss_of "$run/start.json")
  stop_server
  python3 - "$calls" "$rss_start" "$d" "$s" <<'PY'
import sys
calls, rss_start, d, s = sys.argv[1:]
calls, rss_start = int(calls), int(rss_start)
kv = dict(x.split("=", 1) for x in (d + " " + s).split())
secs = float(kv["secs"])
expected = int(calls * 50 * secs)
ticks = int(50 * secs)
sent = int(kv["pkts_out"])
us = 1e6 * float(kv["cpu_s"]) / sent if sent else 0
print(f"case=playback streams={calls} failed={int(kv['failed']) + int(kv['refused_503'])} "
      f"cpu%={kv['cpu_pct']} rss_kb_per_stream={(int(kv['rss_kb']) - rss_start) / calls:.1f} "
      f"frames_expected={expected} frames_sent={sent} sent_share={100 * sent / expected:.2f}% "
      f"late_ticks={kv['late_ticks']}/{ticks} "
      f"on_time_frames={100 - 100 * int(kv['late_frames']) / sent if sent else 0:.2f}% "
      f"pkts_in={kv['pkts_in']} "
      f"dropped={int(kv['rtp_rejected']) + int(kv['socket_drops'])} us_per_frame={us:.2f}")
PY
}

# Call setup: $1 calls/s for $2 s of 1 s calls, into the IVR, then through the queue.
setup() {
  local rate=${1:-500} secs=${2:-8}
  local calls=$((rate * secs))
  local label number agents
  for label in setup_ivr setup_queue; do
    new_run
    if [ "$label" = setup_ivr ]; then number=404; agents=0; else number=402; agents=$((rate * 2 + 50)); fi
    write_config "$agents" false 0
    start_server
    register_agents "$agents"
    sample "$run/p0.json"
    [ "$agents" -gt 0 ] && start_agents "$calls"
    start_callers "$calls" "$rate" "$number" 1000 caller_quiet
    local s d
    wait "$uac" 2>/dev/null || true
    s=$(callers_summary)
    sample "$run/p1.json"
    d=$(python3 "$probe" delta "$run/p0.json" "$run/p1.json")
    [ "$agents" -gt 0 ] && finish_agents
    stop_server
    python3 - "$label" "$rate" "$calls" "$d" "$s" <<'PY'
import sys
label, rate, calls, d, s = sys.argv[1:]
kv = dict(x.split("=", 1) for x in (d + " " + s).split())
print(f"case={label} rate={rate} calls={calls} failed={int(kv['failed']) + int(kv['refused_503'])} "
      f"cpu%={kv['cpu_pct']} us_per_call={1e6 * float(kv['cpu_s']) / int(calls):.0f} "
      f"setup_p50_ms={kv['setup_p50_ms']} p99_ms={kv['setup_p99_ms']}")
PY
  done
}

# Recording off, then on, at the same load.
recording() {
  local calls=${1:-500} plateau=${2:-15} rate=${3:-200} off on
  off=$(bridged "$calls" "$plateau" "$rate" false recording_off)
  echo "$off"
  on=$(bridged "$calls" "$plateau" "$rate" true recording_on)
  echo "$on"
  off=$(grep '^case=' <<<"$off")
  on=$(grep '^case=' <<<"$on")
  python3 - "$calls" "$off" "$on" <<'PY'
import sys
calls, off, on = sys.argv[1:]
val = lambda line, k: float(dict(x.split("=", 1) for x in line.split() if "=" in x)[k])
print(f"case=recording calls={calls} cpu%_off={val(off, 'cpu%')} cpu%_on={val(on, 'cpu%')} "
      f"cpu_points_added={val(on, 'cpu%') - val(off, 'cpu%'):.1f} "
      f"rss_kb_per_call_off={val(off, 'rss_kb_per_call')} rss_kb_per_call_on={val(on, 'rss_kb_per_call')}")
PY
}

# 1.5 x capacity callers against limits.max_calls = capacity.
overload() {
  local capacity=${1:-500} plateau=${2:-15} rate=${3:-200}
  local calls=$((capacity * 3 / 2))
  new_run
  write_config "$capacity" false "$capacity"
  start_server
  register_agents "$capacity"
  start_agents "$capacity"
  local d s
  plateau_run "$capacity" "$calls" "$rate" 402 "$plateau"
  finish_agents
  # Records are flushed at the latest one batch interval after the calls end.
  sleep 2
  stop_server
  "$HOTLINE_BIN" cdr export --config "$run/hotline.toml" --format json > "$run/records.json" 2>/dev/null || true
  python3 - "$capacity" "$calls" "$d" "$s" "$run/records.json" <<'PY'
import json, sys
capacity, calls, d, s, records = sys.argv[1:]
kv = dict(x.split("=", 1) for x in (d + " " + s).split())
rows = [json.loads(line) for line in open(records) if line.strip()]
refused = int(kv["refused_503"])
accepted = int(calls) - refused
# A complete record of an accepted call: answered by an agent, talked, ended.
complete = sum(1 for r in rows if r.get("disposition") == "answered"
               and r.get("answered_at") and r.get("talk_ms", 0) > 0 and r.get("ended_at"))
rejected = sum(1 for r in rows if r.get("disposition") == "rejected")
active = int(kv["active"])
expected = int(active * 2 * 50 * float(kv["secs"]))
print(f"case=overload capacity={capacity} offered={calls} refused_503={refused} accepted={accepted} "
      f"failed_accepted={kv['failed']} complete_records={complete} missing_records={accepted - complete} "
      f"rejected_records={rejected} "
      f"events_lost={kv['events_lost']} pkts_expected={expected} pkts_out={kv['pkts_out']} "
      f"dropped={int(kv['rtp_rejected']) + int(kv['socket_drops'])} cpu%={kv['cpu_pct']}")
PY
  grep -c "fell behind" "$run/hotline.log" | sed "s/^/   store or bus lags logged: /" || true
}

case "$case_name" in
  bridged) bridged "${1:-500}" "${2:-20}" "${3:-200}" false bridged ;;
  playback) playback "$@" ;;
  setup) setup "$@" ;;
  recording) recording "$@" ;;
  overload) overload "$@" ;;
  all) bridged; playback; setup; recording; overload ;;
  *) sed -n '2,28p' "$0" >&2; exit 2 ;;
esac
