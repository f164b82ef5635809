"""collector-config/: the files parse, are consistent, and use the attribute keys the code sets.

Docker is not available in the test environment, so the stack is checked by parsing.
"""

from __future__ import annotations

import ast
import json
import os
import re

import pytest

yaml = pytest.importorskip("yaml")

from otel_perfmon import attributes as attr  # noqa: E402
from otel_perfmon.exporters import otlp  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FOLDER = os.path.join(ROOT, "collector-config")


def load_yaml(name):
    with open(os.path.join(FOLDER, name), encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def loki_name(key):
    """How Loki's OTLP ingestion names an attribute (structured metadata)."""
    return key.replace(".", "_")


@pytest.fixture(scope="module")
def collector():
    return load_yaml("otel-collector.yaml")


@pytest.fixture(scope="module")
def compose():
    return load_yaml("docker-compose.yaml")


def test_collector_receivers_and_pipelines_are_complete(collector):
    protocols = collector["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"].endswith(":4317") and protocols["http"]["endpoint"].endswith(":4318")
    pipelines = collector["service"]["pipelines"]
    for name, pipeline in pipelines.items():
        for kind in ("receivers", "processors", "exporters"):
            for component in pipeline.get(kind, []):
                assert component in collector[kind], f"{name}: {component} is not defined under {kind}"
        assert pipeline["processors"][0] == "memory_limiter", name
        assert pipeline["processors"][-1] == "batch", name
    traces = pipelines["traces"]
    assert "tail_sampling" in traces["processors"]
    endpoints = {collector["exporters"][e]["endpoint"].split("//")[-1].split(":")[0] for e in traces["exporters"]}
    assert {"jaeger", "tempo"} <= endpoints
    logs = pipelines["logs"]
    assert any("loki" in collector["exporters"][e]["endpoint"] for e in logs["exporters"])
    for extension in collector["service"].get("extensions", []):
        assert extension in collector["extensions"]


def test_tail_sampling_keeps_perfmon_slow_errors_and_a_baseline(collector):
    policies = collector["processors"]["tail_sampling"]["policies"]
    by_type = {p["type"]: p for p in policies}
    slow = by_type["boolean_attribute"]["boolean_attribute"]
    assert slow == {"key": attr.PERFMON_SLOW, "value": True}  # a real bool, as the span carries
    assert by_type["status_code"]["status_code"]["status_codes"] == ["ERROR"]
    assert 0 < by_type["probabilistic"]["probabilistic"]["sampling_percentage"] < 100


def test_logs_pipeline_keeps_only_report_events(collector):
    conditions = collector["processors"]["filter/perfmon-reports"]["logs"]["log_record"]
    assert conditions == [f'attributes["{attr.PERFMON_REPORT_ID}"] == nil']


def test_jaeger_ui_links_the_report_id():
    with open(os.path.join(FOLDER, "jaeger-ui.json"), encoding="utf-8") as handle:
        ui = json.load(handle)
    pattern, = [p for p in ui["linkPatterns"] if p["key"] == attr.PERFMON_REPORT_ID]
    assert pattern["type"] == "tags"
    # built from the id (Jaeger URL-encodes substituted values), never from perfmon.report.url
    assert pattern["url"].endswith("#{" + attr.PERFMON_REPORT_ID + "}")
    assert attr.PERFMON_REPORT_URL not in pattern["url"]
    jaeger = load_yaml("jaeger.yaml")
    assert jaeger["extensions"]["jaeger_query"]["ui"]["config_file"] == "/etc/jaeger/jaeger-ui.json"


def test_grafana_tempo_and_loki_link_to_the_report():
    sources = {d["uid"]: d for d in load_yaml("grafana/provisioning/datasources/datasources.yaml")["datasources"]}
    tempo, loki = sources["tempo"], sources["loki"]
    assert tempo["type"] == "tempo" and loki["type"] == "loki" and sources["jaeger"]["type"] == "jaeger"
    to_logs = tempo["jsonData"]["tracesToLogsV2"]
    assert to_logs["datasourceUid"] == "loki"
    assert loki_name(attr.PERFMON_REPORT_ID) in to_logs["query"] and "${__trace.traceId}" in to_logs["query"]
    fields = {f["matcherRegex"]: f for f in loki["jsonData"]["derivedFields"]}
    report_link = fields[loki_name(attr.PERFMON_REPORT_ID)]
    assert report_link["matcherType"] == "label" and report_link["url"].endswith("${__value.raw}")
    assert fields["trace_id"]["datasourceUid"] == "tempo"


def test_compose_starts_the_stack_and_links_agree(compose):
    services = compose["services"]
    assert {"collector", "jaeger", "tempo", "grafana", "app", "loki", "viewer"} <= set(services)
    assert "contrib" in services["collector"]["image"]
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert os.path.exists(os.path.join(FOLDER, source)), source
    app = services["app"]
    assert app["command"][0] == "opentelemetry-instrument"
    env = app["environment"]
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://collector:4318"
    assert "otlp" in env["OTEL_PERFMON_EXPORTERS"].split(",")
    # the span's perfmon.report.url, the Jaeger link and the Grafana link point to the same page
    template = env["OTEL_PERFMON_REPORT_URL_TEMPLATE"]
    with open(os.path.join(FOLDER, "jaeger-ui.json"), encoding="utf-8") as handle:
        jaeger_url = json.load(handle)["linkPatterns"][0]["url"]
    assert jaeger_url == template.replace("{report_id}", "#{" + attr.PERFMON_REPORT_ID + "}")
    grafana = load_yaml("grafana/provisioning/datasources/datasources.yaml")
    loki = next(d for d in grafana["datasources"] if d["uid"] == "loki")
    grafana_url = next(f["url"] for f in loki["jsonData"]["derivedFields"]
                       if f["matcherRegex"] == loki_name(attr.PERFMON_REPORT_ID))
    assert grafana_url == template.replace("{report_id}", "${__value.raw}")
    build = app["build"]
    assert os.path.exists(os.path.join(FOLDER, build["context"], build["dockerfile"]))


def test_the_example_app_has_no_perfmon_code():
    for path in (os.path.join(ROOT, "examples", "zero_code_app.py"),
                 os.path.join(ROOT, "tests", "apps", "flask_plain.py"),
                 os.path.join(ROOT, "tests", "apps", "fastapi_plain.py")):
        with open(path, encoding="utf-8") as handle:
            tree = ast.parse(handle.read())
        imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                    for alias in node.names}
        imported |= {(node.module or "").split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert not imported & {"otel_perfmon", "opentelemetry"}, path


def test_readme_walks_from_compose_up_to_the_link():
    with open(os.path.join(FOLDER, "README.md"), encoding="utf-8") as handle:
        text = handle.read()
    assert "docker compose up" in text and attr.PERFMON_REPORT_ID in text
    assert re.search(r"localhost:16686", text) and re.search(r"localhost:3000", text)
    assert otlp.EVENT_NAME in text
