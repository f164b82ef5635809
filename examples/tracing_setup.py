"""OpenTelemetry SDK set-up shared by the example apps.

Spans go to ``$EXAMPLE_SPAN_DIR/spans-<pid>.jsonl`` (one JSON span per line, through the
SDK's ConsoleSpanExporter) when that variable is set, to an OTLP/HTTP collector when
``OTEL_EXPORTER_OTLP_ENDPOINT`` is set, and nowhere otherwise. The service name comes from
``OTEL_SERVICE_NAME`` (default given by the app).
"""

import os

from opentelemetry import trace
from opentelemetry.sdk.resources import OTELResourceDetector, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor


def setup_tracing(default_service_name: str) -> TracerProvider:
    """Create the SDK TracerProvider, add the exporters, and set it globally."""
    resource = Resource.create({"service.name": default_service_name}).merge(OTELResourceDetector().detect())
    provider = TracerProvider(resource=resource)
    span_dir = os.environ.get("EXAMPLE_SPAN_DIR")
    if span_dir:
        os.makedirs(span_dir, exist_ok=True)
        # opened lazily per process: gunicorn forks workers after importing the app.
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(
            out=_PerProcessFile(span_dir), formatter=lambda span: span.to_json(indent=None) + "\n")))
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return provider


class _PerProcessFile:
    """A text sink writing to spans-<pid>.jsonl, reopened in each forked worker."""

    def __init__(self, directory: str) -> None:
        self._directory = directory
        self._pid = None
        self._file = None

    def write(self, text: str) -> None:
        if self._pid != os.getpid():
            self._file = open(os.path.join(self._directory, f"spans-{os.getpid()}.jsonl"), "a", encoding="utf-8")
            self._pid = os.getpid()
        self._file.write(text)

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()
