"""Which names are sensitive, and what replaces their values: one rule for headers, query
parameters and every other request-derived name. Pure functions; any thread."""

from __future__ import annotations

import re
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


#: Request parameters (form fields, JSON keys) are redacted when their lower-cased name contains
#: one of these: sentry-python's EventScrubber DEFAULT_DENYLIST, matched as parts (broader than
#: its exact names), plus the header parts above.
SENSITIVE_PARAMETER_PARTS: Tuple[str, ...] = SENSITIVE_QUERY_PARTS + (
    "passwd", "pwd", "apikey", "api_key", "credentials", "privatekey", "private_key", "csrf", "xsrf",
    "sessionid", "cookie", "authorization", "sid", "card", "cvv", "cvc", "iban", "ssn")
_CARD_DIGITS = re.compile(r"^[0-9][0-9 -]{11,22}[0-9]$")


def is_sensitive_parameter(name: str) -> bool:
    """True when a form field or JSON key looks secret (see ``SENSITIVE_PARAMETER_PARTS``)."""
    lowered = str(name).lower()
    return any(part in lowered for part in SENSITIVE_PARAMETER_PARTS)


def looks_like_card_number(value: str) -> bool:
    """True for 13–19 digits (spaces or dashes allowed) passing the Luhn check."""
    if not _CARD_DIGITS.match(value):
        return False
    digits = [int(c) for c in value if c.isdigit()]
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for index, digit in enumerate(reversed(digits)):
        if index % 2:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0
