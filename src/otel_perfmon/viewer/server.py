"""The viewer under uvicorn (no hand-written HTTP server); ``otel-perfmon serve`` runs it.

Importing this module needs no extra (Starlette and uvicorn are imported by :func:`serve`),
so :data:`DEFAULT_HOST` and :data:`DEFAULT_PORT` can be read without them.
"""

from __future__ import annotations

import ipaddress
import sys
from typing import Optional

#: Loopback only unless told otherwise: the reports hold request data.
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8484


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(report_dir: str, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, auth_token: Optional[str] = None,
          trace_url_template: Optional[str] = None, dedup_store: Optional[str] = "sqlite",
          log_level: str = "info") -> None:
    """Serve the viewer of ``report_dir`` on ``host``:``port`` until SIGINT/SIGTERM.

    Blocks the calling (main) thread. Indexes the directory before accepting requests.
    Warns on stderr when binding a non-loopback address without ``auth_token``. Raises
    ``ImportError`` when the viewer extra is missing, ``ValueError`` for an invalid template,
    ``OSError`` when the port cannot be bound (uvicorn exits the process with status 1 in
    that case).
    """
    import uvicorn

    from otel_perfmon.storage import display, is_remote
    from otel_perfmon.viewer import create_app  # a directory, or a remote store through a local mirror

    app = create_app(report_dir, auth_token=auth_token, trace_url_template=trace_url_template,
                     dedup_store=dedup_store)
    app.state.index.refresh(force=True)
    count = len(app.state.index)
    if not auth_token and not _is_loopback(host):
        print(f"otel-perfmon serve: WARNING: listening on {host} without --auth-token; anyone who can reach "
              "this port can read the reports", file=sys.stderr)
    shown = f"[{host}]" if ":" in host else host
    where = f"{display(report_dir)} (mirrored in {app.state.index.report_dir})" if is_remote(report_dir) else \
        app.state.index.report_dir
    print(f"otel-perfmon serve: {count} reports in {where}, indexed in "
          f"{app.state.index.last_scan_seconds * 1000:.0f} ms; http://{shown}:{port}/reports", file=sys.stderr,
          flush=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level, proxy_headers=False, server_header=False)
