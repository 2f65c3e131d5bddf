#!/usr/bin/env python3
"""Measuring side of benches/media_load.sh: samples the server (CPU, RSS,
its UDP sockets' kernel drops, /metrics) and reads SIPp's statistics files.

  media_probe.py sample PID METRICS_URL          one sample as JSON
  media_probe.py delta BEFORE.json AFTER.json    CPU %, µs, RSS and counter deltas
  media_probe.py sipp STAT.csv [COUNTS.csv] [RTT.csv]
                                                 successful/failed calls, 503s,
                                                 INVITE->200 p50/p99 in ms
Every figure is printed as key=value on one line.
"""
import csv
import glob
import json
import os
import sys
import time
import urllib.request

TICKS = os.sysconf("SC_CLK_TCK")
METRICS = (
    "hotline_rtp_packets_received_total",
    "hotline_rtp_packets_sent_total",
    "hotline_rtp_packets_dropped_total",
    "hotline_media_late_ticks_total",
    "hotline_media_late_frames_total",
    "hotline_trunk_calls_active",
    "hotline_calls_total",
    "hotline_metrics_events_lost_total",
    "hotline_store_rows_dropped_total",
    "hotline_rtp_packets_rejected_total",
)


def metrics(url):
    values = {}
    body = None
    # A server at its limit may answer slowly: a few tries before giving up.
    for _ in range(3):
        try:
            body = urllib.request.urlopen(url, timeout=10).read().decode()
            break
        except OSError:
            time.sleep(1)
    if body is None:
        sys.exit(f"no answer from {url}")
    for line in body.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        name, _, value = line.rpartition(" ")
        base = name.split("{", 1)[0]
        if base in METRICS or base == "hotline_sip_refused_total":
            try:
                number = float(value)
            except ValueError:
                continue
            values[name] = number
            if name != base:
                values[base] = values.get(base, 0.0) + number
    return values


def socket_drops(pid):
    """Datagrams the kernel dropped on each of the server's UDP sockets (full
    buffers), by socket inode."""
    inodes = set()
    for fd in glob.glob(f"/proc/{pid}/fd/*"):
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    drops = {}
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if len(cols) >= 13 and cols[9] in inodes:
                drops[cols[9]] = int(cols[12])
    return drops


def sample(pid, url):
    stat = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    cpu = (int(stat[11]) + int(stat[12])) / TICKS
    rss = 0
    threads = 0
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
        elif line.startswith("Threads:"):
            threads = int(line.split()[1])
    return {
        "t": time.monotonic(),
        "cpu_s": cpu,
        "rss_kb": rss,
        "threads": threads,
        "socket_drops": socket_drops(pid),
        "metrics": metrics(url),
    }


def delta(before, after):
    b, a = json.load(open(before)), json.load(open(after))
    secs = a["t"] - b["t"]
    cpu = a["cpu_s"] - b["cpu_s"]
    m = lambda s, n: s["metrics"].get(n, 0.0)
    d = lambda n: int(m(a, n) - m(b, n))
    out = {
        "secs": round(secs, 1),
        "cpu_s": round(cpu, 2),
        "cpu_pct": round(100 * cpu / secs, 1) if secs > 0 else 0,
        "rss_start_kb": b["rss_kb"],
        "rss_kb": a["rss_kb"],
        "threads": a["threads"],
        "pkts_in": d("hotline_rtp_packets_received_total"),
        "pkts_out": d("hotline_rtp_packets_sent_total"),
        "rtp_rejected": d("hotline_rtp_packets_dropped_total"),
        "rejected_foreign": d('hotline_rtp_packets_rejected_total{reason="foreign_source"}'),
        "rejected_unconfirmed": d('hotline_rtp_packets_rejected_total{reason="unconfirmed_source"}'),
        # Over the sockets open at both samples: a call's sockets closed
        # meanwhile take their counts with them.
        "socket_drops": sum(
            n - b["socket_drops"][inode]
            for inode, n in a["socket_drops"].items()
            if inode in b["socket_drops"]
        ),
        "late_ticks": d("hotline_media_late_ticks_total"),
        "late_frames": d("hotline_media_late_frames_total"),
        "active": int(m(a, "hotline_trunk_calls_active")),
        "events_lost": int(m(a, "hotline_metrics_events_lost_total")),
        "refused_max_calls": int(m(a, 'hotline_sip_refused_total{reason="max_calls"}')),
    }
    print(" ".join(f"{k}={v}" for k, v in out.items()))


def percentile(values, fraction):
    if not values:
        return "-"
    values = sorted(values)
    return f"{values[min(len(values) - 1, int(fraction * len(values)))]:.2f}"


def sipp(stat, counts=None, rtt=None):
    rows = list(csv.reader(open(stat), delimiter=";"))
    col = {n: i for i, n in enumerate(rows[0])}
    get = lambda n: int(rows[-1][col[n]])
    out = {"successful": get("SuccessfulCall(C)"), "failed": get("FailedCall(C)")}
    refused = 0
    if counts and os.path.exists(counts):
        crow = list(csv.reader(open(counts), delimiter=";"))
        for name, value in zip(crow[0], crow[-1]):
            if name.endswith("_503_Recv") and value.strip().isdigit():
                refused += int(value)
    out["refused_503"] = refused
    samples = []
    if rtt and os.path.exists(rtt):
        for row in csv.reader(open(rtt), delimiter=";"):
            try:
                samples.append(float(row[1]))
            except (IndexError, ValueError):
                pass
    out["setup_p50_ms"] = percentile(samples, 0.5)
    out["setup_p99_ms"] = percentile(samples, 0.99)
    print(" ".join(f"{k}={v}" for k, v in out.items()))


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "sample":
        print(json.dumps(sample(int(args[0]), args[1])))
    elif cmd == "delta":
        delta(*args)
    elif cmd == "sipp":
        sipp(*args)
    else:
        sys.exit(f"unknown command {cmd}")
