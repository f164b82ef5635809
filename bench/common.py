"""What the bench sections share: progress log, machine description, shuffled turns and their
summary, markdown tables, goal lines, and a subprocess server with a health check."""

from __future__ import annotations

import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from typing import Any, Dict, List, Optional, Sequence, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

BASELINE = "otel"
#: (variant, route) -> per round, the request times in ns
Timings = Dict[Tuple[str, str], List[List[int]]]
#: (goal, measured value, met); met is None for lines shown for information
Goal = Tuple[str, str, Optional[bool]]


def log(message: str) -> None:
    """Progress line on stderr (the results go to stdout)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def goal_line(goal: Goal) -> str:
    name, value, met = goal
    return f"- {'info' if met is None else 'PASS' if met else 'MISS'}  {name}: {value}"


def md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in rows])


def policy_name(policy: Any) -> str:
    return policy if isinstance(policy, str) else getattr(policy, "description", type(policy).__name__)


def default_policy_name() -> str:
    """The package's default ``profile_policy`` at run time (after env vars)."""
    from otel_perfmon.config import resolve_config

    return policy_name(resolve_config().profile_policy)


# ============================================================================ shuffled turns
def turns(items: Sequence[str], count: int, seed: int) -> List[str]:
    """``count`` turns of ``items``, each turn in its own random order (seeded): every item runs
    after every other about equally often. A fixed cyclic order is biased: the variant that
    always follows ``bare`` finds the OTel code cold and reads ~3 % slower than its twin."""
    rng = random.Random(seed)
    sequence: List[str] = []
    for _ in range(count):
        turn = list(items)
        rng.shuffle(turn)
        sequence.extend(turn)
    return sequence


def rotated(items: Sequence[str], shift: int) -> List[str]:
    shift %= len(items)
    return list(items[shift:]) + list(items[:shift])


def summarize_turns(timings: Timings) -> Dict[Tuple[str, str], Dict[str, float]]:
    """Median latency (µs) over all rounds; its ratio to the median of otel (``ratio``) and of
    raw_pyinstrument (``vs_raw``) over all rounds; and the quartiles of the per-round ratios of
    medians (``ratio_q1``/``ratio_q3``, ``vs_raw_q1``/``vs_raw_q3``), whose spread shows the noise."""
    summary: Dict[Tuple[str, str], Dict[str, float]] = {}
    for (variant, route), per_round in timings.items():
        if not per_round:
            continue
        pooled = [t for batch in per_round for t in batch]
        entry = {"median_us": statistics.median(pooled) / 1000.0, "requests": float(len(pooled))}
        for key, reference in (("ratio", BASELINE), ("vs_raw", "raw_pyinstrument")):
            base_rounds = timings.get((reference, route))
            if base_rounds and len(base_rounds) == len(per_round):
                ratios = [statistics.median(mine) / statistics.median(theirs)
                          for mine, theirs in zip(per_round, base_rounds)]
                entry[key] = statistics.median(pooled) / statistics.median(t for batch in base_rounds for t in batch)
                quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
                entry[f"{key}_q1"], entry[f"{key}_q3"] = quartiles[0], quartiles[2]
        summary[(variant, route)] = entry
    return summary


# ============================================================================ machine
def _first_line_with(path: str, prefix: str) -> Optional[str]:
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if line.lower().startswith(prefix.lower()):
                    return line
    except OSError:
        pass
    return None


def machine_description() -> Dict[str, str]:
    """CPU model, cores, memory, OS, Python, package versions, load average, git commit."""
    from importlib import metadata

    info: Dict[str, str] = {}
    model = _first_line_with("/proc/cpuinfo", "model name")
    info["CPU"] = model.split(":", 1)[1].strip() if model else "unknown"
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info["cores"] = f"{os.cpu_count()} logical, {usable} usable by this process"
    memory = _first_line_with("/proc/meminfo", "MemTotal:")
    if memory:
        info["memory"] = f"{int(memory.split()[1]) / 1024 / 1024:.1f} GiB"
    info["OS"] = f"{platform.system()} {platform.release()} ({platform.machine()})"
    info["Python"] = f"{platform.python_implementation()} {platform.python_version()}"
    versions = []
    for name in ("otel-perfmon", "opentelemetry-sdk", "opentelemetry-instrumentation-flask",
                 "opentelemetry-instrumentation-fastapi", "pyinstrument", "flask", "werkzeug", "fastapi",
                 "starlette", "gunicorn", "uvicorn"):
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{name} (not installed)")
    info["packages"] = ", ".join(versions)
    wrk = shutil.which("wrk")
    if wrk:
        probe = subprocess.run([wrk, "-v"], capture_output=True, text=True, timeout=10)
        first = (probe.stdout or probe.stderr).strip().splitlines()
        info["load generator"] = first[0] if first else "wrk"
    else:
        info["load generator"] = "bounded Python client (wrk not installed)"
    try:
        commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no", "--",
                                ".", ":!bench/results.md"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        info["git commit"] = f"{commit}{' (with uncommitted changes)' if dirty else ''}"
    except (OSError, subprocess.SubprocessError):
        pass
    info["load average at start"] = load_average()
    env = sorted(k for k in os.environ if k.startswith("OTEL_PERFMON_"))
    if env:
        info["OTEL_PERFMON_* set"] = ", ".join(f"{k}={os.environ[k]}" for k in env)
    return info


def load_average() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


# ============================================================================ servers
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """A server subprocess in its own session, output appended to ``log_path``; ready once
    ``health_url`` answers 200."""

    def __init__(self, name: str, argv: Sequence[str], health_url: str, log_path: str,
                 env: Optional[Dict[str, str]] = None) -> None:
        self.name, self.health_url, self.log_path = name, health_url, log_path
        with open(log_path, "ab") as log_file:
            self.process = subprocess.Popen(list(argv), env=env, cwd=ROOT, stdout=log_file,
                                            stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout_seconds: float = 60.0) -> None:
        """Poll the health URL until it answers 200 (deadline ``timeout_seconds``, s)."""
        deadline = time.monotonic() + timeout_seconds
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} server exited:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.health_url, timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} server not ready:\n{self.log()}")
            time.sleep(0.1)

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as handle:
            return handle.read()[-4000:]

    def stop(self) -> None:
        """SIGTERM the server's process group; SIGKILL after 15 s."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
