"""Report viewer: browse slow-request reports in a browser or through a JSON API.

Install the extra: ``pip install "otel-perfmon[viewer]"``.

Usage
-----
As a command (uvicorn, binds 127.0.0.1 unless told otherwise)::

    otel-perfmon serve --report-dir ./perfmon-reports --port 8484 \\
        --trace-url-template 'http://localhost:16686/trace/{trace_id}'

Inside your own app, behind your own auth (ASGI: Starlette / FastAPI)::

    from otel_perfmon.viewer import create_app
    fastapi_app.mount("/perfmon", create_app("./perfmon-reports", auth_token=token))

Inside a Flask app (WSGI, through a2wsgi)::

    from werkzeug.middleware.dispatcher import DispatcherMiddleware
    from otel_perfmon.viewer import create_wsgi_app
    flask_app.wsgi_app = DispatcherMiddleware(flask_app.wsgi_app,
                                              {"/perfmon": create_wsgi_app("./perfmon-reports")})

Point ``report_url_template`` at the report page so the slow span links to it:
``export OTEL_PERFMON_REPORT_URL_TEMPLATE=http://127.0.0.1:8484/reports/{report_id}``.

Configuration
-------------
::

    export OTEL_PERFMON_REPORT_DIR=./perfmon-reports        # --report-dir
    export OTEL_PERFMON_VIEWER_HOST=127.0.0.1               # --host
    export OTEL_PERFMON_VIEWER_PORT=8484                    # --port
    export OTEL_PERFMON_VIEWER_AUTH_TOKEN=...               # --auth-token (env keeps it out of `ps`)
    export OTEL_PERFMON_VIEWER_TRACE_URL_TEMPLATE='http://localhost:16686/trace/{trace_id}'
    export OTEL_PERFMON_DEDUP_STORE=sqlite                  # --dedup-store: occurrence counts

``report_dir`` may be a remote store's URL (``s3://bucket/prefix``, extra ``s3``): the viewer
then indexes a local mirror of it (docs/storage.md).

Pages and API routes are listed in :mod:`otel_perfmon.viewer.app`; the listing index is
described in :mod:`otel_perfmon.viewer.index`.
"""

from __future__ import annotations

import os
import re
from typing import Any, Optional


def create_app(report_dir: str, auth_token: Optional[str] = None, trace_url_template: Optional[str] = None,
               dedup_store: Optional[str] = "sqlite", refresh_interval_seconds: float = 2.0,
               title: str = "otel-perfmon reports") -> Any:
    """The viewer as a Starlette ASGI app; see :func:`otel_perfmon.viewer.app.create_app`.
    ``report_dir`` is a directory or a remote store's URL (``s3://bucket/prefix``: indexed
    through a local mirror, :func:`otel_perfmon.viewer.index.remote_index_dir`).

    Raises ``ImportError`` naming the extra when Starlette is not installed, ``ValueError``
    for an invalid ``trace_url_template`` or a URL whose file system is not installed.
    """
    try:
        from otel_perfmon.viewer.app import create_app as _create_app
    except ImportError as exc:
        raise ImportError(
            f"the report viewer needs the viewer extra: pip install 'otel-perfmon[viewer]' ({exc})") from exc
    from otel_perfmon.storage import check_report_dir, is_remote

    if not is_remote(report_dir):
        return _create_app(report_dir, auth_token=auth_token, trace_url_template=trace_url_template,
                           dedup_store=dedup_store, refresh_interval_seconds=refresh_interval_seconds, title=title)
    from otel_perfmon.storage import local_state_dir
    from otel_perfmon.viewer.index import dedup_reader, remote_index_dir, route_stats_reader

    check_report_dir(report_dir)
    directory, sync = remote_index_dir(report_dir)
    app = _create_app(directory, auth_token=auth_token, trace_url_template=trace_url_template, dedup_store=None,
                      refresh_interval_seconds=refresh_interval_seconds, title=title)
    state = local_state_dir(report_dir)  # a remote report_dir's SQLite dedup file is on the host
    app.state.index.attach_source(sync, dedup_reader(dedup_store, state), route_stats_reader(dedup_store, state))
    app.add_middleware(_SyncUnknownReports, index=app.state.index)
    return app


_REPORT_PATH = re.compile(r"^/(?:api/)?reports/([0-9a-z][0-9a-z-]{7,63})(?:/|$)")


class _SyncUnknownReports:
    """For a remote report_dir: a report page or file whose id the mirror does not hold yet (a
    link from a span written a moment ago, on any replica) syncs the mirror first (at most one
    listing a second, :meth:`otel_perfmon.viewer.index.ReportIndex.get`), in a worker thread."""

    def __init__(self, app: Any, index: Any) -> None:
        self.app = app
        self.index = index

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope.get("type") == "http":
            from otel_perfmon.viewer.auth import route_path

            match = _REPORT_PATH.match(route_path(scope))
            if match and not os.path.isfile(os.path.join(self.index.report_dir, match.group(1) + ".json")):
                import anyio.to_thread

                await anyio.to_thread.run_sync(self.index.get, match.group(1))
        await self.app(scope, receive, send)


def create_wsgi_app(report_dir: str, **options: Any) -> Any:
    """The viewer as a WSGI app (a2wsgi's ``ASGIMiddleware`` around :func:`create_app`), for
    Flask/Werkzeug (mount it with ``DispatcherMiddleware``) or any WSGI server.

    ``options`` are :func:`create_app`'s keywords. Requests run on a2wsgi's event-loop thread;
    the WSGI thread waits for each answer. Raises ``ImportError`` naming the extra when
    a2wsgi or Starlette is missing.
    """
    try:
        from a2wsgi import ASGIMiddleware
    except ImportError as exc:
        raise ImportError(
            f"the WSGI viewer needs the viewer extra: pip install 'otel-perfmon[viewer]' ({exc})") from exc
    return ASGIMiddleware(create_app(report_dir, **options))


__all__ = ["create_app", "create_wsgi_app"]
