"""Which names are sensitive, and what replaces their values: one rule for headers, query
parameters and every other request-derived name. Pure functions; any thread."""

from __future__ import annotations

from typing import Iterable, Tuple

#: Any header (and query parameter) whose lower-cased name contains one of these is redacted.
SENSITIVE_NAME_PARTS: Tuple[str, ...] = ("token", "secret", "password", "session")
#: Query parameters are also redacted when their name contains one of these.
SENSITIVE_QUERY_PARTS: Tuple[str, ...] = SENSITIVE_NAME_PARTS + ("key", "auth", "signature", "credential")
REDACTED = "[REDACTED]"


def is_sensitive(name: str, redact: Iterable[str] = ()) -> bool:
    """True when ``name`` (any case) is in ``redact`` (lower-cased names) or contains a
    sensitive part (``token``, ``secret``, ``password``, ``session``)."""
    lowered = name.lower()
    return lowered in redact or any(part in lowered for part in SENSITIVE_NAME_PARTS)


def is_sensitive_query_name(name: str) -> bool:
    """True when a query parameter's name looks secret (the header parts plus ``key``,
    ``auth``, ``signature``, ``credential``)."""
    lowered = name.lower()
    return any(part in lowered for part in SENSITIVE_QUERY_PARTS)
