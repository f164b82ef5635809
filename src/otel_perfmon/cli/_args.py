"""Option plumbing shared by the subcommands: the text parsers of :mod:`otel_perfmon._options`
used as argparse types and for environment-variable defaults, so each option has one rule."""

from __future__ import annotations

import argparse
import logging
import os
from typing import Callable, Mapping, Optional, TypeVar

T = TypeVar("T")

_logger = logging.getLogger("otel_perfmon.cli")


def arg_type(parse: Callable[[str], T], what: str) -> Callable[[str], T]:
    """``parse`` as an argparse ``type=``: a ``ValueError`` becomes argparse's usage error
    (exit 2) saying ``<what> ...: <reason>``."""

    def convert(text: str) -> T:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"invalid {what} {text!r}: {exc}") from None

    convert.__name__ = what  # argparse names the type in some messages
    return convert


def env_default(var: str, parse: Callable[[str], T], default: T,
                environ: Optional[Mapping[str, str]] = None) -> T:
    """The parsed value of environment variable ``var``, or ``default`` when it is unset or
    empty; an invalid value logs a warning and gives ``default`` (OpenTelemetry's convention)."""
    environ = os.environ if environ is None else environ
    raw = environ.get(var)
    if raw is None or not raw.strip():
        return default
    try:
        return parse(raw)
    except ValueError as exc:
        _logger.warning("otel-perfmon: ignoring %s=%r (%s); using the default %r", var, raw, exc, default)
        return default
