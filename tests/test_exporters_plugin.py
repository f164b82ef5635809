"""Third-party exporters through a real ``otel_perfmon.exporters`` entry point: a distribution
(``.dist-info`` with ``entry_points.txt``) on ``sys.path`` of a subprocess, selected by name,
as a dict, through the real pipeline and through ``otel-perfmon test-notifiers``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from conftest import BIN, ROOT

PLUGIN = textwrap.dedent('''
    import json, os
    from otel_perfmon import ExportResult, ReportExporter


    class RecorderExporter(ReportExporter):
        """Appends one JSON line per report to ``path``."""

        name = "recorder"

        def __init__(self, path):
            self.path = path

        @classmethod
        def from_env(cls, environ):
            return cls(environ["RECORDER_PATH"])

        def export(self, report):
            with open(self.path, "a") as handle:
                handle.write(json.dumps({"report_id": report.report_id, "route": report.route,
                                         "html": os.path.exists(report.html_path)}) + "\\n")
            return ExportResult.SUCCESS
''')

PIPELINE = textwrap.dedent('''
    import sys, time
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import SpanKind
    from otel_perfmon import configure_perfmon
    from otel_perfmon.exporters.registry import available_exporters

    assert "recorder" in available_exporters(), available_exporters()
    provider = TracerProvider()
    perfmon = configure_perfmon(tracer_provider=provider, threshold_seconds=0.05, dedup_store="memory",
                                report_dir=sys.argv[2], exporters=[{"type": "recorder", "path": sys.argv[1]}])
    with provider.get_tracer("t").start_as_current_span(
            "GET /plugin", kind=SpanKind.SERVER, attributes={"http.method": "GET", "http.route": "/plugin"}):
        time.sleep(0.15)
    assert perfmon.force_flush(10)
    perfmon.shutdown(2)
    print(perfmon.stats()["reports_created"])
''')


def _install_plugin(root) -> str:
    site = root / "site"
    site.mkdir()
    (site / "perfmon_recorder.py").write_text(PLUGIN)
    info = site / "perfmon_recorder-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: perfmon-recorder\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[otel_perfmon.exporters]\nrecorder = perfmon_recorder:RecorderExporter\n")
    return str(site)


def _env(site: str, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_PERFMON_")}
    env["PYTHONPATH"] = site
    env.update(extra)
    return env


def _lines(path):
    with open(path) as handle:
        return [json.loads(line) for line in handle]


def test_plugin_through_the_pipeline(tmp_path):
    site = _install_plugin(tmp_path)
    out = tmp_path / "out.jsonl"
    script = tmp_path / "pipeline.py"
    script.write_text(PIPELINE)
    result = subprocess.run([sys.executable, str(script), str(out), str(tmp_path / "reports")], env=_env(site),
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1"
    [line] = _lines(out)
    assert line["route"] == "/plugin" and line["html"] is True
    assert os.path.exists(tmp_path / "reports" / f"{line['report_id']}.json")


def test_plugin_absent_without_the_distribution(tmp_path):
    script = tmp_path / "check.py"
    script.write_text("from otel_perfmon.exporters.registry import available_exporters\n"
                      "print('recorder' in available_exporters())\n")
    result = subprocess.run([sys.executable, str(script)], env=_env(str(tmp_path)), cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_plugin_by_name_through_test_notifiers(tmp_path):
    site = _install_plugin(tmp_path)
    out = tmp_path / "cli.jsonl"
    result = subprocess.run([os.path.join(BIN, "otel-perfmon"), "test-notifiers"],
                            env=_env(site, OTEL_PERFMON_EXPORTERS="recorder,console", RECORDER_PATH=str(out)),
                            cwd=str(tmp_path), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["recorder: ok", "console: ok"]
    [line] = _lines(out)
    assert line["route"] == "/otel-perfmon/test-notifiers" and line["html"] is True
