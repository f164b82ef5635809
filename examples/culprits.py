"""Routes that are slow because of one culprit, then render: what a first slow report must explain.

Each route spends ``EXAMPLE_CULPRIT_SECONDS`` (default 0.8) in a culprit, then
``EXAMPLE_RENDER_SECONDS`` (default 0.4) in ``render_page`` (CPU):

* ``/cpu``: ``slow_query_cpu``, a Python loop;
* ``/sleepy``: ``slow_upstream``, a blocking wait (``time.sleep``, as a slow socket read);
* ``/awaiting`` (FastAPI): ``slow_await``, an ``await`` of a slow coroutine;
* ``/sync-cpu`` (FastAPI ``def`` route, run in anyio's worker thread): ``slow_query_cpu``.

Two apps, built on first access, each with the OTel SDK (``tracing_setup.py``) and
``configure_perfmon(app=...)``::

    gunicorn -w 2 --chdir examples culprits:flask_app
    uvicorn --app-dir examples culprits:fastapi_app
"""

import asyncio
import os
import time
from typing import Any

CULPRIT_SECONDS = float(os.environ.get("EXAMPLE_CULPRIT_SECONDS", "0.8"))
RENDER_SECONDS = float(os.environ.get("EXAMPLE_RENDER_SECONDS", "0.4"))


def _burn(seconds: float) -> int:
    deadline = time.monotonic() + seconds
    total = 0
    while time.monotonic() < deadline:
        total += sum(i * i for i in range(200))
    return total


def slow_query_cpu(seconds: float) -> int:
    """The CPU culprit: a Python loop in this function's own frame."""
    deadline = time.monotonic() + seconds
    total = 0
    while time.monotonic() < deadline:
        for i in range(300):
            total += i * i
    return total


def slow_upstream(seconds: float) -> None:
    """The waiting culprit: a blocking call (a slow upstream)."""
    time.sleep(seconds)


async def slow_await(seconds: float) -> None:
    """The awaiting culprit: the task is suspended on a slow coroutine."""
    await asyncio.sleep(seconds)


def render_page(seconds: float) -> int:
    """What runs after the culprit: CPU work of its own."""
    return _burn(seconds)


def _flask_app() -> Any:
    from flask import Flask

    from otel_perfmon import configure_perfmon
    from tracing_setup import setup_tracing

    setup_tracing("culprits-flask")
    app = Flask("culprits")

    @app.get("/health")
    def health() -> str:
        return "ok"

    @app.get("/cpu")
    def cpu() -> str:
        slow_query_cpu(CULPRIT_SECONDS)
        render_page(RENDER_SECONDS)
        return "ok"

    @app.get("/sleepy")
    def sleepy() -> str:
        slow_upstream(CULPRIT_SECONDS)
        render_page(RENDER_SECONDS)
        return "ok"

    configure_perfmon(app=app)
    return app


def _fastapi_app() -> Any:
    from fastapi import FastAPI

    from otel_perfmon import configure_perfmon
    from tracing_setup import setup_tracing

    setup_tracing("culprits-fastapi")
    app = FastAPI()

    @app.get("/health")
    async def health() -> dict:
        return {"ok": True}

    @app.get("/cpu")
    async def cpu() -> dict:
        slow_query_cpu(CULPRIT_SECONDS)
        render_page(RENDER_SECONDS)
        return {"ok": True}

    @app.get("/sleepy")
    async def sleepy() -> dict:
        slow_upstream(CULPRIT_SECONDS)
        render_page(RENDER_SECONDS)
        return {"ok": True}

    @app.get("/awaiting")
    async def awaiting() -> dict:
        await slow_await(CULPRIT_SECONDS)
        render_page(RENDER_SECONDS)
        return {"ok": True}

    @app.get("/sync-cpu")
    def sync_cpu() -> dict:
        slow_query_cpu(CULPRIT_SECONDS)
        render_page(RENDER_SECONDS)
        return {"ok": True}

    configure_perfmon(app=app)
    return app


_BUILDERS = {"flask_app": _flask_app, "fastapi_app": _fastapi_app}


def __getattr__(name: str) -> Any:
    """``culprits:flask_app`` / ``culprits:fastapi_app``: the app is built when first asked for."""
    if name in _BUILDERS:
        app = _BUILDERS[name]()
        globals()[name] = app
        return app
    raise AttributeError(name)
