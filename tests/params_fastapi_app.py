"""A FastAPI app whose slow routes take a JSON body model (tests/test_request_parameters.py)."""

import asyncio
import os
import sys
import time

import httpx
from fastapi import FastAPI
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from pydantic import BaseModel

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples"))

from otel_perfmon import configure_perfmon  # noqa: E402
from tracing_setup import setup_tracing  # noqa: E402

HTTPXClientInstrumentor().instrument(tracer_provider=setup_tracing("params-fastapi"))
app = FastAPI()


class Order(BaseModel):
    name: str
    password: str
    tags: list


@app.get("/health")
async def health():
    return {"ok": True}


@app.post("/orders")
async def orders(order: Order):
    await asyncio.sleep(0.4)
    return {"ok": order.name}


UPSTREAM = os.environ.get("EXAMPLE_UPSTREAM_URL", "")


@app.post("/enrich")
async def enrich(order: Order):
    """Calls an upstream once per tag: the outgoing-call N+1 (HTTPX client spans)."""
    async with httpx.AsyncClient() as client:
        for i in range(12):
            await client.get(f"{UPSTREAM}/items/{i}", params={"api_key": order.password, "page": 1})
    await asyncio.sleep(0.2)
    return {"ok": order.name}


@app.post("/sync-orders")
def sync_orders(order: Order):
    time.sleep(0.4)
    return {"ok": order.name}


perfmon = configure_perfmon(app=app)
