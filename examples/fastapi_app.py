"""Example FastAPI service profiled by otel-perfmon.

Run it under uvicorn::

    OTEL_PERFMON_THRESHOLD_SECONDS=0.5 uvicorn --app-dir examples fastapi_app:app

Routes: ``/fast`` (async, instant), ``/cpu`` (async, CPU-bound, slow), ``/io`` (async,
awaits I/O, slow), ``/sync-cpu`` and ``/sync-io`` (sync ``def`` routes that FastAPI runs in a
worker thread, slow), ``/items/{item_id}`` (parameterized: odd ids are slow), ``/health``.
``EXAMPLE_SLOW_SECONDS`` (default 1.2) sets how long the slow routes take.
"""

import time

from fastapi import FastAPI

from otel_perfmon import configure_perfmon
from tracing_setup import setup_tracing
from workloads import SLOW_SECONDS, crunch_numbers, fetch_from_slow_service, load_from_slow_backend

setup_tracing("example-fastapi")
app = FastAPI()


def blocking_query(seconds: float) -> dict:
    """Blocking I/O in a sync route (FastAPI runs it in a worker thread)."""
    return load_from_slow_backend(seconds)


@app.get("/fast")
async def fast():
    return {"ok": True}


@app.get("/health")
async def health():
    return {"ok": True}


@app.get("/cpu")
async def cpu():
    return {"total": crunch_numbers(time.monotonic() + SLOW_SECONDS)}


@app.get("/io")
async def io():
    return await fetch_from_slow_service(SLOW_SECONDS)


@app.get("/sync-cpu")
def sync_cpu():
    return {"total": crunch_numbers(time.monotonic() + SLOW_SECONDS)}


@app.get("/sync-io")
def sync_io():
    return blocking_query(SLOW_SECONDS)


@app.get("/items/{item_id}")
async def item(item_id: int, q: str = ""):
    if item_id % 2:
        await fetch_from_slow_service(SLOW_SECONDS)
    return {"id": item_id, "q": q}


perfmon = configure_perfmon(app=app)
