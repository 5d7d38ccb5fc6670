"""Markdown table of bench/results/*.jsonl files (the driver's output), one row per scenario.

    python bench/summarize.py bench/results/postgres-1p-*-matrix.jsonl
"""

from __future__ import annotations

import json
import sys


def lat(d: dict | None) -> str:
    if not d or not d.get("n"):
        return "-"
    return f"{d['p50']:g} / {d['p95']:g} / {d['p99']:g} / {d['max']:g}"


def throughput(r: dict) -> str:
    if "series" in r:  # soak: fan-out acked/s per step
        return "fan-out acked/s per step " + " ".join(f"{x['acked_per_s']:g}" for x in r["series"]) + f" (worst/first {r['worst_step_vs_first']})"
    if "creates_per_s" in r:
        return f"{r['creates_per_s']:g} creates/s, {r['member_joined_expected']} member.joined ({r['member_joined_missing']} missing)"
    if "acked_per_s" in r:
        return f"{r['acked_per_s']:g} acked/s, {r['deliveries_per_s']:g} deliv/s"
    if "chunks_per_s" in r:
        return f"{r['chunks_per_s']:g} chunks/s ({r['chunks_sent']} sent)"
    if "posts_per_s" in r:
        return f"{r['posts_per_s']:g} posts/s; history {r['history']['reads_per_s']:g} reads/s"
    if "kb_per_connection" in r:
        return f"{r['connections']} conns in {r['setup_s']:g} s; {r['kb_per_connection']:g} KB/conn"
    return "-"


def latency(r: dict) -> str:
    if "series" in r:
        return latency(r["fanout"])
    if "member_joined_after_201_ms" in r:
        return f"member.joined after the 201 {lat(r['member_joined_after_201_ms'])}"
    if "post_latency_ms" in r:
        return f"post {lat(r['post_latency_ms'])}; read {lat(r['history']['latency_ms'])}"
    if "connect_latency_ms" in r:
        return f"connect {lat(r['connect_latency_ms'])}; subscribe {lat(r['subscribe_latency_ms'])}"
    return f"ack {lat(r.get('ack_latency_ms'))}; delivery {lat(r.get('delivery_latency_ms'))}"


def correctness(r: dict) -> str:
    if "series" in r:
        return correctness(r["fanout"])
    if "member_joined_missing" in r:
        return f"{r['member_joined_missing']} member.joined missing after the drain"
    c = r.get("correctness")
    if c is None:
        return f"seq errors {r.get('seq_errors', '-')}"
    bad = {k: v for k, v in c.items() if v}
    errors = {**r.get("errors", {}), **{f"close {k}": v for k, v in r.get("closed", {}).items()}}
    return ("0 violations" if not bad else json.dumps(bad)) + (f"; errors {json.dumps(errors)}" if errors else "")


def server(r: dict) -> str:
    if "server" not in r:
        r = r["fanout"]
    return ", ".join(f"{s['cpu_pct']:g}% {s['rss_peak_mb']:g} MB" for s in r["server"]) + f" (loadgen {r['loadgen_cpu_pct']:g}%)"


def main() -> None:
    for path in sys.argv[1:]:
        lines = [json.loads(line) for line in open(path) if line.startswith("{")]
        head, rows = lines[0], [r for r in lines[1:] if "scenario" in r]
        print(f"`{head['command']}`: commit {head['commit']}, {head['date']}, load before {' '.join(head['loadavg_before'])}\n")
        print("| scenario | throughput | latency ms p50 / p95 / p99 / max | correctness | server CPU, peak RSS |")
        print("|---|---|---|---|---|")
        for r in rows:
            if "failed" in r:
                print(f"| {r['scenario']} | failed: {r['failed']} | | | |")
                continue
            print(f"| {r['scenario']} | {throughput(r)} | {latency(r)} | {correctness(r)} | {server(r)} |")
        print()


if __name__ == "__main__":
    main()
