"""Exporter specs (instances, ``{"type": ...}`` dicts, names) and the plugin registry.

Built-in names map to classes in this package; third-party exporters register under the
entry-point group ``otel_perfmon.exporters`` (``name = "package.module:Class"``).
A name given alone is built with the class's ``from_env(environ)`` when it has one
(reading its ``OTEL_PERFMON_*`` variables), else with no arguments.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable, Dict, List, Mapping, Optional

_logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "otel_perfmon.exporters"

_BUILTINS: Dict[str, str] = {
    "console": "otel_perfmon.exporters.console:ConsoleExporter",
    "webhook": "otel_perfmon.exporters.webhook:WebhookExporter",
    "slack": "otel_perfmon.exporters.slack:SlackExporter",
    "mattermost": "otel_perfmon.exporters.mattermost:MattermostExporter",
    "email": "otel_perfmon.exporters.email:EmailExporter",
    "apprise": "otel_perfmon.exporters.apprise:AppriseExporter",
    "otlp": "otel_perfmon.exporters.otlp:OtlpReportExporter",
}


def _load(target: str) -> Any:
    import importlib

    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def _entry_points() -> Dict[str, Any]:
    from importlib.metadata import entry_points

    try:
        eps = entry_points(group=ENTRY_POINT_GROUP)  # type: ignore[call-arg]
    except TypeError:  # Python 3.9
        eps = entry_points().get(ENTRY_POINT_GROUP, [])  # type: ignore[attr-defined]
    return {ep.name: ep for ep in eps}


def available_exporters() -> List[str]:
    """Names usable in ``exporters=[...]`` / ``OTEL_PERFMON_EXPORTERS``."""
    return sorted(set(_BUILTINS) | set(_entry_points()))


def exporter_class(name: str) -> Callable[..., Any]:
    """The class (factory) registered as ``name``; raises ConfigurationError if unknown."""
    from otel_perfmon.errors import ConfigurationError

    key = name.strip().lower()
    if key in _BUILTINS:
        return _load(_BUILTINS[key])
    eps = _entry_points()
    if key in eps:
        return eps[key].load()
    raise ConfigurationError(
        f"exporters: unknown exporter type {name!r}; available: {', '.join(available_exporters())}")


def _is_instance(spec: Any) -> bool:
    return callable(getattr(spec, "export", None))


def validate_exporter_specs(specs: Any) -> List[Any]:
    """Check the shape of the ``exporters`` field; raises ConfigurationError naming the item."""
    from otel_perfmon.errors import ConfigurationError

    if isinstance(specs, str):
        specs = [s.strip() for s in specs.split(",") if s.strip()]
    if not isinstance(specs, (list, tuple)):
        raise ConfigurationError(f"exporters must be a list, got {specs!r}")
    for spec in specs:
        if _is_instance(spec):
            continue
        if isinstance(spec, str):
            exporter_class(spec)
        elif isinstance(spec, Mapping):
            if not isinstance(spec.get("type"), str):
                raise ConfigurationError(f"exporters: a dict needs a string 'type', got {dict(spec)!r}")
            exporter_class(spec["type"])
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
    from otel_perfmon.errors import ConfigurationError

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
