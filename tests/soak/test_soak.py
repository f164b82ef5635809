"""Load soak (issue 15, item 5): real servers under 64 concurrent clients for SOAK_SECONDS
(default 120) per case, 10 routes of which 7 turn slow at random.

Cases: gunicorn -w 4 (Flask, soak_flask.py) on the SQLite dedup store; uvicorn --workers 4
(FastAPI, soak_fastapi.py) on SQLite; and one gunicorn -w 4 plus one uvicorn --workers 4
sharing a Redis dedup store and one report_dir (the multi-replica recipe), hit by the same
clients. A request is slow only when the client asks for it (``?slow=<seconds>``, 0.35-0.8 s
against a 0.3 s threshold, from a seeded random generator per client), so the test knows
exactly how many slow requests every route (and every worker, from the pid each answer
carries) got. Checked:

- no 5xx and no connection error;
- exactly one report file per fingerprint that had slow requests, none for the others, the
  report's id the one the store holds, no temporaries left;
- the store's occurrence count per fingerprint (read after the servers stopped) equals the
  slow requests sent to that route; its route stats saw every request;
- every worker: its ``slow_spans`` equals the slow requests it answered, nothing dropped, no
  internal error, one new report per fingerprint over all workers;
- no worker restarted, and each worker's RSS grew at most RSS_GROWTH_LIMIT_MB from the end of
  the warm-up to the end of the run.

Run by ``make soak`` only (marker ``soak``, deselected by the default addopts). Each case
prints a ``SOAK`` summary line: requests, slow, reports, counts, RSS, client latency.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import threading
import time
from collections import Counter, defaultdict
from contextlib import ExitStack
from typing import Dict, List, Optional, Tuple

import pytest

from conftest import (
    free_port,
    gunicorn_argv,
    read_reports,
    redis_server,
    run_server,
    uvicorn_argv,
    wait_until,
)
from otel_perfmon.dedup import fingerprint

HERE = os.path.dirname(os.path.abspath(__file__))
SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "120"))
CLIENTS = 64
WORKERS = 4
SEED = int(os.environ.get("SOAK_SEED", "15"))
THRESHOLD = 0.3
SLOW_RANGE = (0.35, 0.8)  # above the threshold, below 5x it (no in-flight report)
#: chance that a request to /r<n> is slow; /r7 .. /r9 never are
SLOW_CHANCE = {0: 0.005, 1: 0.01, 2: 0.02, 3: 0.03, 4: 0.005, 5: 0.01, 6: 0.02}
SERVICE = "soak"
ROUTES = [f"/r{n}" for n in range(10)]
#: RSS is sampled once the warm-up is over: by then every worker has built reports (pyinstrument's
#: renderers, Jinja templates, the store's connection are loaded) and malloc has its arenas.
WARMUP_SECONDS = min(20.0, SOAK_SECONDS / 4)
#: Allowed growth of one worker's RSS from the end of the warm-up to the end. A worker starts
#: at 60-80 MB; what perfmon keeps grows only with the number of routes (10) and report ids,
#: not with requests, so a bounded process stays within a few MB (allocator noise, a report
#: rendered at the end). A leak of one 1 KiB object per request would add 10-50 MB per worker
#: over two minutes (10,000-50,000 requests each), so the bound catches leaks per request of
#: that order, not slower ones (hours of soak: see docs/reliability.md).
RSS_GROWTH_LIMIT_MB = float(os.environ.get("SOAK_RSS_GROWTH_LIMIT_MB", "20"))
CONNECTION_REQUESTS = (50, 150)  # a client reconnects after this many requests on one connection

pytestmark = [pytest.mark.soak, pytest.mark.timeout(SOAK_SECONDS + 300)]

FINGERPRINTS = {fingerprint(SERVICE, "GET", route): route for route in ROUTES}


# ------------------------------------------------------------------------------------------ client
class Tally:
    """One client thread's counts (merged after the run: no lock on the request path)."""

    def __init__(self) -> None:
        self.sent: Counter = Counter()        # (server, route) -> requests answered 200
        self.slow: Counter = Counter()        # (server, route) -> slow requests answered 200
        self.by_pid: Counter = Counter()      # worker pid -> requests
        self.slow_by_pid: Counter = Counter()  # worker pid -> slow requests
        self.statuses: Counter = Counter()
        self.errors: List[str] = []
        self.fast_latency: List[float] = []
        self.slow_latency: List[float] = []


def client(index: int, servers: List[Tuple[str, int]], deadline: float, tally: Tally) -> None:
    try:
        run_client(index, servers, deadline, tally)
    except Exception as exc:  # e.g. an answer that is not a pid: reported, not a silently dead thread
        tally.errors.append(f"client {index} stopped: {exc!r}")


def run_client(index: int, servers: List[Tuple[str, int]], deadline: float, tally: Tally) -> None:
    rng = random.Random(f"{SEED}-{index}")
    conn: Optional[http.client.HTTPConnection] = None
    server = 0
    left = 0
    while time.monotonic() < deadline:
        if conn is None or left <= 0:
            if conn is not None:
                conn.close()
            server = rng.randrange(len(servers))
            conn = http.client.HTTPConnection(*servers[server], timeout=60)
            left = rng.randint(*CONNECTION_REQUESTS)
        left -= 1
        n = rng.randrange(len(ROUTES))
        slow = rng.random() < SLOW_CHANCE.get(n, 0.0)
        path = f"/r{n}?slow={rng.uniform(*SLOW_RANGE):.3f}" if slow else f"/r{n}"
        started = time.monotonic()
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as exc:
            tally.errors.append(f"{servers[server]} {path}: {exc!r}")
            conn.close()
            conn = None
            continue
        took = time.monotonic() - started
        tally.statuses[response.status] += 1
        if response.status != 200:
            continue
        key = (server, ROUTES[n])
        pid = int(body)
        tally.sent[key] += 1
        tally.by_pid[pid] += 1
        if slow:
            tally.slow[key] += 1
            tally.slow_by_pid[pid] += 1
            tally.slow_latency.append(took)
        else:
            tally.fast_latency.append(took)
    if conn is not None:
        conn.close()


def merge(tallies: List[Tally]) -> Tally:
    total = Tally()
    for t in tallies:
        for name in ("sent", "slow", "by_pid", "slow_by_pid", "statuses"):
            getattr(total, name).update(getattr(t, name))
        total.errors += t.errors
        total.fast_latency += t.fast_latency
        total.slow_latency += t.slow_latency
    return total


def rss_text(rss: Dict[int, Dict[str, float]]) -> str:
    return ", ".join(f"{r.get('warm', float('nan')):.1f}->{r['end']:.1f} ({r['peak']:.1f})"
                     for _, r in sorted(rss.items()))


def percentile(values: List[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


# ------------------------------------------------------------------------------------ processes
def children(pid: int) -> List[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as handle:
        return [int(x) for x in handle.read().split()]


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def workers_of(kind: str, server) -> List[int]:
    """The worker processes of a gunicorn master (every child) or a uvicorn supervisor (its
    multiprocessing spawn children, not the resource tracker)."""
    found = children(server.process.pid)
    return sorted(p for p in found if kind == "gunicorn" or "spawn_main" in cmdline(p))


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise AssertionError(f"no VmRSS for {pid}")


def fetch_stats(host_port: Tuple[str, int], pids: List[int], timeout: float = 90.0) -> Dict[int, dict]:
    """Every worker's /perfmon-stats (its queue flushed first): fresh connections, spread by the
    kernel over the workers, until each pid has answered (deadline ``timeout``)."""
    found: Dict[int, dict] = {}

    def ask() -> None:
        conn = http.client.HTTPConnection(*host_port, timeout=30)
        try:
            conn.request("GET", "/perfmon-stats")
            response = conn.getresponse()
            body = response.read()
            assert response.status == 200, (response.status, body[:500])
            payload = json.loads(body)
            found[payload["pid"]] = payload
        finally:
            conn.close()

    def all_answered() -> bool:
        threads = [threading.Thread(target=ask) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        return set(pids) <= set(found)

    wait_until(all_answered, timeout, 0.05, f"/perfmon-stats from every worker {pids}")
    return {pid: found[pid] for pid in pids}


class Running:
    """A started server: its kind, address, worker pids."""

    def __init__(self, kind: str, server, host_port: Tuple[str, int]) -> None:
        self.kind, self.server, self.host_port = kind, server, host_port
        self.workers: List[int] = []

    def current_workers(self) -> List[int]:
        return workers_of(self.kind, self.server)

    def wait_for_workers(self) -> None:
        """Until every worker serves (/perfmon-stats answered by each): keep-alive clients
        started earlier would all stay on the first worker up."""
        wait_until(lambda: len(self.current_workers()) == WORKERS, 90, 0.1, f"{WORKERS} {self.kind} workers")
        self.workers = self.current_workers()
        fetch_stats(self.host_port, self.workers, timeout=60)


def start(stack: ExitStack, kind: str, root: str, env: Dict[str, str]) -> Running:
    port = free_port()
    if kind == "gunicorn":
        argv = gunicorn_argv("soak_flask:app", port, workers=WORKERS)
    else:
        # uvicorn kills a worker that misses its 5 s health-check ping; 30 s (gunicorn's default
        # worker timeout) leaves room on this saturated 2-core host and still catches a hung one.
        # (A worker that dies is restarted either way, and the restart check below fails: that is
        # how this soak found the sampler's segfault, docs/reliability.md#load.)
        argv = uvicorn_argv("soak_fastapi:app", port, extra=["--workers", str(WORKERS),
                                                             "--timeout-worker-healthcheck", "30"])
    log = os.path.join(root, f"{kind}.log")
    server = stack.enter_context(run_server(argv, env, port, log, cwd=HERE, timeout=90))
    running = Running(kind, server, ("127.0.0.1", port))
    running.wait_for_workers()
    return running


# ------------------------------------------------------------------------------------------ run
def soak(case: str, tmp_path, kinds: List[str], dedup_store: str, read_store):
    root = str(tmp_path)
    report_dir = os.path.join(root, "reports")
    env = {"OTEL_PERFMON_THRESHOLD_SECONDS": str(THRESHOLD), "OTEL_PERFMON_REPORT_DIR": report_dir,
           "OTEL_PERFMON_DEDUP_STORE": dedup_store, "OTEL_SERVICE_NAME": SERVICE}
    rss: Dict[int, Dict[str, float]] = defaultdict(dict)
    with ExitStack() as stack:
        servers = [start(stack, kind, root, env) for kind in kinds]
        workers = {pid: s.kind for s in servers for pid in s.workers}
        started = time.monotonic()
        deadline = started + SOAK_SECONDS
        tallies = [Tally() for _ in range(CLIENTS)]
        threads = [threading.Thread(target=client, args=(i, [s.host_port for s in servers], deadline, tallies[i]),
                                    name=f"soak-client-{i}", daemon=True) for i in range(CLIENTS)]
        for t in threads:
            t.start()
        # RSS after the warm-up, then every 5 s (peak), then at the end of the load
        stop = threading.Event()

        def sample() -> None:
            if not stop.wait(max(0.0, started + WARMUP_SECONDS - time.monotonic())):
                for pid in workers:
                    rss[pid]["warm"] = rss[pid]["peak"] = rss_mb(pid)
                while not stop.wait(5.0):
                    for pid in workers:
                        rss[pid]["peak"] = max(rss[pid]["peak"], rss_mb(pid))
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        for t in threads:
            t.join(deadline - time.monotonic() + 120)
            assert not t.is_alive(), f"{t.name} still running 120 s after the deadline"
        elapsed = time.monotonic() - started
        stop.set()
        sampler.join(10)
        still = {s.kind: s.current_workers() for s in servers}
        for s in servers:
            assert still[s.kind] == s.workers, f"{s.kind} workers changed (a crash or restart): {s.workers} -> " \
                                               f"{still[s.kind]}"
        for pid in workers:
            rss[pid]["end"] = rss_mb(pid)
            rss[pid]["peak"] = max(rss[pid].get("peak", 0.0), rss[pid]["end"])
        total = merge(tallies)
        stats = {}
        for s in servers:
            stats.update(fetch_stats(s.host_port, s.workers))
    # the servers are stopped (SIGTERM: every worker shut perfmon down and flushed)
    entries, route_stats = read_store()
    reports = read_reports(report_dir)

    # ---- the figures
    slow_per_route: Counter = Counter()   # slow requests the clients sent
    sent_per_route: Counter = Counter()
    for (_, route), n in total.slow.items():
        slow_per_route[route] += n
    for (_, route), n in total.sent.items():
        sent_per_route[route] += n
    # the servers' own count of slow spans (soak_common.SlowSpanCounter): asked for, and not
    requested: Counter = Counter()
    unrequested: Counter = Counter()
    spans_by_pid: Counter = Counter()
    for pid, payload in stats.items():
        for key, n in payload["slow_spans"].items():
            route, kind = key.split(" ")
            (requested if kind == "requested" else unrequested)[route] += n
            spans_by_pid[pid] += n
    slow_spans = requested + unrequested  # what perfmon must count
    requests, slow = sum(total.sent.values()), sum(total.slow.values())
    counts = {FINGERPRINTS.get(e.fingerprint, e.fingerprint): e.count for e in entries}
    latency = total.fast_latency + total.slow_latency
    growth = {pid: rss[pid]["end"] - rss[pid]["warm"] for pid in workers if "warm" in rss[pid]}
    stat_sum: Counter = Counter()
    for payload in stats.values():
        stat_sum.update({k: v for k, v in payload["stats"].items() if isinstance(v, int)})
    store_errors = {p: v["stats"]["dedup_store_errors"] for p, v in stats.items() if v["stats"]["dedup_store_errors"]}
    store_errors = {f"{workers[p]} {p}": n for p, n in store_errors.items()}
    print(f"\nSOAK {case}: {elapsed:.0f} s, {CLIENTS} clients, {len(workers)} workers ({', '.join(kinds)}); "
          f"requests {requests} ({requests / elapsed:.0f}/s), slow sent {slow}, 5xx "
          f"{sum(n for s, n in total.statuses.items() if s >= 500)}, errors {len(total.errors)}; "
          f"slow spans at the servers {sum(slow_spans.values())} (asked {sum(requested.values())}, "
          f"fast requests over the threshold {sum(unrequested.values())} {dict(sorted(unrequested.items()))}); "
          f"per route {dict(sorted(slow_spans.items()))}; "
          f"reports {len(reports)}, store counts {sum(counts.values())} {dict(sorted(counts.items()))}; "
          f"workers: slow_spans {stat_sum['slow_spans']}, reports_created {stat_sum['reports_created']}, "
          f"deduplicated {stat_sum['reports_deduplicated']}, replaced {stat_sum['reports_replaced']}, "
          f"dropped {stat_sum['reports_dropped']}, internal_errors {stat_sum['internal_errors']}, "
          f"dedup_store_errors {stat_sum['dedup_store_errors']} "
          f"{store_errors}; "
          f"requests per worker {sorted(total.by_pid.values())}; "
          f"RSS MB warm->end (peak) {rss_text(rss)}; "
          f"max growth {max(growth.values(), default=float('nan')):.1f} MB; "
          f"latency all p50 {percentile(latency, 0.5) * 1000:.0f} ms p99 {percentile(latency, 0.99) * 1000:.0f} ms, "
          f"fast p50 {percentile(total.fast_latency, 0.5) * 1000:.0f} ms "
          f"p99 {percentile(total.fast_latency, 0.99) * 1000:.0f} ms, "
          f"slow p50 {percentile(total.slow_latency, 0.5) * 1000:.0f} ms "
          f"p99 {percentile(total.slow_latency, 0.99) * 1000:.0f} ms", flush=True)

    # ---- the load was real and clean
    assert not total.errors, f"{len(total.errors)} connection errors, e.g. {total.errors[:5]}"
    assert set(total.statuses) == {200}, f"statuses {dict(total.statuses)}"
    assert requests >= 20 * SOAK_SECONDS, f"only {requests} requests in {elapsed:.0f} s"
    assert {r for r, n in slow_per_route.items() if n} == {ROUTES[n] for n in SLOW_CHANCE}, slow_per_route
    assert set(total.by_pid) == set(workers), (dict(total.by_pid), workers)  # every worker served
    # every request the clients asked to be slow was a slow span at its server, no other marked one
    assert requested == slow_per_route, "slow spans asked for != slow requests sent"

    # ---- one report per fingerprint with slow spans
    slow_routes = {route for route, n in slow_spans.items() if n}
    expected = {fingerprint(SERVICE, "GET", route) for route in slow_routes}
    by_fingerprint = defaultdict(list)
    for report in reports:
        by_fingerprint[report["fingerprint"]].append(report["report_id"])
    assert {FINGERPRINTS.get(f, f): ids for f, ids in by_fingerprint.items() if len(ids) != 1} == {}, \
        "fingerprints with more than one report"
    assert set(by_fingerprint) == expected, \
        (sorted(FINGERPRINTS.get(f, f) for f in by_fingerprint), sorted(slow_routes))
    leftovers = [n for n in os.listdir(report_dir) if ".tmp-" in n]
    assert not leftovers, leftovers

    # ---- the store counted every slow span once (read after the servers stopped)
    assert {e.fingerprint for e in entries} == expected
    for entry in entries:
        assert entry.report_id == by_fingerprint[entry.fingerprint][0], FINGERPRINTS[entry.fingerprint]
    assert counts == dict(slow_spans), "store counts != slow spans (asked for + fast ones over the threshold)"
    # route stats are statistics (two threads may lose one increment, route_stats.py), yet each
    # process ends its spans on one thread here: every request is in them
    seen = {FINGERPRINTS.get(r.fingerprint, r.fingerprint): (r.count, r.slow) for r in route_stats}
    assert seen == {route: (sent_per_route[route], slow_spans[route]) for route in ROUTES}, \
        "route stats (count, slow) != requests sent, slow spans"

    # ---- every worker: what it counted is what it served, nothing lost
    for pid, payload in stats.items():
        counters = payload["stats"]
        assert payload["flushed"], (pid, counters)
        assert counters["slow_spans"] == spans_by_pid[pid], (pid, workers[pid], counters, spans_by_pid[pid])
        assert counters["reports_dropped"] == 0 and counters["internal_errors"] == 0, (pid, counters)
    assert stat_sum["reports_created"] == len(expected), stat_sum
    assert stat_sum["reports_created"] + stat_sum["reports_deduplicated"] == sum(slow_spans.values()), stat_sum

    # ---- memory bounded
    assert len(growth) == len(workers), "RSS not sampled after the warm-up"
    assert max(growth.values()) <= RSS_GROWTH_LIMIT_MB, \
        f"RSS growth per worker (MB) {growth}, limit {RSS_GROWTH_LIMIT_MB}"


def sqlite_reader(tmp_path):
    def read():
        from otel_perfmon.dedup.sqlite import SqliteDedupStore

        store = SqliteDedupStore.in_report_dir(os.path.join(str(tmp_path), "reports"))
        try:
            return store.entries(), store.route_stats()
        finally:
            store.close()
    return read


def test_gunicorn_4_workers_sqlite(tmp_path):
    soak("gunicorn-sqlite", tmp_path, ["gunicorn"], "sqlite", sqlite_reader(tmp_path))


def test_uvicorn_4_workers_sqlite(tmp_path):
    soak("uvicorn-sqlite", tmp_path, ["uvicorn"], "sqlite", sqlite_reader(tmp_path))


def test_gunicorn_and_uvicorn_sharing_redis(tmp_path):
    with redis_server(str(tmp_path)) as url:
        from otel_perfmon.dedup.redis import RedisDedupStore

        def read():
            store = RedisDedupStore(url)
            try:
                return store.entries(), store.route_stats()
            finally:
                store.close()
        soak("gunicorn+uvicorn-redis", tmp_path, ["gunicorn", "uvicorn"], url, read)
