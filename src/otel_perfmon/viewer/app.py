"""The viewer's Starlette application: pages, JSON API, report files, login.

Routes (all below the mount point when mounted):

==============================  ==========================================================
``GET /``                        redirect to ``/reports``
``GET /reports``                 list: filters ``service``, ``route``, ``method``, ``trace_id``,
                                 ``since``, ``until``; ``sort=time|duration``, ``order=desc|asc``,
                                 ``page``, ``per_page``
``GET /reports/{id}``            report page (the page ``report_url_template`` points to)
``GET /reports/{id}/tree``       the report's self-contained ``<id>.html`` (sandboxed)
``GET /reports/{id}/download``   zip of ``<id>.html``, ``<id>.md``, ``<id>.json`` and
                                 ``<id>.speedscope.json`` (when the report has one)
``GET /reports/{id}/speedscope.json``  the report's speedscope flame-graph file (a download)
``GET /static/speedscope/``      speedscope's own build (``make speedscope-assets``), which
                                 opens ``#profileURL=<the file above>``; absent without it
``GET /routes``                  one row per service + method + route: its reports and the
                                 numbers of every request (``sort=recent|p95|count|slow``)
``GET /route``                   one route's reports over time (``service``, ``method``, ``route``)
``GET /api/reports``             JSON list, same filters and paging as ``/reports``
``GET /api/reports/{id}``        the report JSON
``GET /api/routes``              JSON of ``/routes`` (same ``service`` and ``sort``)
``GET|POST /login``, ``POST /logout``, ``GET /healthz``, ``GET /static/viewer.css``
==============================  ==========================================================

Report ids are checked with :func:`~otel_perfmon.report.ids.is_valid_report_id` before
any file is touched, and files are opened only when their real path is inside report_dir;
everything else answers 404. Pages are Jinja2 templates with autoescaping on.
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import os
import zipfile
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Tuple
from urllib.parse import parse_qs, quote, urlencode

import jinja2
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from otel_perfmon._options import parse_int
from otel_perfmon.report.ids import is_valid_report_id
from otel_perfmon.report.render import CONTENT_SECURITY_POLICY as REPORT_FILE_CSP
from otel_perfmon.viewer import auth
from otel_perfmon.viewer.index import (
    ROUTE_SORT_KEYS,
    ReportFilter,
    ReportIndex,
    ReportSummary,
    RouteRow,
    dedup_reader,
    format_time,
    json_object,
    parse_time,
    route_stats_reader,
)

DEFAULT_PER_PAGE = 50
MAX_PER_PAGE = 500
MAX_LOGIN_BODY_BYTES = 8192
#: Placeholders a trace-URL template may use (each value is URL-quoted when substituted).
TRACE_URL_PLACEHOLDERS = ("trace_id", "span_id", "report_id", "service_name")

#: Every page's policy: no script at all, nothing loaded from elsewhere, never framed.
PAGE_CSP = ("default-src 'none'; style-src 'self'; img-src 'self' data:; frame-src 'self'; "
            "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
#: The report file's own policy, plus a sandbox: its scripts run in an opaque origin that
#: cannot read the viewer's pages, cookies or API. Framed by the viewer's report page only.
TREE_CSP = REPORT_FILE_CSP + "; sandbox allow-scripts allow-popups; frame-ancestors 'self'"
#: speedscope's page only (its build under /static/speedscope/): its own script and the
#: WebAssembly it bundles (no JS eval: its protobuf.js probes for Node's require with eval and
#: does without), its stylesheet, font and images, inline styles (its CSS-in-JS), and
#: fetching the profile file from here, the same origin, only.
SPEEDSCOPE_CSP = ("default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self' 'unsafe-inline'; "
                  "img-src 'self' data:; font-src 'self'; connect-src 'self'; "
                  "form-action 'none'; base-uri 'none'; frame-ancestors 'none'")
#: Where ``make speedscope-assets`` unpacks speedscope's ``dist/release`` (git-ignored).
SPEEDSCOPE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static", "speedscope")
_SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
                     "Cache-Control": "no-store"}
#: Added by :class:`~otel_perfmon.viewer.auth.SecurityHeadersMiddleware` to every response
#: that does not set its own (redirects, 401, 404, 405, 413, 429 included).
DEFAULT_RESPONSE_HEADERS = {**_SECURITY_HEADERS, "Content-Security-Policy": PAGE_CSP, "X-Frame-Options": "DENY"}
_TRACE_ID_HEX = frozenset("0123456789abcdef")
#: Put first into a report file served sandboxed: in an opaque origin ``localStorage`` throws,
#: which stops pyinstrument's viewer from rendering; this gives it an in-memory stand-in.
STORAGE_SHIM = (
    b'<script>(function(){function mem(){var d={};return{getItem:function(k){return Object.prototype.'
    b'hasOwnProperty.call(d,k)?d[k]:null},setItem:function(k,v){d[k]=String(v)},removeItem:function(k)'
    b'{delete d[k]},clear:function(){d={}},key:function(i){return Object.keys(d)[i]||null},'
    b'get length(){return Object.keys(d).length}}}["localStorage","sessionStorage"].forEach(function(n)'
    b'{try{window[n].getItem("x")}catch(e){try{Object.defineProperty(window,n,{value:mem(),'
    b'configurable:true})}catch(e2){}}})})();</script>')


@dataclass(frozen=True)
class ViewerSettings:
    """What :func:`create_app` was given (see there)."""

    report_dir: str
    auth_token: Optional[str]
    trace_url_template: Optional[str]
    title: str
    #: speedscope's build (a directory with its index.html), or None when it is not installed
    speedscope_dir: Optional[str] = None


class BadRequest(ValueError):
    """A query parameter is invalid; answered with 400 and the message."""


def trace_url(template: Optional[str], data: Dict[str, Any]) -> Optional[str]:
    """``template`` with ``{trace_id}``, ``{span_id}``, ``{report_id}``, ``{service_name}``
    replaced by the URL-quoted values of ``data``; ``None`` without a template or a valid
    32-hex trace id. Plain replacement, not ``str.format``: Grafana URLs contain braces."""
    trace_id = str(data.get("trace_id") or "")
    if not template or len(trace_id) != 32 or not set(trace_id) <= _TRACE_ID_HEX:
        return None
    url = template
    for name in TRACE_URL_PLACEHOLDERS:
        url = url.replace("{" + name + "}", quote(str(data.get(name) or ""), safe=""))
    return url


def validate_trace_url_template(template: Optional[str]) -> Optional[str]:
    """Return ``template`` (or ``None``); raise ``ValueError`` unless it is an http(s) URL
    containing ``{trace_id}``."""
    if not template:
        return None
    if not template.lower().startswith(("http://", "https://")):
        raise ValueError(f"trace_url_template must start with http:// or https://, got {template!r}")
    if "{trace_id}" not in template:
        raise ValueError(f"trace_url_template must contain {{trace_id}}, got {template!r}")
    return template


def _parse_bound(value: str, name: str, end_of_day: bool) -> Optional[float]:
    value = value.strip()
    if not value:
        return None
    seconds = parse_time(value)
    if seconds is None:
        raise BadRequest(f"{name} must be an ISO-8601 date or date-time, got {value[:40]!r}")
    if end_of_day and len(value) == 10:  # a bare date: the whole day is included
        seconds += 86400 - 1e-6
    return seconds


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name, "")
    if not raw:
        return default
    try:
        return min(max(parse_int(raw), low), high)
    except ValueError:
        raise BadRequest(f"{name} must be an integer, got {raw[:20]!r}") from None


def _filters(request: Request) -> ReportFilter:
    q = request.query_params
    return ReportFilter(service=q.get("service", ""), route=q.get("route", ""), method=q.get("method", "").strip(),
                        trace_id=q.get("trace_id", "").strip(),
                        since=_parse_bound(q.get("since", ""), "since", False),
                        until=_parse_bound(q.get("until", ""), "until", True))


def _sort(request: Request) -> Tuple[str, bool]:
    sort = request.query_params.get("sort", "time")
    order = request.query_params.get("order", "desc")
    if sort not in ("time", "duration"):
        raise BadRequest(f"sort must be time or duration, got {sort[:20]!r}")
    if order not in ("asc", "desc"):
        raise BadRequest(f"order must be asc or desc, got {order[:20]!r}")
    return sort, order == "desc"


class Viewer:
    """The endpoints, sharing one :class:`ReportIndex`. Sync endpoints run in Starlette's
    thread pool (they read files); async ones only touch memory."""

    def __init__(self, settings: ViewerSettings, index: ReportIndex) -> None:
        self.settings = settings
        self.index = index
        self.real_dir = os.path.realpath(settings.report_dir)
        self.templates = jinja2.Environment(
            # "report/..." is the report renderers' template directory (shared profile wording)
            loader=jinja2.ChoiceLoader([
                jinja2.PackageLoader("otel_perfmon.viewer", "templates"),
                jinja2.PrefixLoader({"report": jinja2.PackageLoader("otel_perfmon.report", "templates")})]),
            autoescape=True, trim_blocks=True, lstrip_blocks=True)
        self.templates.filters["when"] = format_time
        self.templates.filters["ms"] = _milliseconds
        self.csrf_key = auth.csrf_key(settings.auth_token)
        #: failed logins per client address; its ``clock`` is the tests' seam
        self.throttle = auth.LoginThrottle()

    # --- helpers ------------------------------------------------------------------------
    def _render(self, request: Request, name: str, status: int = 200, response_headers: Optional[Dict[str, str]] = None,
                **context: Any) -> HTMLResponse:
        root: str = request.scope.get("root_path", "").rstrip("/")

        def url(path: str, **params: Any) -> str:
            query = urlencode([(k, v) for k, v in params.items() if v not in (None, "")])
            return root + path + ("?" + query if query else "")

        csrf, new_nonce = None, None
        if self.settings.auth_token:  # the login and logout forms carry a CSRF token
            nonce = auth.request_cookie(request.scope, auth.CSRF_COOKIE_NAME)
            if not nonce:
                nonce = auth.new_csrf_nonce()
                # a script's POST (not a browser) needs no CSRF token: it gets no cookie either
                if request.method in ("GET", "HEAD") or auth.is_browser_request(request.scope):
                    new_nonce = nonce
            csrf = auth.csrf_token(self.csrf_key, nonce)
        html = self.templates.get_template(name).render(
            url=url, title=self.settings.title, auth=bool(self.settings.auth_token), csrf_token=csrf, **context)
        response = HTMLResponse(html, status_code=status, headers={**_SECURITY_HEADERS, **(response_headers or {}),
                                                                   "Content-Security-Policy": PAGE_CSP})
        if new_nonce is not None:
            response.set_cookie(auth.CSRF_COOKIE_NAME, new_nonce, path=(root or "/"), httponly=True,
                                samesite="strict", secure=request.url.scheme == "https")
        return response

    def _file(self, report_id: str, suffix: str) -> Optional[str]:
        """Path of ``<report_id>.<suffix>`` if the id is valid and the file's real path is a
        regular file directly inside report_dir; else ``None``. No file is read."""
        if not is_valid_report_id(report_id):
            return None
        path = os.path.join(self.real_dir, f"{report_id}.{suffix}")
        real = os.path.realpath(path)
        if os.path.dirname(real) != self.real_dir or not os.path.isfile(real):
            return None
        return real

    def _load(self, report_id: str) -> Optional[Dict[str, Any]]:
        path = self._file(report_id, "json")
        if path is None:
            return None
        try:
            with open(path, "rb") as handle:
                data = json.loads(handle.read())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _not_found(self, request: Request) -> Response:
        if auth.route_path(request.scope).startswith("/api/"):
            return JSONResponse({"error": "not found"}, status_code=404, headers=_SECURITY_HEADERS)
        return self._render(request, "error.html", status=404, message="No such report.")

    def _bad_request(self, request: Request, exc: BadRequest) -> Response:
        if auth.route_path(request.scope).startswith("/api/"):
            return JSONResponse({"error": str(exc)}, status_code=400, headers=_SECURITY_HEADERS)
        return self._render(request, "error.html", status=400, message=str(exc))

    def _summary_json(self, request: Request, r: ReportSummary) -> Dict[str, Any]:
        entry = self.index.dedup_entry(r.report_id)
        root = request.scope.get("root_path", "").rstrip("/")
        return {
            "report_id": r.report_id, "service_name": r.service_name, "method": r.method or None,
            "route": r.route, "path": r.path, "status_code": r.status_code, "duration_ms": r.duration_ms,
            "threshold_ms": r.threshold_ms, "trace_id": r.trace_id, "span_id": r.span_id,
            "start_time": r.start_time, "fingerprint": r.fingerprint,
            "mode": r.mode or None, "coverage": r.coverage,
            "occurrences": entry.count if entry else None,
            "last_seen": format_time(entry.last_seen).replace(" ", "T") if entry else None,
            "worst_duration_ms": entry.worst_duration_ms if entry else None,
            "url": f"{root}/reports/{r.report_id}",
        }

    # --- pages --------------------------------------------------------------------------
    async def home(self, request: Request) -> Response:
        return RedirectResponse(request.scope.get("root_path", "").rstrip("/") + "/reports", status_code=303)

    async def healthz(self, request: Request) -> Response:
        return PlainTextResponse("ok", headers=_SECURITY_HEADERS)

    def _query(self, request: Request) -> Any:
        """(page, sort, descending) for the list filters of ``request``; raises BadRequest."""
        flt = _filters(request)
        sort, descending = _sort(request)
        per_page = _int_param(request, "per_page", DEFAULT_PER_PAGE, 1, MAX_PER_PAGE)
        page = self.index.query(flt, sort, descending, _int_param(request, "page", 1, 1, 10**9), per_page)
        return page, sort, descending

    def list_page(self, request: Request) -> Response:
        try:
            page, sort, descending = self._query(request)
        except BadRequest as exc:
            return self._bad_request(request, exc)
        q = request.query_params
        params = {k: q.get(k, "") for k in ("service", "route", "method", "trace_id", "since", "until")}
        return self._render(request, "list.html", page=page, rows=self._rows(page.items), params=params,
                            sort=sort, order="desc" if descending else "asc", per_page=page.per_page,
                            services=self.index.services(), methods=self.index.methods(),
                            routes=self.index.routes(), total_reports=len(self.index))

    def _rows(self, items: Iterable[ReportSummary]) -> List[Dict[str, Any]]:
        rows = []
        for r in items:
            entry = self.index.dedup_entry(r.report_id)
            rows.append({"r": r, "occurrences": entry.count if entry else None,
                         "last_seen": entry.last_seen if entry else None})
        return rows

    def report_page(self, request: Request) -> Response:
        report_id = request.path_params["report_id"]
        data = self._load(report_id)
        if data is None:
            return self._not_found(request)
        self.index.get(report_id)  # a report newer than the listing: rescan now, so the list shows it
        http = json_object(data.get("http"))
        profile = json_object(data.get("profile"))
        headers = json_object(data.get("headers"))
        raw_hotspots = profile.get("hotspots")
        hotspots = [h for h in raw_hotspots if isinstance(h, dict)] if isinstance(raw_hotspots, list) else []
        host = json_object(data.get("host"))
        versions = data.get("earlier_versions")
        earlier = [dict(v, trace_url=trace_url(self.settings.trace_url_template,
                                               {**data, "trace_id": v.get("trace_id"), "span_id": v.get("span_id")}))
                   for v in (versions if isinstance(versions, list) else []) if isinstance(v, dict)]
        return self._render(request, "report.html", report_id=report_id, data=data, http=http, profile=profile,
                            summary=_profile_summary(profile), earlier_versions=earlier,
                            headers=headers, hotspots=hotspots, host=host,
                            entry=self.index.dedup_entry(report_id),
                            trace_url=trace_url(self.settings.trace_url_template, data),
                            has_tree=self._file(report_id, "html") is not None,
                            flame_graph=self._flame_graph(request, report_id))

    def _flame_graph(self, request: Request, report_id: str) -> Optional[Dict[str, Any]]:
        """The report page's flame-graph links: ``file`` (the speedscope file's URL) and
        ``viewer`` (speedscope opening it, or None when speedscope is not installed); None
        when the report has no speedscope file."""
        if self._file(report_id, "speedscope.json") is None:
            return None
        root = request.scope.get("root_path", "").rstrip("/")
        file_url = f"{root}/reports/{report_id}/speedscope.json"
        viewer = None
        if self.settings.speedscope_dir:  # a same-origin URL: speedscope's page may fetch only from here
            viewer = f"{root}/static/speedscope/index.html#profileURL={quote(file_url, safe='')}"
        return {"file": file_url, "viewer": viewer, "name": f"{report_id}.speedscope.json"}

    def report_tree(self, request: Request) -> Response:
        path = self._file(request.path_params["report_id"], "html")
        if path is None:
            return self._not_found(request)
        with open(path, "rb") as handle:
            body = handle.read()
        head = body.find(b"<head>")
        if head >= 0:
            body = body[:head + 6] + STORAGE_SHIM + body[head + 6:]
        return Response(body, media_type="text/html; charset=utf-8",
                        headers={**_SECURITY_HEADERS, "Content-Security-Policy": TREE_CSP,
                                 "X-Frame-Options": "SAMEORIGIN"})

    def report_speedscope(self, request: Request) -> Response:
        report_id = request.path_params["report_id"]
        path = self._file(report_id, "speedscope.json")
        if path is None:
            return self._not_found(request)
        with open(path, "rb") as handle:
            body = handle.read()
        return Response(body, media_type="application/json", headers={
            **_SECURITY_HEADERS, "Content-Disposition": f'attachment; filename="{report_id}.speedscope.json"'})

    def report_download(self, request: Request) -> Response:
        report_id = request.path_params["report_id"]
        paths = [(suffix, self._file(report_id, suffix)) for suffix in ("html", "md", "json", "speedscope.json")]
        if paths[2][1] is None:
            return self._not_found(request)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for suffix, path in paths:
                if path is not None:
                    archive.write(path, f"{report_id}.{suffix}")
        return Response(buffer.getvalue(), media_type="application/zip", headers={
            **_SECURITY_HEADERS, "Content-Disposition": f'attachment; filename="perfmon-{report_id}.zip"'})

    def _route_rows(self, request: Request) -> Tuple[List[RouteRow], str, str]:
        """(rows, sort, service) of ``/routes`` and ``/api/routes``; raises BadRequest."""
        sort = request.query_params.get("sort", "recent")
        if sort not in ROUTE_SORT_KEYS:
            raise BadRequest(f"sort must be one of {', '.join(ROUTE_SORT_KEYS)}, got {sort[:20]!r}")
        service = request.query_params.get("service", "")
        return self.index.route_table(sort, service), sort, service

    def routes_page(self, request: Request) -> Response:
        try:
            rows, sort, service = self._route_rows(request)
        except BadRequest as exc:
            return self._bad_request(request, exc)
        return self._render(request, "routes.html", rows=rows, sort=sort, service=service,
                            services=self.index.route_services())

    def api_routes(self, request: Request) -> Response:
        try:
            rows, sort, service = self._route_rows(request)
        except BadRequest as exc:
            return self._bad_request(request, exc)
        root = request.scope.get("root_path", "").rstrip("/")
        return JSONResponse({"sort": sort, "routes": [_route_json(root, r) for r in rows]}, headers=_SECURITY_HEADERS)

    def route_page(self, request: Request) -> Response:
        q = request.query_params
        try:
            flt = ReportFilter(service=q.get("service", ""), method=q.get("method", ""),
                               route=q.get("route", ""),
                               since=_parse_bound(q.get("since", ""), "since", False),
                               until=_parse_bound(q.get("until", ""), "until", True))
        except BadRequest as exc:
            return self._bad_request(request, exc)
        if not flt.route:
            return self._bad_request(request, BadRequest("route is required"))
        page = self.index.query(flt, "time", False, 1, 10**9)
        return self._render(request, "route.html", flt=flt, rows=self._rows(reversed(page.items)),
                            chart=_chart(page.items), total=page.total)

    # --- API ----------------------------------------------------------------------------
    def api_list(self, request: Request) -> Response:
        try:
            page, sort, descending = self._query(request)
        except BadRequest as exc:
            return self._bad_request(request, exc)
        return JSONResponse({"total": page.total, "page": page.page, "per_page": page.per_page,
                             "pages": page.pages, "sort": sort, "order": "desc" if descending else "asc",
                             "reports": [self._summary_json(request, r) for r in page.items]},
                            headers=_SECURITY_HEADERS)

    def api_report(self, request: Request) -> Response:
        data = self._load(request.path_params["report_id"])
        if data is None:
            return self._not_found(request)
        return JSONResponse(data, headers=_SECURITY_HEADERS)

    # --- login --------------------------------------------------------------------------
    async def login_form(self, request: Request) -> Response:
        if not self.settings.auth_token:
            return RedirectResponse(request.scope.get("root_path", "").rstrip("/") + "/reports", status_code=303)
        return self._render(request, "login.html", next=auth.safe_next(request.query_params.get("next")),
                            error=None)

    @staticmethod
    async def _form(request: Request) -> Optional[Dict[str, List[str]]]:
        """The url-encoded body of a POST, or ``None`` when it is larger than MAX_LOGIN_BODY_BYTES."""
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_LOGIN_BODY_BYTES:
                return None
        return parse_qs(body.decode("utf-8", "replace"), max_num_fields=10)

    def _csrf_failed(self, request: Request, form: Dict[str, List[str]]) -> bool:
        return not auth.csrf_ok(request.scope, self.csrf_key, (form.get(auth.CSRF_FIELD) or [""])[0])

    async def login_submit(self, request: Request) -> Response:
        token = self.settings.auth_token
        root = request.scope.get("root_path", "").rstrip("/")
        if not token:
            return RedirectResponse(root + "/reports", status_code=303)
        client = request.client.host if request.client else ""
        wait = self.throttle.retry_after(client)
        if wait:  # locked out: the token is not even looked at
            return self._too_many(request, wait, "/reports")
        form = await self._form(request)
        if form is None:
            return PlainTextResponse("request body too large", status_code=413)
        target = auth.safe_next((form.get("next") or [""])[0])
        if self._csrf_failed(request, form):
            return self._render(request, "login.html", status=403, next=target,
                                error="The form expired; please log in again.")
        if not auth.token_matches((form.get("token") or [""])[0], token):
            wait = self.throttle.failed(client)
            if self.throttle.failure_pause_seconds > 0:
                await asyncio.sleep(self.throttle.failure_pause_seconds)  # the event loop stays free
            if wait:
                return self._too_many(request, wait, target)
            return self._render(request, "login.html", status=401, next=target, error="Wrong token.")
        self.throttle.succeeded(client)
        response = RedirectResponse(root + target, status_code=303, headers={"Cache-Control": "no-store"})
        response.set_cookie(auth.COOKIE_NAME, auth.cookie_value(token), max_age=auth.COOKIE_MAX_AGE_SECONDS,
                            path=(root or "/"), httponly=True, samesite="strict",
                            secure=request.url.scheme == "https")
        return response

    def _too_many(self, request: Request, wait: int, target: str) -> Response:
        return self._render(request, "login.html", status=429, response_headers={"Retry-After": str(wait)}, next=target,
                            error=f"Too many failed logins: try again in {wait} s.")

    async def logout(self, request: Request) -> Response:
        root = request.scope.get("root_path", "").rstrip("/")
        form = await self._form(request)
        if form is None:
            return PlainTextResponse("request body too large", status_code=413)
        if self.settings.auth_token and self._csrf_failed(request, form):
            return self._render(request, "error.html", status=403,
                                message="The form expired; reload the page and log out again.")
        response = RedirectResponse(root + "/login", status_code=303)
        response.delete_cookie(auth.COOKIE_NAME, path=(root or "/"), httponly=True, samesite="strict")
        return response

    async def stylesheet(self, request: Request) -> Response:
        return Response(_stylesheet(), media_type="text/css", headers={
            "X-Content-Type-Options": "nosniff", "Cache-Control": "max-age=3600"})


def _route_json(root: str, row: RouteRow) -> Dict[str, Any]:
    """One ``/api/routes`` item: the route, its numbers of every request (null without any)
    and its reports' totals (0 without any)."""
    stats, group = row.stats, row.group
    query = urlencode({"service": row.service_name, "method": row.method, "route": row.route})
    return {
        "service_name": row.service_name, "method": row.method or None, "route": row.route,
        "fingerprint": row.fingerprint or None,
        "requests": stats.count if stats else None, "slow_requests": stats.slow if stats else None,
        "p50_ms": round(stats.p50_ms, 3) if stats else None, "p95_ms": round(stats.p95_ms, 3) if stats else None,
        "p99_ms": round(stats.p99_ms, 3) if stats else None, "max_ms": round(stats.max_ms, 3) if stats else None,
        "first_seen": format_time(stats.first_seen).replace(" ", "T") if stats else None,
        "reports": group.reports if group else 0, "occurrences": group.occurrences if group else 0,
        "worst_duration_ms": group.worst_duration_ms if group else None,
        "last_seen": format_time(row.last_seen).replace(" ", "T") if row.last_seen else None,
        "url": f"{root}/route?{query}",
    }


def _real(value: Any) -> Optional[float]:
    """``value`` as a finite float, or ``None`` (bools, strings and NaN are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _profile_summary(profile: Dict[str, Any]) -> Dict[str, Any]:
    """The report JSON's ``profile`` object reduced to what the page shows, each field
    ``None`` when missing or malformed: ``mode`` (str), ``coverage`` (0..1), ``sample_count``
    (int >= 0), ``interval_seconds`` (> 0)."""
    mode = profile.get("mode")
    coverage = _real(profile.get("coverage"))
    count = profile.get("sample_count")
    interval = _real(profile.get("interval_seconds"))
    return {"mode": mode if isinstance(mode, str) and mode else None,
            "coverage": coverage if coverage is not None and 0.0 <= coverage <= 1.0 else None,
            "sample_count": count if isinstance(count, int) and not isinstance(count, bool) and count >= 0 else None,
            "interval_seconds": interval if interval is not None and interval > 0 else None}


def _milliseconds(value: Any) -> str:
    """``1,234.5`` for a number; ``""`` for anything else (a malformed report must still render)."""
    if isinstance(value, (bool, jinja2.Undefined)):
        return ""
    try:
        return f"{float(value):,.1f}"
    except (TypeError, ValueError):
        return ""


def _chart(items: List[ReportSummary], width: int = 720, height: int = 180) -> Dict[str, Any]:
    """Points (x, y in px) of duration over time for the route page's inline SVG."""
    if not items:
        return {"points": [], "width": width, "height": height, "max_ms": 0.0}
    t0, t1 = items[0].start_ts, items[-1].start_ts
    span = (t1 - t0) or 1.0
    threshold = max(r.threshold_ms for r in items)
    top = _nice_ceiling(max(max(r.duration_ms for r in items), threshold))
    pad = 10

    def y(ms: float) -> float:
        return round(height - pad - max(ms, 0.0) / top * (height - 2 * pad), 1)

    points = [{"x": round(pad + (r.start_ts - t0) / span * (width - 2 * pad), 1), "y": y(r.duration_ms), "r": r}
              for r in items]
    return {"points": points, "width": width, "height": height, "max_ms": top, "threshold_ms": threshold,
            "threshold_y": y(threshold), "start": t0, "end": t1}


def _nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 5 x 10^k that is >= ``value`` (a chart's top)."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * power >= value:
            return float(step * power)
    return float(10 * power)


_CSS: List[bytes] = []


def _stylesheet() -> bytes:
    if not _CSS:
        from importlib import resources

        _CSS.append(resources.files("otel_perfmon.viewer").joinpath("static/viewer.css").read_bytes())
    return _CSS[0]


def create_app(report_dir: str, auth_token: Optional[str] = None, trace_url_template: Optional[str] = None,
               dedup_store: Optional[str] = "sqlite", refresh_interval_seconds: float = 2.0,
               title: str = "otel-perfmon reports", speedscope_dir: Optional[str] = SPEEDSCOPE_DIR) -> Starlette:
    """The viewer as an ASGI app (Starlette), to run with uvicorn or mount in your own app.

    ``report_dir``: the directory with ``<report_id>.json/.html/.md``. ``auth_token``: when
    set, every page and API call needs ``Authorization: Bearer <token>`` or the login cookie.
    ``trace_url_template``: e.g. ``http://localhost:16686/trace/{trace_id}`` (Jaeger) to link
    each report to its trace. ``dedup_store``: where occurrence counts are read (``sqlite``,
    a ``redis://`` URL, or ``None``). ``refresh_interval_seconds``: how often the listing
    rescans report_dir. ``speedscope_dir``: speedscope's build, served at
    ``/static/speedscope/`` when it holds an ``index.html`` (``make speedscope-assets``); without
    it the report page offers the ``.speedscope.json`` download only. Raises ``ValueError``
    for an invalid template. Mount it with
    ``starlette.routing.Mount("/perfmon", app=create_app(...))`` or
    ``app.mount("/perfmon", create_app(...))`` in FastAPI; for Flask see
    :func:`otel_perfmon.viewer.create_wsgi_app`.
    """
    if speedscope_dir and not os.path.isfile(os.path.join(speedscope_dir, "index.html")):
        speedscope_dir = None
    settings = ViewerSettings(os.path.abspath(report_dir), auth_token or None,
                              validate_trace_url_template(trace_url_template), title, speedscope_dir)
    index = ReportIndex(settings.report_dir, dedup_reader(dedup_store, settings.report_dir),
                        refresh_interval_seconds, route_stats=route_stats_reader(dedup_store, settings.report_dir))
    viewer = Viewer(settings, index)
    routes: List[BaseRoute] = [
        Route("/", viewer.home, methods=["GET"]),
        Route("/healthz", viewer.healthz, methods=["GET"]),
        Route("/reports", viewer.list_page, methods=["GET"]),
        Route("/reports/{report_id}", viewer.report_page, methods=["GET"]),
        Route("/reports/{report_id}/tree", viewer.report_tree, methods=["GET"]),
        Route("/reports/{report_id}/download", viewer.report_download, methods=["GET"]),
        Route("/reports/{report_id}/speedscope.json", viewer.report_speedscope, methods=["GET"]),
        Route("/routes", viewer.routes_page, methods=["GET"]),
        Route("/route", viewer.route_page, methods=["GET"]),
        Route("/api/reports", viewer.api_list, methods=["GET"]),
        Route("/api/reports/{report_id}", viewer.api_report, methods=["GET"]),
        Route("/api/routes", viewer.api_routes, methods=["GET"]),
        Route("/login", viewer.login_form, methods=["GET"]),
        Route("/login", viewer.login_submit, methods=["POST"]),
        Route("/logout", viewer.logout, methods=["POST"]),
        Route("/static/viewer.css", viewer.stylesheet, methods=["GET"]),
    ]
    if settings.speedscope_dir:  # its files reveal no report data: open, like the stylesheet
        speedscope: Any = auth.SecurityHeadersMiddleware(
            StaticFiles(directory=settings.speedscope_dir, html=True),
            headers={**_SECURITY_HEADERS, "Cache-Control": "no-cache", "Content-Security-Policy": SPEEDSCOPE_CSP,
                     "X-Frame-Options": "DENY"})
        routes.append(Mount("/static/speedscope", app=speedscope))
    app = Starlette(routes=routes, middleware=[
        Middleware(auth.SecurityHeadersMiddleware, headers=DEFAULT_RESPONSE_HEADERS),
        Middleware(auth.TokenAuthMiddleware, token=settings.auth_token)])
    app.state.viewer = viewer
    app.state.index = index
    app.state.throttle = viewer.throttle
    return app
