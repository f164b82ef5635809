"""Parsers for option values given as text (environment variables, CLI flags), shared by
the config table, the exporters and the viewer: one rule each.

Each parser takes the raw text and returns the value or raises ``ValueError`` with a short
reason; callers decide whether that warns and falls back (env vars) or raises
``ConfigurationError`` (explicit values). No I/O; any thread.
"""

from __future__ import annotations

from typing import List, Optional

_TRUE = ("true", "1", "yes")
_FALSE = ("false", "0", "no")


def parse_bool(text: str) -> bool:
    """``true/false/1/0/yes/no`` (case-insensitive, whitespace trimmed)."""
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError("expected true/false/1/0/yes/no")


def parse_list(text: str) -> List[str]:
    """Comma-separated items, whitespace trimmed, empty items dropped."""
    return [part.strip() for part in text.split(",") if part.strip()]


def parse_optional_str(text: str) -> Optional[str]:
    """The trimmed text, or None when it is empty."""
    return text.strip() or None


def parse_lower(text: str) -> str:
    """The trimmed, lower-cased text (names such as ``adaptive`` or ``sqlite``)."""
    return text.strip().lower()


def parse_float(text: str) -> float:
    """A decimal number (``float()`` rules, whitespace trimmed)."""
    return float(text.strip())


def parse_int(text: str) -> int:
    """A whole number (``int()`` rules, whitespace trimmed)."""
    return int(text.strip())


def parse_port(text: str) -> int:
    """A TCP port, 1..65535."""
    port = int(text.strip())
    if not 0 < port < 65536:
        raise ValueError("expected a port number 1-65535")
    return port


def parse_positive_int(text: str) -> int:
    """A whole number >= 1 (counts and limits)."""
    value = int(text.strip())
    if value < 1:
        raise ValueError("expected a whole number >= 1")
    return value
