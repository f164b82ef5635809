"""One plugin mechanism for the three families: exporters, dedup stores, profiling policies.

A family has a configuration field, built-in names mapped to dotted paths, and an
entry-point group where third-party packages register more names
(``name = "package.module:Class"``), as OTel's SDK loads exporters and samplers by name.
Each family's base class (``ReportExporter``, ``DedupStore``, ``ProfilePolicy``) gives every
optional member a default, so a plugin implements only what it needs.

This module imports no plugin: :func:`check_spec` validates a configuration value (a known
name, a dict with a known ``type``, or an object with the family's required methods) without
importing the plugin modules, and :func:`load` imports a class on demand. So ``config.py``
can validate plugin fields without an import circle. Called at configure time only.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Tuple

from otel_perfmon.errors import ConfigurationError


@dataclass(frozen=True)
class Family:
    """A plugin family: its config ``field``, entry-point ``group``, ``builtins`` (name ->
    ``module:Class``) and the methods an object given directly must have (``required``)."""

    field: str
    group: str
    builtins: Mapping[str, str]
    required: Tuple[str, ...]
    what: str


EXPORTERS = Family(
    field="exporters", group="otel_perfmon.exporters", what="exporter type",
    builtins={
        "console": "otel_perfmon.exporters.console:ConsoleExporter",
        "webhook": "otel_perfmon.exporters.webhook:WebhookExporter",
        "slack": "otel_perfmon.exporters.slack:SlackExporter",
        "mattermost": "otel_perfmon.exporters.mattermost:MattermostExporter",
        "email": "otel_perfmon.exporters.email:EmailExporter",
        "apprise": "otel_perfmon.exporters.apprise:AppriseExporter",
        "otlp": "otel_perfmon.exporters.otlp:OtlpReportExporter",
    },
    required=("export",))

DEDUP_STORES = Family(
    field="dedup_store", group="otel_perfmon.dedup_stores", what="dedup store",
    builtins={
        "memory": "otel_perfmon.dedup.memory:MemoryDedupStore",
        "sqlite": "otel_perfmon.dedup.sqlite:SqliteDedupStore",
        "redis": "otel_perfmon.dedup.redis:RedisDedupStore",
        "rediss": "otel_perfmon.dedup.redis:RedisDedupStore",
        "unix": "otel_perfmon.dedup.redis:RedisDedupStore",
    },
    required=("claim", "record_occurrence", "release", "get", "entries"))

PROFILE_POLICIES = Family(
    field="profile_policy", group="otel_perfmon.profile_policies", what="profile policy",
    builtins={
        "adaptive": "otel_perfmon.policy.adaptive:AdaptiveProfilePolicy",
        "always": "otel_perfmon.policy.always:AlwaysProfilePolicy",
    },
    required=("should_profile", "on_span_end"))


def _entry_points(group: str) -> Dict[str, Any]:
    from importlib.metadata import entry_points

    if sys.version_info >= (3, 10):
        found = list(entry_points(group=group))
    else:  # Python 3.9: a dict of groups
        found = list(entry_points().get(group, []))  # type: ignore[attr-defined,unused-ignore]
    return {ep.name.lower(): ep for ep in found}


def available(family: Family) -> List[str]:
    """Every name usable for ``family``: built-ins and installed entry points, sorted."""
    return sorted(set(family.builtins) | set(_entry_points(family.group)))


def _unknown(family: Family, name: str) -> ConfigurationError:
    return ConfigurationError(f"{family.field}: unknown {family.what} {name!r}; "
                              f"available: {', '.join(available(family))}")


def check_name(family: Family, name: str) -> str:
    """The normalised (trimmed, lower-case) ``name`` if ``family`` knows it; else
    ConfigurationError naming the field, the name and the available ones."""
    key = name.strip().lower()
    if key in family.builtins or key in _entry_points(family.group):
        return key
    raise _unknown(family, name)


def is_plugin_object(family: Family, value: Any) -> bool:
    """True when ``value`` has every method ``family`` requires (duck typing, as OTel's
    processors accept any exporter with ``export``)."""
    return all(callable(getattr(value, method, None)) for method in family.required)


def load(family: Family, name: str) -> Any:
    """The class registered as ``name`` (built-in first, then the entry-point group).
    Raises ConfigurationError for an unknown name or a plugin that fails to import."""
    key = name.strip().lower()
    target = family.builtins.get(key)
    try:
        if target is not None:
            module, _, attr = target.partition(":")
            return getattr(importlib.import_module(module), attr)
        entry_point = _entry_points(family.group).get(key)
        if entry_point is None:
            raise _unknown(family, name)
        return entry_point.load()
    except ImportError as exc:
        raise ConfigurationError(f"{family.field}: {family.what} {name!r} could not be imported: {exc}") from None
