"""Soak app, FastAPI (uvicorn): ``/r0`` .. ``/r4`` are ``async def`` (``asyncio.sleep``),
``/r5`` .. ``/r9`` plain ``def`` run in FastAPI's thread pool (``time.sleep``); each sleeps
``?slow=`` seconds (default: none) and answers this worker's pid. See soak_common.py."""

from __future__ import annotations

import asyncio
import os
import time

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse
from soak_common import EXCLUDED, ROUTES, mark, setup_tracing, slow_seconds, stats_payload

from otel_perfmon import configure_perfmon

setup_tracing()
app = FastAPI()


async def async_route(slow: str = "") -> PlainTextResponse:
    seconds = slow_seconds(slow)
    mark(bool(seconds))
    if seconds:
        await asyncio.sleep(seconds)
    return PlainTextResponse(str(os.getpid()))


def sync_route(slow: str = "") -> PlainTextResponse:
    seconds = slow_seconds(slow)
    mark(bool(seconds))
    if seconds:
        time.sleep(seconds)
    return PlainTextResponse(str(os.getpid()))


for index, path in enumerate(ROUTES):
    app.add_api_route(path, async_route if index < len(ROUTES) // 2 else sync_route, methods=["GET"])


@app.get("/health")
async def health() -> PlainTextResponse:
    return PlainTextResponse("ok")


@app.get("/perfmon-stats")
def perfmon_stats() -> dict:
    return stats_payload(perfmon)  # a sync route: force_flush waits in the thread pool


perfmon = configure_perfmon(app=app, exclude_urls=EXCLUDED)
