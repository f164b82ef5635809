"""Exporter specs (instances, ``{"type": ...}`` dicts, names) and the plugin registry.

Names resolve through :mod:`otel_perfmon._plugins` (built-ins, then the entry-point group
``otel_perfmon.exporters``, ``name = "package.module:Class"``). Imports no exporter module
until one is built.
A name given alone is built with the class's ``from_env(environ)`` when it has one
(reading its ``OTEL_PERFMON_*`` variables), else with no arguments.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable, List, Mapping, Optional

from otel_perfmon import _plugins
from otel_perfmon.errors import ConfigurationError

_logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = _plugins.EXPORTERS.group


def available_exporters() -> List[str]:
    """Names usable in ``exporters=[...]`` / ``OTEL_PERFMON_EXPORTERS``."""
    return _plugins.available(_plugins.EXPORTERS)


def exporter_class(name: str) -> Callable[..., Any]:
    """The class (factory) registered as ``name``; raises ConfigurationError if unknown."""
    return _plugins.load(_plugins.EXPORTERS, name)  # type: ignore[no-any-return]


def _is_instance(spec: Any) -> bool:
    return _plugins.is_plugin_object(_plugins.EXPORTERS, spec)


def validate_exporter_specs(specs: Any) -> List[Any]:
    """Check the shape of the ``exporters`` field; raises ConfigurationError naming the item."""

    if isinstance(specs, str):
        specs = [s.strip() for s in specs.split(",") if s.strip()]
    if not isinstance(specs, (list, tuple)):
        raise ConfigurationError(f"exporters must be a list, got {specs!r}")
    for spec in specs:
        if _is_instance(spec):
            continue
        if isinstance(spec, str):
            _plugins.check_name(_plugins.EXPORTERS, spec)
        elif isinstance(spec, Mapping):
            if not isinstance(spec.get("type"), str):
                raise ConfigurationError(f"exporters: a dict needs a string 'type', got {dict(spec)!r}")
            _plugins.check_name(_plugins.EXPORTERS, spec["type"])
        else:
            raise ConfigurationError(
                f"exporters: expected an exporter instance, a dict with 'type' or a name, got {spec!r}")
    return list(specs)


def build_exporters(specs: List[Any], environ: Optional[Mapping[str, str]] = None,
                    timeout_seconds: Optional[float] = None) -> List[Any]:
    """Instantiate validated specs. Raises ConfigurationError naming exporter and field.

    ``timeout_seconds`` (the resolved ``export_timeout_seconds``) becomes the
    ``timeout_seconds`` of exporters built here from a name or a dict without one.
    """

    environ = os.environ if environ is None else environ
    built = []
    for spec in specs:
        if _is_instance(spec):
            built.append(spec)
            continue
        if isinstance(spec, str):
            name, options = spec, None
        else:
            options = {k: v for k, v in spec.items() if k != "type"}
            name = spec["type"]
        cls = exporter_class(name)
        try:
            if options is None:
                from_env = getattr(cls, "from_env", None)
                exporter = from_env(environ) if from_env else cls()
            else:
                exporter = cls(**options)
            if timeout_seconds is not None and hasattr(exporter, "timeout_seconds") \
                    and "timeout_seconds" not in (options or {}):
                exporter.timeout_seconds = timeout_seconds
            built.append(exporter)
        except ConfigurationError:
            raise
        except TypeError as exc:
            raise ConfigurationError(f"exporters: {name}: {exc}") from None
    return built
