"""Report ids and report timestamps: one format each, used by the pipeline, the CLI, the
viewer and the test helpers. Pure functions; any thread."""

from __future__ import annotations

import datetime as _dt
import re
import secrets
import time
from typing import Optional

_SAFE_ID = re.compile(r"^[0-9a-z][0-9a-z-]{7,63}$")


def new_report_id(now: Optional[float] = None) -> str:
    """A sortable, file-name-safe id such as ``20261122-095000-1a2b3c4d`` (UTC time of
    ``now``, seconds since the epoch, default the current time, plus 32 random bits)."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(time.time() if now is None else now))
    return f"{stamp}-{secrets.token_hex(4)}"


def is_valid_report_id(report_id: str) -> bool:
    """True when ``report_id`` matches ``[0-9a-z][0-9a-z-]{7,63}`` (safe as a file name)."""
    return bool(_SAFE_ID.match(report_id))


def iso_utc(time_ns: int) -> str:
    """``2026-11-22T09:00:00.123456Z`` from nanoseconds since the epoch."""
    moment = _dt.datetime.fromtimestamp(time_ns / 1e9, tz=_dt.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
