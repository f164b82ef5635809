"""Example Falcon service profiled by otel-perfmon, instrumented by OTel's FalconInstrumentor.

Run it under gunicorn::

    OTEL_PERFMON_THRESHOLD_SECONDS=0.5 gunicorn -w 2 --chdir examples falcon_app:app

Any OTel server instrumentation that makes local-root SERVER spans works the same way
(docs/frameworks.md): the SDK, the framework's instrumentor (``FalconInstrumentor`` replaces
``falcon.App``, so it runs before the app is created), then ``configure_perfmon()``.
``RouteEarly`` gives the span its route while it runs.

Routes: ``/fast`` (instant), ``/cpu`` (CPU-bound, slow), ``/io`` (blocking I/O, slow),
``/items/{item_id:int}`` (odd ids are slow), ``/health``. ``EXAMPLE_SLOW_SECONDS`` (default
1.2) sets how long the slow routes take.
"""

import time

import falcon
from opentelemetry import trace
from opentelemetry.instrumentation.falcon import FalconInstrumentor

from otel_perfmon import configure_perfmon
from tracing_setup import setup_tracing
from workloads import SLOW_SECONDS, crunch_numbers, load_from_slow_backend

provider = setup_tracing("example-falcon")
FalconInstrumentor().instrument(tracer_provider=provider)
perfmon = configure_perfmon()


def build_invoice(seconds: float) -> int:
    """The CPU culprit of ``/cpu``."""
    return crunch_numbers(time.monotonic() + seconds)


class RouteEarly:
    """Sets ``http.route`` as soon as Falcon has routed the request.

    OTel's Falcon instrumentation sets it only in ``process_response``, but otel-perfmon
    fingerprints a slow request when it passes its threshold, while it is still running: without
    the route then, every slow request of the service would share one fingerprint (and one
    report). See docs/frameworks.md.
    """

    def process_resource(self, req: falcon.Request, resp: falcon.Response, resource: object, params: dict) -> None:
        if req.uri_template:
            trace.get_current_span().set_attribute("http.route", req.uri_template)


class Health:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"ok": True}


class Fast:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"ok": True}


class Cpu:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"total": build_invoice(SLOW_SECONDS)}


class Io:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = load_from_slow_backend(SLOW_SECONDS)


class Item:
    def on_get(self, req: falcon.Request, resp: falcon.Response, item_id: int) -> None:
        if item_id % 2:
            build_invoice(SLOW_SECONDS)
        resp.media = {"id": item_id, "q": req.get_param("q") or ""}


app = falcon.App(middleware=[RouteEarly()])
app.add_route("/health", Health())
app.add_route("/fast", Fast())
app.add_route("/cpu", Cpu())
app.add_route("/io", Io())
app.add_route("/items/{item_id:int}", Item())
