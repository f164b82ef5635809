"""Write docs/configuration.md from the code, so the page cannot drift from it.

Run ``.venv/bin/python docs/generate_config.py`` after adding or changing a setting
(``--check`` exits 1 when the page is stale instead of writing it). ``tests/test_docs.py``
imports this file and compares :func:`render` with the page.

Sources: ``otel_perfmon.config._ENV`` (field -> (variable, parser)) and the defaults of
``PerfmonConfig`` give the settings table; the ``.. envvar::`` docstring after each constant
in ``src/otel_perfmon/environment_variables.py`` (read with ``ast``, not imported) gives each
variable's one-line meaning. Variables outside ``_ENV`` are the exporters' (notifiers') and
the viewer's (``OTEL_PERFMON_VIEWER_*``); they get tables of their own.
"""

from __future__ import annotations

import ast
import dataclasses
import os
import re
import sys
from typing import Any, Dict, List, Optional, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV_MODULE = os.path.join(ROOT, "src", "otel_perfmon", "environment_variables.py")
OUTPUT = os.path.join(ROOT, "docs", "configuration.md")

_DEFAULT = re.compile(r"\s*Default:\s*(.+?)\.?\s*$")
#: the exporter a notifier variable belongs to, by the word after OTEL_PERFMON_
_CHANNELS = {"SMTP": "email", "EMAIL": "email"}


def env_docs(path: str = ENV_MODULE) -> Dict[str, str]:
    """Variable name -> its docstring text as one line (without the ``.. envvar::`` line), for
    every string constant of ``path`` in file order; ``""`` for a constant without a docstring.

    A docstring belongs to the variable its ``.. envvar:: NAME`` line names (it is written
    right after that constant), so a constant slipped in between loses nothing."""
    with open(path, encoding="utf-8") as handle:
        body = ast.parse(handle.read(), path).body
    names: List[str] = []
    texts: Dict[str, str] = {}
    for node in body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)):
            names.append(node.value.value)
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            lines = node.value.value.strip().splitlines()
            match = re.match(r"\.\. envvar:: (\S+)\s*$", lines[0].strip()) if lines else None
            if match:
                texts[match.group(1)] = " ".join(line.strip() for line in lines[1:] if line.strip())
    return {name: texts.get(name, "") for name in names}


def split_default(text: str) -> Tuple[str, Optional[str]]:
    """``("meaning", "default")`` from a docstring line ending in ``Default: ...``; the default
    keeps its backquotes (``None`` when the text states none)."""
    head, sep, tail = text.rpartition("Default:")
    if not sep:
        return text.strip(), None
    match = _DEFAULT.match("Default:" + tail)
    return head.strip(), (match.group(1).strip() if match else tail.strip())


def format_default(value: Any) -> str:
    """A ``PerfmonConfig`` default as the docs spell it (also the spelling an ``.. envvar::``
    docstring's backquoted default must use)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "unset"
    if isinstance(value, float):
        return format(value, "g")
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value) if value else "empty"
    return str(value)


def settings() -> List[Tuple[str, str, Any, str]]:
    """``(field, variable, default, meaning)`` for every ``PerfmonConfig`` field, in field order
    (variable or meaning ``""`` when missing; the test fails on those)."""
    from otel_perfmon.config import _ENV, PerfmonConfig

    docs = env_docs()
    defaults = PerfmonConfig()
    rows = []
    for item in dataclasses.fields(PerfmonConfig):
        variable = _ENV.get(item.name, ("", None))[0]
        meaning, _ = split_default(docs.get(variable, ""))
        rows.append((item.name, variable, getattr(defaults, item.name), meaning))
    return rows


def other_variables() -> Tuple[List[Tuple[str, str, str, str]], List[Tuple[str, str, str]]]:
    """The variables outside ``_ENV``: ``(exporter, variable, meaning, default)`` rows of the
    notifiers and ``(variable, meaning, default)`` rows of the viewer."""
    from otel_perfmon.config import _ENV

    in_env = {variable for variable, _ in _ENV.values()}
    notifiers, viewer = [], []
    for variable, text in env_docs().items():
        if variable in in_env:
            continue
        meaning, default = split_default(text)
        word = variable[len("OTEL_PERFMON_"):].split("_")[0]
        if word == "VIEWER":
            viewer.append((variable, re.sub(r"^viewer:\s*", "", meaning), default or "required"))
        else:
            channel = _CHANNELS.get(word, word.lower())
            notifiers.append((channel, variable, re.sub(rf"^{channel}:\s*", "", meaning), default or "-"))
    return notifiers, viewer


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _default_cell(value: Any) -> str:
    if isinstance(value, (list, tuple)) and len(value) > 3:
        return "see [Headers and redaction](#headers-and-redaction)"
    return f"`{format_default(value)}`"


def render() -> str:
    """The text of docs/configuration.md."""
    from otel_perfmon.config import DEFAULT_CAPTURE_HEADERS, DEFAULT_REDACT_HEADERS
    from otel_perfmon.redaction import REDACTED, SENSITIVE_NAME_PARTS, SENSITIVE_QUERY_PARTS
    from otel_perfmon.report.capture import MAX_HEADER_VALUE_CHARS

    out = [
        "<!-- Generated by docs/generate_config.py from otel_perfmon.config and the docstrings of",
        "     src/otel_perfmon/environment_variables.py. Do not edit: run",
        "     .venv/bin/python docs/generate_config.py -->",
        "",
        "# Configuration",
        "",
        "Every setting is a keyword of `configure_perfmon()`, a field of `PerfmonConfig` and an",
        "environment variable. Keywords win over a `PerfmonConfig`'s non-default fields, which win over",
        "environment variables, which win over the defaults. Invalid explicit values raise",
        "`ConfigurationError` naming the field; invalid environment values log a warning and use the",
        "default (OpenTelemetry's convention). Lists in environment variables are comma-separated",
        "(whitespace trimmed); booleans accept true/false/1/0/yes/no. Units are in the names.",
        "",
        "## Settings",
        "",
        "| field | env var | default | meaning |",
        "|---|---|---|---|",
    ]
    for name, variable, default, meaning in settings():
        out.append(f"| {name} | {variable} | {_default_cell(default)} | {_cell(meaning)} |")
    quoted_parts = ", ".join(f"`{p}`" for p in SENSITIVE_NAME_PARTS)
    query_parts = ", ".join(f"`{p}`" for p in SENSITIVE_QUERY_PARTS[len(SENSITIVE_NAME_PARTS):])
    out += [
        "",
        "URL patterns (`include_urls`, `exclude_urls`) are shell-style globs matched against the request",
        "path and the route template (`/api/*` matches `/api/users/7`); `re:<regex>` gives a regular",
        "expression.",
        "",
        "`profile_policy`, `profile_budget`, `profile_explore_rate`, `profile_candidate_ratio`, the",
        "`sampler_*` settings and `inflight_multiple` are explained in the README's",
        "[Overhead and the profiling policy](../README.md#overhead-and-the-profiling-policy) and in",
        "[report-schema.md](report-schema.md#profile-modes-and-coverage) (profile modes and coverage).",
        "",
        "## Headers and redaction",
        "",
        f"Captured by default (`capture_headers`): {', '.join(DEFAULT_CAPTURE_HEADERS)}.",
        "",
        f"Always replaced by `{REDACTED}` (`redact_headers`): {', '.join(DEFAULT_REDACT_HEADERS)}, and any",
        f"header whose name contains {quoted_parts}. Query parameters named like these, or",
        f"containing {query_parts}, are redacted too. Header values longer than",
        f"{MAX_HEADER_VALUE_CHARS} characters are truncated with a marker.",
        "",
        "## Exporter and notifier variables",
        "",
        "A notifier named in `OTEL_PERFMON_EXPORTERS` reads its own variables; a missing required one",
        "raises `ConfigurationError` at configure time. In code, the same settings are the exporter's",
        "keywords (see [exporters.md](exporters.md)).",
        "",
        "| exporter | env var | default | meaning |",
        "|---|---|---|---|",
    ]
    notifiers, viewer = other_variables()
    for channel, variable, meaning, default in notifiers:
        out.append(f"| {channel} | {variable} | {_cell(default)} | {_cell(meaning)} |")
    out += [
        "",
        "## Viewer variables",
        "",
        "`otel-perfmon serve` (see [viewer.md](viewer.md)) reads these, and also `OTEL_PERFMON_REPORT_DIR`",
        "and `OTEL_PERFMON_DEDUP_STORE` (for occurrence counts); a command-line option wins over its",
        "variable.",
        "",
        "| env var | default | meaning |",
        "|---|---|---|",
    ]
    for variable, meaning, default in viewer:
        out.append(f"| {variable} | {_cell(default)} | {_cell(meaning)} |")
    return "\n".join(out) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    text = render()
    if "--check" in args:
        with open(OUTPUT, encoding="utf-8") as handle:
            stale = handle.read() != text
        if stale:
            print(f"{OUTPUT} is stale: run docs/generate_config.py", file=sys.stderr)
        return 1 if stale else 0
    with open(OUTPUT, "w", encoding="utf-8") as handle:
        handle.write(text)
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
