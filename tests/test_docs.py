"""The documentation cannot drift: docs/configuration.md is the generator's output, every
setting has a variable and a description, relative links (and their #anchors) resolve, and the project stays
self-contained (no file points outside the repository)."""

import dataclasses
import importlib.util
import os
import re

import pytest

from otel_perfmon import config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")


def _generator():
    spec = importlib.util.spec_from_file_location("generate_config", os.path.join(DOCS, "generate_config.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


generator = _generator()


def _markdown_files():
    files = [os.path.join(ROOT, "README.md")]
    files += sorted(os.path.join(DOCS, name) for name in os.listdir(DOCS) if name.endswith(".md"))
    return files


def test_configuration_page_is_the_generators_output():
    with open(generator.OUTPUT, encoding="utf-8") as handle:
        page = handle.read()
    assert page == generator.render(), "docs/configuration.md is stale: run .venv/bin/python docs/generate_config.py"


def test_every_field_has_a_variable_and_a_description():
    docs = generator.env_docs()
    for item in dataclasses.fields(config.PerfmonConfig):
        assert item.name in config._ENV, f"PerfmonConfig.{item.name} has no row in config._ENV"
        variable = config._ENV[item.name][0]
        assert variable in docs, f"{variable} is not a constant in environment_variables.py"
        assert docs[variable], f"{variable} has no '.. envvar::' docstring in environment_variables.py"


def test_every_variable_has_a_description():
    missing = [name for name, text in generator.env_docs().items() if not text]
    assert not missing, f"constants without an '.. envvar::' docstring in environment_variables.py: {missing}"


def test_a_stated_default_matches_the_code():
    docs = generator.env_docs()
    defaults = config.PerfmonConfig()
    for name, (variable, _parse) in config._ENV.items():
        _meaning, stated = generator.split_default(docs.get(variable, ""))
        if stated and stated.startswith("`") and stated.endswith("`"):
            assert stated.strip("`") == generator.format_default(getattr(defaults, name)), \
                f"{variable}: its docstring says Default: {stated}, PerfmonConfig says {getattr(defaults, name)!r}"


def test_generator_tables_cover_every_variable():
    page = generator.render()
    for variable in generator.env_docs():
        assert f"| {variable} |" in page, variable


_LINK = re.compile(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def _anchors(path):
    """GitHub's heading anchors of a Markdown file (lower case, punctuation dropped, spaces to -)."""
    with open(path, encoding="utf-8") as handle:
        text = re.sub(r"```.*?```", "", handle.read(), flags=re.S)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
            for heading in re.findall(r"^#+ (.+)$", text, flags=re.M)}


@pytest.mark.parametrize("path", _markdown_files(), ids=lambda p: os.path.relpath(p, ROOT))
def test_relative_links_point_to_existing_files(path):
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    text = re.sub(r"```.*?```", "", text, flags=re.S)  # code blocks hold no links
    broken = []
    for target in _LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):
            continue  # absolute URL (http:, mailto:)
        file_part, _, anchor = target.partition("#")
        resolved = os.path.normpath(os.path.join(os.path.dirname(path), file_part)) if file_part else path
        if not os.path.exists(resolved):
            broken.append(target)
        elif not resolved.startswith(ROOT + os.sep):
            broken.append(target + " (outside the repository)")
        elif anchor and resolved.endswith(".md") and anchor not in _anchors(resolved):
            broken.append(target + " (no such heading)")
    assert not broken, f"{os.path.relpath(path, ROOT)}: broken links {broken}"


def test_no_file_points_outside_the_repository():
    outside = ("..", "shared")  # joined below, so this file does not match itself
    needle = "/".join(outside)
    roots = ["README.md", "Makefile", "docs", "src", "tests", ".ci"]
    hits = []
    for entry in roots:
        start = os.path.join(ROOT, entry)
        paths = [start] if os.path.isfile(start) else [
            os.path.join(folder, name) for folder, dirs, names in os.walk(start)
            if "__pycache__" not in folder for name in names]
        for path in paths:
            try:
                with open(path, encoding="utf-8") as handle:
                    if needle in handle.read():
                        hits.append(os.path.relpath(path, ROOT))
            except (UnicodeDecodeError, OSError):
                continue  # binary files (images)
    assert not hits, f"files mentioning {needle}: {hits}"


def test_readme_keeps_the_entry_points_of_the_manual():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as handle:
        readme = handle.read()
    for needed in ("make demo", "make test", "configure_perfmon(", "opentelemetry-instrument",
                   "## Overhead and the profiling policy"):
        assert needed in readme, needed
    for page in ("configuration.md", "exporters.md", "viewer.md", "zero-code.md", "report-schema.md",
                 "contract.md", "performance.md"):
        assert f"(docs/{page})" in readme, page


def test_every_stats_key_is_documented_in_the_contract():
    from otel_perfmon.stats import STAT_KEYS

    with open(os.path.join(ROOT, "docs", "contract.md"), encoding="utf-8") as handle:
        contract = handle.read()
    missing = [key for key in STAT_KEYS + ("profiled_fraction",) if f"`{key}`" not in contract]
    assert not missing, f"docs/contract.md's stats() table lacks {missing}"
