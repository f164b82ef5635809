"""Token authentication for the viewer: ``Authorization: Bearer <token>`` or a login cookie.

:class:`TokenAuthMiddleware` is a plain ASGI middleware in front of every route. With a
token set, a request passes when its Bearer token equals the token, or its cookie carries an
HMAC of the token (so the token itself never sits in a cookie); comparisons are
constant-time (:func:`hmac.compare_digest`). Otherwise an HTML navigation (GET asking for
``text/html``) is redirected to ``/login``, anything else gets ``401`` with
``WWW-Authenticate: Bearer``. ``/login`` (GET form, POST submit), ``/healthz`` and
``/static/`` stay open: they reveal no report data.
"""

from __future__ import annotations

import hashlib
import hmac
from http.cookies import SimpleCookie
from typing import Any, Awaitable, Callable, Dict, Mapping, Optional
from urllib.parse import quote

COOKIE_NAME = "otel_perfmon_viewer"
COOKIE_MAX_AGE_SECONDS = 12 * 3600
OPEN_PATHS = ("/login", "/healthz")
OPEN_PREFIXES = ("/static/",)

Scope = Dict[str, Any]
Receive = Callable[[], Awaitable[Dict[str, Any]]]
Send = Callable[[Dict[str, Any]], Awaitable[None]]


def cookie_value(token: str) -> str:
    """The login cookie's value for ``token``: hex HMAC-SHA256, not the token itself."""
    return hmac.new(token.encode("utf-8"), b"otel-perfmon-viewer-cookie-v1", hashlib.sha256).hexdigest()


def token_matches(candidate: Optional[str], token: str) -> bool:
    """Constant-time comparison of a presented token with the configured one."""
    if candidate is None:
        return False
    return hmac.compare_digest(candidate.encode("utf-8", "surrogateescape"), token.encode("utf-8"))


def route_path(scope: Mapping[str, Any]) -> str:
    """The request path below the mount point (``root_path`` removed when present)."""
    path = scope.get("path", "")
    root = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root):]
    return path or "/"


def _headers(scope: Scope) -> Dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


def is_authenticated(scope: Scope, token: str) -> bool:
    """True when the request carries the Bearer token or a valid login cookie."""
    headers = _headers(scope)
    authorization = headers.get("authorization", "")
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() == "bearer" and token_matches(credentials.strip(), token):
        return True
    raw_cookie = headers.get("cookie")
    if raw_cookie:
        cookies: SimpleCookie = SimpleCookie()
        try:
            cookies.load(raw_cookie)
        except Exception:
            return False
        morsel = cookies.get(COOKIE_NAME)
        if morsel is not None:
            return hmac.compare_digest(morsel.value.encode("latin-1", "replace"), cookie_value(token).encode("ascii"))
    return False


class TokenAuthMiddleware:
    """ASGI middleware: every HTTP request except the open paths needs the token.

    ``token=None`` or empty lets everything through. Runs on the event loop; never blocks.
    """

    def __init__(self, app: Callable[..., Awaitable[None]], token: Optional[str]) -> None:
        self.app = app
        self.token = token or None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.token is None or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = route_path(scope)
        if path in OPEN_PATHS or path.startswith(OPEN_PREFIXES) or is_authenticated(scope, self.token):
            await self.app(scope, receive, send)
            return
        await self._deny(scope, path, send)

    async def _deny(self, scope: Scope, path: str, send: Send) -> None:
        headers = _headers(scope)
        wants_html = (scope.get("method") in ("GET", "HEAD") and "text/html" in headers.get("accept", "")
                      and not path.startswith("/api/") and "authorization" not in headers)
        if wants_html:
            target = path + ("?" + scope["query_string"].decode("latin-1") if scope.get("query_string") else "")
            location = scope.get("root_path", "") + "/login?next=" + quote(target, safe="")
            await send({"type": "http.response.start", "status": 303,
                        "headers": [(b"location", location.encode("latin-1")), (b"cache-control", b"no-store"),
                                    (b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
            return
        body = b'{"error": "authentication required"}'
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"),
                                (b"www-authenticate", b'Bearer realm="otel-perfmon"'),
                                (b"cache-control", b"no-store"),
                                (b"content-length", str(len(body)).encode("ascii"))]})
        await send({"type": "http.response.body", "body": body})


def safe_next(value: Optional[str]) -> str:
    """A redirect target after login: a local absolute path, else ``/reports``.

    Rejects scheme-relative (``//host``), backslash tricks and anything not starting with
    ``/`` so login cannot be used as an open redirect.
    """
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/reports"
    if any(ord(c) < 0x20 for c in value):
        return "/reports"
    return value
