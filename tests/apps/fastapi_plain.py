"""A plain FastAPI app for the zero-code tests: no OpenTelemetry or otel_perfmon code at all.

``APP_SLOW_SECONDS`` (default 0.6) sets how long ``/slow`` and odd ``/items/{id}`` take.
"""

import asyncio
import os

from fastapi import FastAPI

SLOW_SECONDS = float(os.environ.get("APP_SLOW_SECONDS", "0.6"))

app = FastAPI()


async def wait_for_backend(seconds: float) -> None:
    await asyncio.sleep(seconds)


@app.get("/health")
async def health():
    return {"ok": True}


@app.get("/fast")
async def fast():
    return {"ok": True}


@app.get("/slow")
async def slow():
    await wait_for_backend(SLOW_SECONDS)
    return {"ok": True}


@app.get("/items/{item_id}")
async def item(item_id: int, q: str = ""):
    if item_id % 2:
        await wait_for_backend(SLOW_SECONDS)
    return {"id": item_id, "q": q}
