"""Exceptions of otel-perfmon. A leaf module: it imports nothing of the package, so every
validator (config, exporters, stores, policies, the viewer) can raise these without import
circles (structlog's ``exceptions.py`` does the same)."""

from __future__ import annotations


class ConfigurationError(ValueError):
    """An explicit configuration value is invalid; the message names the field and value.

    Raised at configure time (``configure_perfmon``, an exporter's or store's constructor),
    never from a span hook. Invalid *environment* values do not raise: they are logged as a
    warning and the default is used (OpenTelemetry's convention).
    """
