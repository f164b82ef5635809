"""The bench results as markdown: setup, tables, slow-request checks, memory, goal lines
(the format of bench/results.md, which docs/performance.md quotes)."""

from __future__ import annotations

import argparse
import json
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from bench import apps, frameworks, quality, sampler_cost
from bench.common import BASELINE, Goal, goal_line, md_table
from bench.inprocess import LOAD_ROUTES
from bench.inprocess import PHASES as IN_PROCESS_PHASES
from bench.load import INTERLEAVED_PHASES, WINDOW_PHASES

GOAL_DEFAULT_RATIO = 1.03
GOAL_ALWAYS_VS_RAW = 1.05
GOAL_RSS_GROWTH_MB = 10.0

Summary = Dict[Tuple[str, str], Dict[str, Any]]


def in_process_table(summary: Summary) -> str:
    header = ["route"] + list(apps.VARIANTS) + ["always / raw"]
    rows = []
    for route in apps.ROUTES:
        if not any((variant, route) in summary for variant in apps.VARIANTS):
            continue
        row = [route]
        for variant in apps.VARIANTS:
            entry = summary.get((variant, route))
            if entry is None:
                row.append("-")
            elif entry.get("ratio") is None or variant == BASELINE:
                row.append(f"{entry['median_us']:.0f} µs")
            else:
                row.append(f"{entry['median_us']:.0f} µs · {entry['ratio']:.3f} "
                           f"({entry['ratio_q1']:.2f}–{entry['ratio_q3']:.2f})")
        always = summary.get(("perfmon_always", route), {})
        row.append(f"{always['vs_raw']:.3f} ({always['vs_raw_q1']:.2f}–{always['vs_raw_q3']:.2f})"
                   if "vs_raw" in always else "-")
        rows.append(row)
    return md_table(header, rows)


def server_table(summary: Summary) -> str:
    header = ["route", "variant", "req/s", "cost × otel (range)", "p50 ms", "p50 × otel", "p99 ms", "p99 × otel",
              "errors"]
    rows = []
    for route in LOAD_ROUTES:
        for variant in apps.VARIANTS:
            e = summary[(variant, route)]
            cost = f"{e['cost']:.3f} ({e['cost_min']:.2f}–{e['cost_max']:.2f})"
            rows.append([route, variant, f"{e['rps']:.0f}", cost,
                         f"{e['p50_ms']:.2f}", f"{e['p50_ratio']:.3f}", f"{e['p99_ms']:.2f}", f"{e['p99_ratio']:.3f}",
                         f"{e['errors']:.0f}"])
    return md_table(header, rows)


def goal_lines(results: Dict[str, Any]) -> List[Goal]:
    """(goal, measured value, met) for each goal figure this run measured; ``met`` is None for
    the lines shown for information (the A/A control, throughput windows)."""
    goals: List[Goal] = []

    def per_route(phases: Sequence[str], variant: str, limit: Optional[float], label: str,
                  measured: Callable[[Dict[str, Any]], Tuple[float, str]]) -> None:
        for phase in phases:
            summary = results.get(phase)
            for route in (LOAD_ROUTES if summary else ()):
                value, text = measured(summary[(variant, route)])
                goals.append((f"{label}, {phase}, {route}", text, None if limit is None else value <= limit))

    def ratio(key: str) -> Callable[[Dict[str, Any]], Tuple[float, str]]:
        return lambda e: (e[key], f"{e[key]:.3f} (quartiles over rounds {e[key + '_q1']:.3f}–{e[key + '_q3']:.3f})")

    both = IN_PROCESS_PHASES + tuple(INTERLEAVED_PHASES.values())
    per_route(both, "perfmon_default", GOAL_DEFAULT_RATIO, f"default ≤ {GOAL_DEFAULT_RATIO} × otel", ratio("ratio"))
    per_route(both, "perfmon_always", GOAL_ALWAYS_VS_RAW, f"always ≤ {GOAL_ALWAYS_VS_RAW} × raw pyinstrument",
              ratio("vs_raw"))
    per_route(both, "otel_b", None, "A/A control: otel_b ÷ otel (identical apps; shows the run's precision)",
              ratio("ratio"))
    per_route(tuple(WINDOW_PHASES.values()), "perfmon_default", None, "throughput windows: otel req/s ÷ default req/s",
              lambda e: (e["cost"], f"{e['cost']:.3f} (range {e['cost_min']:.3f}–{e['cost_max']:.3f}; "
                                    f"A/A otel_b {results[e['phase']][('otel_b', e['route'])]['cost']:.3f})"))
    slow = results.get("slow checks") or []
    if slow:
        total = sum(c["spans"] for c in slow)
        ok = sum(c["with_call_tree"] for c in slow)
        goals.append(("every slow request has a report with a call tree", f"{ok}/{total}", total > 0 and ok == total))
    rss = results.get("memory")
    if rss:
        goals.append((f"RSS growth over {rss['requests']:,} requests ≤ {GOAL_RSS_GROWTH_MB:.0f} MB",
                      f"{rss['growth_mb']:.1f} MB (peak {rss['peak_mb']:.1f} MB)",
                      rss["growth_mb"] <= GOAL_RSS_GROWTH_MB))
    if results.get("quality"):
        goals += quality.goals(results["quality"])
    if results.get("sampler"):
        goals += sampler_cost.goals(results["sampler"])
    if results.get("frameworks"):
        goals += frameworks.goals(results["frameworks"])
    return goals


def setup_lines(results: Dict[str, Any], args: argparse.Namespace) -> List[str]:
    """The "Setup" section: what was run, how, and how to read the cells."""
    lines = []
    overhead = any(results.get(p) for p in IN_PROCESS_PHASES + tuple(INTERLEAVED_PHASES.values()))
    if overhead:
        lines += [
            f"- otel-perfmon default profile_policy at run time: **{results['default_policy']}**.",
            f"- Variants: {', '.join(apps.VARIANTS)}. `otel` = SDK TracerProvider + BatchSpanProcessor + a null "
            "exporter + OTel's Flask/FastAPI instrumentor; every ratio is against it, measured in the same run. "
            "`otel_b` is an identical second `otel` app: the A/A control, whose ratio shows the run's precision.",
            "- perfmon variants: the package defaults (threshold 1 s included) in every timed cell, in-process "
            "and on the servers (report_dir in a temp dir); the slow route "
            f"(~{(apps.SLOW_CPU_SECONDS + apps.SLOW_SLEEP_SECONDS) * 1000:.0f} ms) is then not slow. The slow-request "
            f"checks run on fresh apps with threshold_seconds={apps.DEFAULT_THRESHOLD_SECONDS}, so that it is.",
            "- Routes: fast ≈ 0.3 ms of bytecode, calls = 20,000 small Python calls, io = 2 ms sleep, "
            "slow ≈ 40 ms of calls + 40 ms sleep.",
        ]
    if any(results.get(p) for p in IN_PROCESS_PHASES):
        lines.append(
            f"- In-process: {args.rounds} rounds; in each, {args.requests} turns per route in which every variant "
            f"serves one request, in a fresh random order per turn ({args.slow_requests} request of the slow route "
            f"per variant and round), after {args.warmup} warm-up requests. Cells: median latency · its ratio to "
            "otel's median (all rounds pooled) with, in parentheses, the quartiles of the per-round ratios. "
            "`always / raw` is perfmon_always against raw_pyinstrument the same way. The slow-request checks' span "
            "exporters keep the slow route's spans (on the BatchSpanProcessor's thread) for the call-tree check.")
    if any(results.get(p) for p in INTERLEAVED_PHASES.values()):
        lines += [
            f"- Under load, interleaved (the goal figures): one server process (gunicorn -w 1 sync / uvicorn) hosts "
            f"every variant under /<variant>/; `wrk -t1 -c1` with a Lua script requests them in shuffled turns, "
            f"{args.mixed_rounds} rounds of {args.mixed_seconds:g} s per route; each request is timed inside the "
            "server. Cells as in-process.",
            f"- Under load, throughput windows (information): one server per variant, {args.load_rounds} interleaved "
            f"rounds of {args.load_seconds:g} s per variant and route, `wrk -t1 -c4 --latency` (or the Python "
            f"client), after a {args.load_warmup_seconds:g} s warm-up burst; medians over rounds. `cost × otel` = "
            "otel req/s ÷ variant req/s (> 1 is slower), with its range over rounds; p50/p99 ratios are variant ÷ "
            "otel. Separate processes and seconds-long windows make these swing by ±10–20 % on a shared VM (see "
            "otel_b). The slow route is not loaded; its reports are checked in-process.",
        ]
    if results.get("quality"):
        lines.append(quality.SETUP)
    if results.get("sampler"):
        lines.append(sampler_cost.setup_line(args))
    if results.get("frameworks"):
        lines.append(frameworks.setup_line(results["frameworks"]))
    return lines


def render(results: Dict[str, Any], machine: Dict[str, str], args: argparse.Namespace, elapsed: float) -> str:
    """The whole result as markdown (printed and written to ``--output``)."""
    out: List[str] = []
    title = "otel-perfmon overhead benchmark" + (" (quick smoke run: too short to judge)" if args.quick else "")
    out += [f"# {title}", "",
            f"Run `{' '.join(results['command'])}` at {results['date']} in {elapsed:.0f} s.", ""]
    out += ["## Machine", ""] + [f"- {k}: {v}" for k, v in machine.items()] + [""]
    out += ["## Setup", ""] + setup_lines(results, args) + [""]
    for phase in IN_PROCESS_PHASES:
        if results.get(phase):
            out += [f"## {phase.capitalize()} (median latency, ratio against otel)", "",
                    in_process_table(results[phase]), ""]
    for phase in INTERLEAVED_PHASES.values():
        if results.get(phase):
            out += [f"## Under load, {phase} (server-side median latency, ratio against otel)", "",
                    in_process_table(results[phase]), ""]
    for phase in WINDOW_PHASES.values():
        if results.get(phase):
            out += [f"## Under load, throughput windows: {phase}", "", server_table(results[phase]), ""]
    if "inprocess" in args.sections:
        out += ["## Slow requests", ""]
        for check in results.get("slow checks") or []:
            modes = ", ".join(f"{k}: {v}" for k, v in sorted(check["modes"].items())) or "-"
            out.append(f"- {check['label']}: {check['with_call_tree']}/{check['spans']} slow spans link to a report "
                       f"with a call tree ({len(check['report_ids'])} distinct reports; profile.mode {modes})")
            out += [f"  - MISS: {failure}" for failure in check["failures"][:10]]
        out.append("")
    if results.get("perfmon stats"):
        out += ["## perfmon stats() after the in-process runs (warm-up included)", ""]
        for label, policy, stats in results["perfmon stats"]:
            shown = ", ".join(f"{k}={v}" for k, v in stats.items())
            out.append(f"- {label} (profile_policy {policy}): {shown}")
        out.append("")
    rss = results.get("memory")
    if rss:
        out += ["## Memory (perfmon_default, Flask in-process, fast route, fresh process)", "",
                f"- VmRSS after {rss['warmup']:,} warm-up requests: {rss['rss_before_mb']:.1f} MB; after "
                f"{rss['requests']:,} more: {rss['rss_after_mb']:.1f} MB; growth {rss['growth_mb']:.1f} MB; "
                f"peak (VmHWM) {rss['peak_mb']:.1f} MB; {rss['requests'] / rss['seconds']:.0f} req/s; "
                f"policy {rss['policy']}; stats {json.dumps(rss['stats'])}", ""]
    if results.get("quality"):
        out += quality.markdown(results["quality"]) + [""]
    if results.get("sampler"):
        out += sampler_cost.markdown(results["sampler"]) + [""]
    if results.get("frameworks"):
        out += frameworks.markdown(results["frameworks"])
    out += ["## Goals", ""] + [goal_line(goal) for goal in goal_lines(results)]
    return "\n".join(out) + "\n"
