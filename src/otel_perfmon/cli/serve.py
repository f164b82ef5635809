"""``otel-perfmon serve``: argument parsing of the report viewer command (no Starlette import
until it runs; the server itself is :func:`otel_perfmon.viewer.server.serve`).

Options fall back to ``OTEL_PERFMON_VIEWER_*`` / ``OTEL_PERFMON_*`` environment variables;
an invalid environment value logs a warning and uses the default (OTel's convention).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Optional

from otel_perfmon import environment_variables as ev
from otel_perfmon._options import parse_optional_str, parse_port
from otel_perfmon.cli._args import arg_type, env_default
from otel_perfmon.viewer.server import DEFAULT_HOST, DEFAULT_PORT


def add_serve_command(commands: Any, config: Optional[Any] = None) -> None:
    """Add ``serve`` to an ``argparse`` subparsers object (from ``add_subparsers``);
    ``config`` is the :class:`~otel_perfmon.config.PerfmonConfig` giving the report_dir and
    dedup_store defaults (default: read from the environment)."""
    if config is None:
        from otel_perfmon.config import config_from_env

        config = config_from_env()
    serve = commands.add_parser(
        "serve", help="browse the reports in a web viewer (needs the viewer extra)",
        description="Serve the report viewer (list, report pages, JSON API) with uvicorn.")
    serve.add_argument("--report-dir", default=config.report_dir,
                       help="report directory or URL (s3://bucket/prefix, indexed through a local mirror); "
                            "default $OTEL_PERFMON_REPORT_DIR or ./perfmon-reports")
    serve.add_argument("--host",
                       default=env_default(ev.OTEL_PERFMON_VIEWER_HOST, parse_optional_str, None) or DEFAULT_HOST,
                       help=f"address to bind (default: ${ev.OTEL_PERFMON_VIEWER_HOST} or {DEFAULT_HOST})")
    serve.add_argument("--port", type=arg_type(parse_port, "port"),
                       default=env_default(ev.OTEL_PERFMON_VIEWER_PORT, parse_port, DEFAULT_PORT),
                       help=f"port (default: ${ev.OTEL_PERFMON_VIEWER_PORT} or {DEFAULT_PORT})")
    serve.add_argument("--auth-token", type=arg_type(parse_optional_str, "auth token"),
                       default=env_default(ev.OTEL_PERFMON_VIEWER_AUTH_TOKEN, parse_optional_str, None),
                       help="require this token (Bearer header or login form); prefer "
                            f"${ev.OTEL_PERFMON_VIEWER_AUTH_TOKEN}, which stays out of the process list")
    serve.add_argument("--trace-url-template", type=arg_type(parse_optional_str, "trace URL template"),
                       default=env_default(ev.OTEL_PERFMON_VIEWER_TRACE_URL_TEMPLATE, parse_optional_str, None),
                       help="link to the trace, with {trace_id} (also {span_id}, {report_id}, {service_name}), "
                            "e.g. http://localhost:16686/trace/{trace_id}; "
                            f"default ${ev.OTEL_PERFMON_VIEWER_TRACE_URL_TEMPLATE}")
    serve.add_argument("--dedup-store", default=config.dedup_store,
                       help="where occurrence counts are read: sqlite, a redis:// URL, or none "
                            "(default: $OTEL_PERFMON_DEDUP_STORE or sqlite)")
    serve.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                       help="uvicorn log level (default info)")
    serve.set_defaults(run=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    """Run the viewer until interrupted; returns the exit code (2 for a missing extra or a
    bad option)."""
    from otel_perfmon.viewer.server import serve

    try:
        serve(args.report_dir, host=args.host, port=args.port, auth_token=args.auth_token,
              trace_url_template=args.trace_url_template, dedup_store=args.dedup_store, log_level=args.log_level)
    except ImportError as exc:
        print(f"otel-perfmon serve needs the viewer extra: pip install 'otel-perfmon[viewer]' ({exc})",
              file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"otel-perfmon serve: {exc}", file=sys.stderr)
        return 2
    return 0
