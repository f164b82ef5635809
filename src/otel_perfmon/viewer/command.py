"""The ``serve`` subcommand of ``otel-perfmon`` (argument parsing only; no Starlette import).

Options fall back to ``OTEL_PERFMON_VIEWER_*`` / ``OTEL_PERFMON_*`` environment variables;
an invalid environment value logs a warning and uses the default (OTel's convention).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

from otel_perfmon import environment_variables as ev

_logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8484


def _env_port() -> int:
    raw = os.environ.get(ev.OTEL_PERFMON_VIEWER_PORT, "").strip()
    if not raw:
        return DEFAULT_PORT
    try:
        port = int(raw)
        if 0 <= port <= 65535:
            return port
    except ValueError:
        pass
    _logger.warning("otel-perfmon: invalid %s=%r, using %d", ev.OTEL_PERFMON_VIEWER_PORT, raw, DEFAULT_PORT)
    return DEFAULT_PORT


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"port must be an integer, got {value!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0-65535, got {port}")
    return port


def add_serve_command(commands: Any) -> None:
    """Add ``serve`` to an ``argparse`` subparsers object (from ``add_subparsers``)."""
    from otel_perfmon.config import config_from_env

    env = config_from_env()
    serve = commands.add_parser(
        "serve", help="browse the reports in a web viewer (needs the viewer extra)",
        description="Serve the report viewer (list, report pages, JSON API) with uvicorn.")
    serve.add_argument("--report-dir", default=env.report_dir,
                       help="report directory (default: $OTEL_PERFMON_REPORT_DIR or ./perfmon-reports)")
    serve.add_argument("--host", default=os.environ.get(ev.OTEL_PERFMON_VIEWER_HOST, "").strip() or DEFAULT_HOST,
                       help=f"address to bind (default: ${ev.OTEL_PERFMON_VIEWER_HOST} or {DEFAULT_HOST})")
    serve.add_argument("--port", type=_port, default=_env_port(),
                       help=f"port (default: ${ev.OTEL_PERFMON_VIEWER_PORT} or {DEFAULT_PORT})")
    serve.add_argument("--auth-token", default=os.environ.get(ev.OTEL_PERFMON_VIEWER_AUTH_TOKEN) or None,
                       help=f"require this token (Bearer header or login form); prefer ${ev.OTEL_PERFMON_VIEWER_AUTH_TOKEN}, "
                            "which stays out of the process list")
    serve.add_argument("--trace-url-template",
                       default=os.environ.get(ev.OTEL_PERFMON_VIEWER_TRACE_URL_TEMPLATE) or None,
                       help="link to the trace, with {trace_id} (also {span_id}, {report_id}, {service_name}), "
                            "e.g. http://localhost:16686/trace/{trace_id}; "
                            f"default ${ev.OTEL_PERFMON_VIEWER_TRACE_URL_TEMPLATE}")
    serve.add_argument("--dedup-store", default=env.dedup_store,
                       help="where occurrence counts are read: sqlite, a redis:// URL, or none "
                            "(default: $OTEL_PERFMON_DEDUP_STORE or sqlite)")
    serve.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                       help="uvicorn log level (default info)")
    serve.set_defaults(run=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    """Run the viewer until interrupted; returns the exit code (2 for a missing extra or a
    bad option)."""
    try:
        from otel_perfmon.viewer.server import serve
    except ImportError as exc:
        print(f"otel-perfmon serve needs the viewer extra: pip install 'otel-perfmon[viewer]' ({exc})",
              file=sys.stderr)
        return 2
    try:
        serve(args.report_dir, host=args.host, port=args.port, auth_token=args.auth_token,
              trace_url_template=args.trace_url_template, dedup_store=args.dedup_store, log_level=args.log_level)
    except ValueError as exc:
        print(f"otel-perfmon serve: {exc}", file=sys.stderr)
        return 2
    return 0
