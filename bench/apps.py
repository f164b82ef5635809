"""Benchmark apps: one Flask or FastAPI app per variant, with the same four routes.

Variants (``VARIANTS``):

* ``bare``: the app alone, no OpenTelemetry;
* ``otel``: OTel SDK ``TracerProvider`` + ``BatchSpanProcessor`` + a span exporter that drops
  every span, and OTel's Flask / FastAPI instrumentor (the baseline of every ratio);
* ``otel_b``: a second, identical ``otel`` app: the A/A control. Its ratio against ``otel``
  shows how precise a run is (1.000 would be perfect);
* ``perfmon_default``: ``otel`` + ``configure_perfmon()`` with the package's default
  configuration except ``report_dir`` (and ``threshold_seconds`` where a caller passes one:
  the slow-request checks);
* ``perfmon_always``: the same with ``profile_policy="always"``;
* ``raw_pyinstrument``: ``otel`` + :class:`RawPyinstrumentProcessor`, a minimal span processor
  that runs one pyinstrument ``Profiler`` per server span and throws the session away.

Routes (``ROUTES``; units are those of the work each does):

* ``/fast``: ~0.3 ms of pure bytecode (6,000 loop iterations, no Python calls);
* ``/calls``: 20,000 calls of a small Python function (~1.3 ms bare on the bench machine);
* ``/io``: a 2 ms sleep (``time.sleep`` in Flask, ``asyncio.sleep`` in FastAPI);
* ``/db``: ``DB_QUERIES`` (50) SQLAlchemy queries on an in-memory SQLite database, each a
  child span of the request through OTel's SQLAlchemy instrumentor (what the report's
  ``spans`` and N+1 finding are made of; the request path pays one append per child span);
* ``/slow``: ~80 ms (40 ms of small calls, then a 40 ms sleep): below the package's 1 s
  threshold of the timed cells, above the 50 ms (``DEFAULT_THRESHOLD_SECONDS``) of the
  slow-request checks.

In-process use: :func:`build` (or :func:`build_flask` / :func:`build_fastapi`) returns a
:class:`BenchApp`; :func:`instrument` gives any Flask/FastAPI app a variant's OTel setup.
Servers: ``gunicorn bench.apps:flask_app`` or ``uvicorn bench.apps:fastapi_app`` (with the
repository root on ``sys.path``) build one app at import from ``BENCH_VARIANT``, ``BENCH_REPORT_DIR`` and
``BENCH_THRESHOLD_SECONDS`` (seconds). ``BENCH_VARIANT=mixed`` builds every variant in the one
server process, each under ``/<variant>/<route>``, and times each request server-side
(:class:`MixedWsgi` / :class:`MixedAsgi`).
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind

VARIANTS = ("bare", "otel", "otel_b", "perfmon_default", "perfmon_always", "raw_pyinstrument")
PERFMON_VARIANTS = ("perfmon_default", "perfmon_always")
ROUTES = ("fast", "calls", "io", "db", "slow")

#: Threshold of the slow-request checks (s): short, so the slow route (~80 ms) is slow and the
#: bench stays short. The timed cells use the package default (1 s), as production does.
DEFAULT_THRESHOLD_SECONDS = 0.05
#: Work of each route (see the module docstring).
FAST_LOOP_ITERATIONS = 6000
CALL_COUNT = 20000
IO_SLEEP_SECONDS = 0.002
SLOW_CPU_SECONDS = 0.04
SLOW_SLEEP_SECONDS = 0.04
DB_QUERIES = 50
#: pyinstrument sampling interval of the raw variant (s), the same as perfmon's default.
RAW_INTERVAL_SECONDS = 0.001


# ---------------------------------------------------------------------------- route work
def fast_work(iterations: int = FAST_LOOP_ITERATIONS) -> int:
    """~0.3 ms of arithmetic in one frame (no Python calls)."""
    total = 0
    for i in range(iterations):
        total += i * i % 7
    return total


def small_function(value: int) -> int:
    """One cheap Python call (the unit of the call-heavy route)."""
    return value + 1


def db_engine() -> Any:
    """An in-memory SQLite engine (one connection, shared) with a ``customers`` table of
    ``DB_QUERIES`` rows."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import StaticPool

    engine = create_engine("sqlite://", connect_args={"check_same_thread": False}, poolclass=StaticPool)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)"))
        for i in range(DB_QUERIES):
            conn.execute(text("INSERT INTO customers VALUES (:id, :name)"), {"id": i, "name": f"customer {i}"})
    return engine


def db_work(engine: Any, queries: int = DB_QUERIES) -> int:
    """One query per customer (the N+1 shape), through SQLAlchemy."""
    from sqlalchemy import text

    found = 0
    with engine.connect() as conn:
        for i in range(queries):
            found += len(conn.execute(text("SELECT name FROM customers WHERE id = :id"), {"id": i}).fetchall())
    return found


def _instrument_engine(engine: Any, provider: Any) -> None:
    # OTel's SQLAlchemyInstrumentor is a process-wide singleton whose instrument() also patches
    # Engine.connect globally (each call nests another wrapper, on every variant's engine): the
    # bench needs one engine per variant, each traced on its own provider and nothing else, so
    # it attaches the instrumentor's per-engine tracer directly (bench code only).
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
    from opentelemetry.metrics import NoOpMeterProvider

    tracer = provider.get_tracer("opentelemetry.instrumentation.sqlalchemy")
    connections = NoOpMeterProvider().get_meter("bench").create_up_down_counter("db.client.connections.usage")
    EngineTracer(tracer, engine, connections, False, {}, False)


def call_heavy_work(calls: int = CALL_COUNT) -> int:
    """``calls`` calls of :func:`small_function`."""
    total = 0
    for i in range(calls):
        total += small_function(i)
    return total


def slow_cpu_part(seconds: float = SLOW_CPU_SECONDS) -> int:
    """Call-heavy work for ``seconds`` (s) of wall time: gives the slow report a call tree."""
    deadline = time.perf_counter() + seconds
    total = 0
    while time.perf_counter() < deadline:
        total += call_heavy_work(500)
    return total


def slow_backend_call(seconds: float = SLOW_SLEEP_SECONDS) -> None:
    """Stands in for a slow database call: sleeps ``seconds`` (s)."""
    time.sleep(seconds)


async def slow_backend_call_async(seconds: float = SLOW_SLEEP_SECONDS) -> None:
    """Async twin of :func:`slow_backend_call` (s)."""
    await asyncio.sleep(seconds)


# ---------------------------------------------------------------------------- OTel pieces
class NullSpanExporter(SpanExporter):
    """Drops every span (the exporter of every variant's BatchSpanProcessor), except, when
    ``keep_route`` is set, the SERVER spans of that route (``http.route``), which :meth:`spans`
    returns for the slow-request check. It runs on the BatchSpanProcessor's thread, never on
    the request path, and every variant has the same one, so it costs them all the same."""

    def __init__(self, keep_route: Optional[str] = None) -> None:
        self.keep_route = keep_route
        self._kept: List[ReadableSpan] = []
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self.keep_route is not None:
            kept = [span for span in spans if span.kind is SpanKind.SERVER
                    and (span.attributes or {}).get("http.route") == self.keep_route]
            with self._lock:
                self._kept.extend(kept)
        return SpanExportResult.SUCCESS

    def spans(self) -> List[ReadableSpan]:
        """The kept spans (call after the provider's ``force_flush``)."""
        with self._lock:
            return list(self._kept)

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def _is_local_root_server(span: Span) -> bool:
    if span.kind is not SpanKind.SERVER:
        return False
    parent = span.parent
    return parent is None or not parent.is_valid or parent.is_remote


class RawPyinstrumentProcessor(SpanProcessor):
    """One pyinstrument ``Profiler`` per local-root SERVER span, started in ``on_start`` and
    stopped in ``on_end``; the session is discarded. ``async_mode`` is ``"enabled"`` on an event
    loop (FastAPI) and ``"disabled"`` otherwise (Flask). Interval in seconds."""

    def __init__(self, interval_seconds: float = RAW_INTERVAL_SECONDS) -> None:
        self.interval_seconds = interval_seconds
        self._profilers: Dict[int, Any] = {}

    def on_start(self, span: Span, parent_context: Any = None) -> None:
        if not _is_local_root_server(span):
            return
        from pyinstrument import Profiler

        on_loop = asyncio._get_running_loop() is not None
        profiler = Profiler(interval=self.interval_seconds, async_mode="enabled" if on_loop else "disabled")
        profiler.start()
        self._profilers[span.context.span_id] = profiler

    def on_end(self, span: ReadableSpan) -> None:
        profiler = self._profilers.pop(span.context.span_id, None)
        if profiler is not None:
            profiler.stop()

    def shutdown(self) -> None:
        self._profilers.clear()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class BenchApp:
    """One variant's app and its OTel / perfmon handles (``provider``, ``perfmon`` and
    ``recorder`` are None where the variant has none; ``recorder`` is the NullSpanExporter
    that keeps the slow route's server spans)."""

    def __init__(self, framework: str, variant: str, app: Any, provider: Optional[TracerProvider] = None,
                 perfmon: Any = None, recorder: Optional[NullSpanExporter] = None) -> None:
        self.framework = framework
        self.variant = variant
        self.app = app
        self.provider = provider
        self.perfmon = perfmon
        self.recorder = recorder

    @property
    def policy_description(self) -> str:
        """The profiling policy of a perfmon variant as configured (name or description)."""
        if self.perfmon is None:
            return "-"
        policy = self.perfmon.config.profile_policy
        return policy if isinstance(policy, str) else getattr(policy, "description", type(policy).__name__)

    def flush(self, timeout_seconds: float = 10.0) -> None:
        """Wait (up to ``timeout_seconds`` s) for queued perfmon reports and spans."""
        if self.perfmon is not None:
            self.perfmon.force_flush(timeout_seconds=timeout_seconds)
        if self.provider is not None:
            self.provider.force_flush(int(timeout_seconds * 1000))

    def shutdown(self) -> None:
        """Stop perfmon and the provider's processors (bounded)."""
        if self.perfmon is not None:
            self.perfmon.shutdown(timeout_seconds=5.0)
        if self.provider is not None:
            self.provider.shutdown()


def _provider(variant: str, framework: str, record_slow: bool) -> Tuple[TracerProvider, NullSpanExporter]:
    provider = TracerProvider(resource=Resource.create({"service.name": f"bench-{framework}-{variant}"}))
    exporter = NullSpanExporter(keep_route="/slow" if record_slow else None)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider, exporter


def _instrument(variant: str, framework: str, provider: TracerProvider, report_dir: Optional[str],
                threshold_seconds: Optional[float], extra_perfmon: Optional[Dict[str, Any]] = None) -> Any:
    """Add the variant's processors to ``provider``; returns the perfmon handle (or None).

    ``extra_perfmon``: more ``configure_perfmon`` keyword overrides (perfmon variants only)."""
    perfmon = None
    if variant == "raw_pyinstrument":
        provider.add_span_processor(RawPyinstrumentProcessor())
    elif variant in PERFMON_VARIANTS:
        from otel_perfmon import configure_perfmon

        if report_dir is None:
            raise ValueError("the perfmon variants need a report_dir")
        overrides: Dict[str, Any] = {"report_dir": report_dir}
        if threshold_seconds is not None:  # None: the package default (1 s)
            overrides["threshold_seconds"] = threshold_seconds
        if variant == "perfmon_always":
            overrides["profile_policy"] = "always"
        overrides.update(extra_perfmon or {})
        perfmon = configure_perfmon(tracer_provider=provider, **overrides)
    elif variant not in ("otel", "otel_b"):
        raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
    return perfmon


def instrument(framework: str, variant: str, app: Any, report_dir: Optional[str], threshold_seconds: Optional[float],
               record_slow: bool = False, extra_perfmon: Optional[Dict[str, Any]] = None,
               engine: Any = None) -> BenchApp:
    """Give ``app`` the variant's provider, processors and OTel's instrumentor (none for bare),
    and ``engine`` (the /db route's) OTel's SQLAlchemy instrumentation on that provider."""
    if variant == "bare":
        return BenchApp(framework, variant, app)
    if framework == "flask":
        from opentelemetry.instrumentation.flask import FlaskInstrumentor as Instrumentor
    else:
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor as Instrumentor  # type: ignore[no-redef]

    provider, exporter = _provider(variant, framework, record_slow)
    perfmon = _instrument(variant, framework, provider, report_dir, threshold_seconds, extra_perfmon)
    Instrumentor.instrument_app(app, tracer_provider=provider)
    if engine is not None:
        _instrument_engine(engine, provider)
    return BenchApp(framework, variant, app, provider, perfmon, exporter if record_slow else None)


# ---------------------------------------------------------------------------- Flask
def build_flask(variant: str, report_dir: Optional[str] = None,
                threshold_seconds: Optional[float] = DEFAULT_THRESHOLD_SECONDS, record_slow: bool = True,
                extra_perfmon: Optional[Dict[str, Any]] = None) -> BenchApp:
    """A Flask app for ``variant`` (see ``VARIANTS``); ``threshold_seconds`` in seconds (None:
    the package default).

    ``record_slow`` makes the span exporter keep the slow route's server spans (``recorder``);
    ``extra_perfmon`` holds more ``configure_perfmon`` overrides (e.g. ``dedup_window_seconds=0``)."""
    from flask import Flask

    app = Flask(f"bench_flask_{variant}")
    engine = db_engine()

    @app.get("/fast")
    def fast():
        return {"total": fast_work()}

    @app.get("/calls")
    def calls():
        return {"total": call_heavy_work()}

    @app.get("/io")
    def io():
        time.sleep(IO_SLEEP_SECONDS)
        return {"ok": True}

    @app.get("/db")
    def db():
        return {"rows": db_work(engine)}

    @app.get("/slow")
    def slow():
        total = slow_cpu_part()
        slow_backend_call()
        return {"total": total}

    @app.get("/health")
    def health():
        return "ok"

    return instrument("flask", variant, app, report_dir, threshold_seconds, record_slow, extra_perfmon, engine)


# ---------------------------------------------------------------------------- FastAPI
def build_fastapi(variant: str, report_dir: Optional[str] = None,
                  threshold_seconds: Optional[float] = DEFAULT_THRESHOLD_SECONDS, record_slow: bool = True,
                  extra_perfmon: Optional[Dict[str, Any]] = None) -> BenchApp:
    """A FastAPI app (async routes) for ``variant``; ``threshold_seconds`` in seconds."""
    from fastapi import FastAPI

    app = FastAPI(title=f"bench-fastapi-{variant}")
    engine = db_engine()

    @app.get("/fast")
    async def fast():
        return {"total": fast_work()}

    @app.get("/calls")
    async def calls():
        return {"total": call_heavy_work()}

    @app.get("/io")
    async def io():
        await asyncio.sleep(IO_SLEEP_SECONDS)
        return {"ok": True}

    @app.get("/db")
    async def db():
        return {"rows": db_work(engine)}

    @app.get("/slow")
    async def slow():
        total = slow_cpu_part()
        await slow_backend_call_async()
        return {"total": total}

    @app.get("/health")
    async def health():
        return {"ok": True}

    return instrument("fastapi", variant, app, report_dir, threshold_seconds, record_slow, extra_perfmon, engine)


def build(framework: str, variant: str, report_dir: Optional[str] = None,
          threshold_seconds: Optional[float] = DEFAULT_THRESHOLD_SECONDS, record_slow: bool = True,
          extra_perfmon: Optional[Dict[str, Any]] = None) -> BenchApp:
    """:func:`build_flask` or :func:`build_fastapi` by ``framework`` ("flask" / "fastapi")."""
    builder = {"flask": build_flask, "fastapi": build_fastapi}[framework]
    return builder(variant, report_dir, threshold_seconds, record_slow, extra_perfmon)


# ---------------------------------------------------------------------------- servers
_built: Dict[str, BenchApp] = {}
_built_lock = threading.Lock()


TIMINGS_PATH = "/_bench/timings"


class MixedWsgi:
    """One WSGI app serving every variant's app under ``/<variant>/...`` (the prefix is moved to
    ``SCRIPT_NAME``), timing each request server-side (ns, ``time.perf_counter_ns``, from the call
    until the body is fully produced). ``GET /_bench/timings`` answers the times recorded since
    the last call as JSON ``{variant: [ns, ...]}`` and clears them."""

    def __init__(self, bench_apps: Dict[str, BenchApp]) -> None:
        self.bench_apps = bench_apps
        self.timings: Dict[str, List[int]] = {variant: [] for variant in bench_apps}

    def __call__(self, environ: Dict[str, Any], start_response: Any) -> Any:
        path = environ.get("PATH_INFO", "")
        if path == TIMINGS_PATH:
            body = json.dumps(self.timings).encode()
            self.timings = {variant: [] for variant in self.bench_apps}
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        variant, _, rest = path[1:].partition("/")
        bench_app = self.bench_apps.get(variant)
        if bench_app is None:
            start_response("404 Not Found", [("Content-Length", "0")])
            return [b""]
        environ = dict(environ, SCRIPT_NAME=environ.get("SCRIPT_NAME", "") + "/" + variant, PATH_INFO="/" + rest)
        started = time.perf_counter_ns()
        body = bench_app.app(environ, start_response)
        try:
            chunks = list(body)
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()
        self.timings[variant].append(time.perf_counter_ns() - started)
        return chunks


class MixedAsgi:
    """The ASGI twin of :class:`MixedWsgi` (``path`` and ``raw_path`` lose the prefix; the time
    runs until the variant's app returns, after its last ``send``). Answers lifespan events itself."""

    def __init__(self, bench_apps: Dict[str, BenchApp]) -> None:
        self.bench_apps = bench_apps
        self.timings: Dict[str, List[int]] = {variant: [] for variant in bench_apps}

    async def __call__(self, scope: Dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        path = scope.get("path", "")
        if path == TIMINGS_PATH:
            body = json.dumps(self.timings).encode()
            self.timings = {variant: [] for variant in self.bench_apps}
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": body})
            return
        variant, _, rest = path[1:].partition("/")
        bench_app = self.bench_apps.get(variant)
        if bench_app is None:
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        scope = dict(scope, path="/" + rest, raw_path=("/" + rest).encode())
        started = time.perf_counter_ns()
        await bench_app.app(scope, receive, send)
        self.timings[variant].append(time.perf_counter_ns() - started)


def _from_env(framework: str) -> Any:
    with _built_lock:
        if framework not in _built:
            variant = os.environ.get("BENCH_VARIANT", "otel")
            report_dir = os.environ.get("BENCH_REPORT_DIR") or None
            threshold_text = os.environ.get("BENCH_THRESHOLD_SECONDS", str(DEFAULT_THRESHOLD_SECONDS))
            threshold = float(threshold_text) if threshold_text else None  # "": the package default
            if variant == "mixed":
                bench_apps = {v: build(framework, v, os.path.join(report_dir or ".", v)
                                       if v in PERFMON_VARIANTS else None, threshold, record_slow=False)
                              for v in VARIANTS}
                _built[framework] = (MixedWsgi if framework == "flask" else MixedAsgi)(bench_apps)
            else:
                _built[framework] = build(framework, variant, report_dir, threshold, record_slow=False).app
        return _built[framework]


def __getattr__(name: str) -> Any:
    """``flask_app`` / ``fastapi_app``: the app of ``$BENCH_VARIANT``, built on first access
    (so gunicorn's and uvicorn's ``bench.apps:flask_app`` / ``bench.apps:fastapi_app`` work)."""
    if name == "flask_app":
        return _from_env("flask")
    if name == "fastapi_app":
        return _from_env("fastapi")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
