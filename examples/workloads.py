"""The work the example routes do: CPU-bound, blocking I/O and async I/O stand-ins.

``EXAMPLE_SLOW_SECONDS`` (default 1.2) sets how long the slow routes take.
"""

import asyncio
import hashlib
import os
import time

SLOW_SECONDS = float(os.environ.get("EXAMPLE_SLOW_SECONDS", "1.2"))


def checksum_rows(rows: int) -> str:
    digest = hashlib.sha256()
    for row in range(rows):
        digest.update(f"row-{row}".encode())
    return digest.hexdigest()


def crunch_numbers(deadline: float) -> int:
    """CPU-bound work: many small Python calls until ``deadline`` (time.monotonic seconds)."""
    total = 0
    while time.monotonic() < deadline:
        total += sum(i * i for i in range(500))
        checksum_rows(20)
    return total


def load_from_slow_backend(seconds: float) -> dict:
    """Blocking I/O: stands in for a slow database or HTTP call."""
    time.sleep(seconds)
    return {"rows": 3}


async def fetch_from_slow_service(seconds: float) -> dict:
    """Async I/O: stands in for a slow HTTP or database call."""
    await asyncio.sleep(seconds)
    return {"rows": 3}
