"""Text limits for request-derived values in reports: one truncation rule. A leaf; any thread."""

from __future__ import annotations

#: Header values (and most other request-derived text) longer than this are truncated.
MAX_HEADER_VALUE_CHARS = 1000


def truncate(value: str, limit: int = MAX_HEADER_VALUE_CHARS) -> str:
    """``value`` cut to ``limit`` characters with a ``…[truncated N chars]`` marker."""
    if len(value) <= limit:
        return value
    return value[:limit] + f"…[truncated {len(value) - limit} chars]"
