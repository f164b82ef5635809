"""The kept report gets better, not stuck: a later occurrence with a clearly better call tree,
or a much slower one, rewrites the report under the same id; notifiers hear once, plus one
follow-up when it got much worse."""

from __future__ import annotations

import json
import os
import time

import pytest
from flask import Flask
from flask import request as flask_request
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_perfmon import configure_perfmon
from otel_perfmon.testing import InMemoryReportExporter

THRESHOLD = 0.1


def busy(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sum(range(200))


class FullWhenAsked:
    """Profile with pyinstrument only the requests that ask for it (``?full=1``)."""

    def should_profile(self, span):
        return "full=1" in str(span.attributes.get("http.target", span.attributes.get("url.query", "")))

    def on_span_end(self, name, duration_seconds, profiled, slow):
        return None


@pytest.fixture(params=["memory", "sqlite"])
def run(request, tmp_path):
    app = Flask("kept")

    @app.get("/work")
    def work():
        busy(float(flask_request.args["s"]))
        return "ok"

    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    exporter = InMemoryReportExporter()
    reports = str(tmp_path / "reports")
    perfmon = configure_perfmon(app=app, tracer_provider=provider, threshold_seconds=THRESHOLD, report_dir=reports,
                                dedup_store=request.param, exporters=[exporter], profile_policy=FullWhenAsked())
    client = app.test_client()

    def get(query: str) -> dict:
        assert client.get(f"/work?{query}").status_code == 200
        assert perfmon.force_flush(10)
        (name,) = [n for n in os.listdir(reports) if n.endswith(".json") and ".speedscope." not in n]
        with open(os.path.join(reports, name), encoding="utf-8") as handle:
            return json.load(handle)

    yield {"get": get, "perfmon": perfmon, "exporter": exporter, "spans": spans}
    perfmon.shutdown(timeout_seconds=2)


def test_better_and_much_slower_occurrences_replace_the_kept_report(run):
    get, exporter, perfmon = run["get"], run["exporter"], run["perfmon"]
    first = get("s=0.2")
    assert first["profile"]["mode"] == "sampled" and "earlier_versions" not in first
    assert len(exporter.reports) == 1

    # a full profile where the kept one is sampled: same id, new content, no new notification
    better = get("s=0.2&full=1")
    assert better["report_id"] == first["report_id"]
    assert better["profile"]["mode"] == "full" and better["trace_id"] != first["trace_id"]
    assert [v["trace_id"] for v in better["earlier_versions"]] == [first["trace_id"]]
    assert better["earlier_versions"][0]["mode"] == "sampled"
    assert len(exporter.reports) == 1

    # not better (sampled after full, about as slow): the kept report stays
    assert get("s=0.2")["trace_id"] == better["trace_id"]

    # much slower (>= 2x): replaced, and the window's one follow-up notification
    slower = get("s=0.5")
    assert slower["report_id"] == first["report_id"] and slower["duration_ms"] >= 500
    assert [v["trace_id"] for v in slower["earlier_versions"]] == [first["trace_id"], better["trace_id"]]
    assert len(exporter.reports) == 2 and exporter.reports[-1].duration_ms == slower["duration_ms"]

    # much slower again: replaced, no second follow-up
    worst = get("s=1.1")
    assert worst["duration_ms"] >= 1100 and len(worst["earlier_versions"]) == 3
    assert len(exporter.reports) == 2

    stats = perfmon.stats()
    assert stats["reports_created"] == 1 and stats["reports_replaced"] == 3
    assert stats["reports_deduplicated"] == 4
    entry = perfmon.store.get(first["fingerprint"])
    assert entry.count == 5 and entry.worst_duration_ms >= 1100
    # every slow span that the watchdog linked (one ending just past its threshold may end
    # before the watchdog's scan) links to the one report id
    linked = [s.attributes.get("perfmon.report.id") for s in run["spans"].get_finished_spans()]
    assert set(linked) - {None} == {first["report_id"]} and linked.count(None) <= 1
