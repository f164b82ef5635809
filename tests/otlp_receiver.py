"""A loopback OTLP/HTTP receiver for tests: decodes protobuf traces, logs and metrics.

``with OtlpReceiver() as rx:`` serves ``POST /v1/traces``, ``/v1/logs`` and ``/v1/metrics`` on
127.0.0.1:<rx.port> (``rx.endpoint`` is the value for ``OTEL_EXPORTER_OTLP_ENDPOINT``) and keeps
flattened, plain-Python views of what arrived: ``spans()``, ``logs()``, ``metric_points()``.
"""

from __future__ import annotations

import gzip
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest, ExportLogsServiceResponse
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

_KINDS = {"/v1/traces": (ExportTraceServiceRequest, ExportTraceServiceResponse),
          "/v1/logs": (ExportLogsServiceRequest, ExportLogsServiceResponse),
          "/v1/metrics": (ExportMetricsServiceRequest, ExportMetricsServiceResponse)}


def any_value(value: Any) -> Any:
    """A protobuf AnyValue as a Python value (bool stays bool, arrays become lists)."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind)


def key_values(items: Any) -> Dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in items}


class OtlpReceiver:
    """Thread-safe store of decoded OTLP requests, served by a ThreadingHTTPServer."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Dict[str, List[Any]] = {path: [] for path in _KINDS}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                kind = _KINDS.get(self.path)
                if kind is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                message = kind[0]()
                message.ParseFromString(body)
                with receiver._lock:
                    receiver.requests[self.path].append(message)
                payload = kind[1]().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="otlp-receiver", daemon=True)

    def __enter__(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _copy(self, path: str) -> List[Any]:
        with self._lock:
            return list(self.requests[path])

    def spans(self) -> List[Dict[str, Any]]:
        """Every received span: name, kind (int), trace_id/span_id (hex), attributes, resource."""
        out = []
        for request in self._copy("/v1/traces"):
            for resource_spans in request.resource_spans:
                resource = key_values(resource_spans.resource.attributes)
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        out.append({"name": span.name, "kind": span.kind, "trace_id": span.trace_id.hex(),
                                    "span_id": span.span_id.hex(), "attributes": key_values(span.attributes),
                                    "resource": resource})
        return out

    def logs(self) -> List[Dict[str, Any]]:
        """Every received log record: event_name, body, trace_id/span_id (hex), attributes, resource."""
        out = []
        for request in self._copy("/v1/logs"):
            for resource_logs in request.resource_logs:
                resource = key_values(resource_logs.resource.attributes)
                for scope_logs in resource_logs.scope_logs:
                    for record in scope_logs.log_records:
                        out.append({"event_name": record.event_name, "body": any_value(record.body),
                                    "severity_number": record.severity_number,
                                    "trace_id": record.trace_id.hex(), "span_id": record.span_id.hex(),
                                    "attributes": key_values(record.attributes), "resource": resource,
                                    "scope": scope_logs.scope.name})
        return out

    def metric_points(self) -> List[Dict[str, Any]]:
        """Every received data point: metric name, kind, value (sum/count), attributes."""
        out = []
        for request in self._copy("/v1/metrics"):
            for resource_metrics in request.resource_metrics:
                for scope_metrics in resource_metrics.scope_metrics:
                    for metric in scope_metrics.metrics:
                        kind = metric.WhichOneof("data")
                        data = getattr(metric, kind)
                        for point in data.data_points:
                            if kind == "histogram":
                                value = {"count": point.count, "sum": point.sum}
                            else:
                                value = point.as_int if point.WhichOneof("value") == "as_int" else point.as_double
                            out.append({"name": metric.name, "kind": kind, "unit": metric.unit, "value": value,
                                        "attributes": key_values(point.attributes)})
        return out
