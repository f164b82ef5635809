"""Token authentication for the viewer: ``Authorization: Bearer <token>`` or a login cookie.

:class:`TokenAuthMiddleware` is a plain ASGI middleware in front of every route. With a
token set, a request passes when its Bearer token equals the token, or its cookie carries an
HMAC of the token (so the token itself never sits in a cookie); comparisons are
constant-time (:func:`hmac.compare_digest`). Otherwise an HTML navigation (GET asking for
``text/html``) is redirected to ``/login``, anything else gets ``401`` with
``WWW-Authenticate: Bearer``. ``/login`` (GET form, POST submit), ``/healthz`` and
``/static/`` stay open: they reveal no report data.

Also here: the CSRF token of the login and logout forms (:func:`csrf_token`, bound to a
random per-browser cookie), the failed-login throttle (:class:`LoginThrottle`) and
:class:`SecurityHeadersMiddleware` (the headers every response carries). The token is only
ever compared, never logged, echoed or put in a URL.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import threading
import time
from http.cookies import SimpleCookie
from typing import Any, Awaitable, Callable, Dict, List, Mapping, Optional, Tuple
from urllib.parse import quote

COOKIE_NAME = "otel_perfmon_viewer"
COOKIE_MAX_AGE_SECONDS = 12 * 3600
#: The per-browser random value the forms' CSRF token is derived from (not a secret to the
#: browser, but unreadable and unsettable from another site: HttpOnly, SameSite=Strict).
CSRF_COOKIE_NAME = "otel_perfmon_csrf"
CSRF_FIELD = "csrf_token"
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


def _headers(scope: Mapping[str, Any]) -> Dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


def request_cookie(scope: Mapping[str, Any], name: str) -> Optional[str]:
    """The value of cookie ``name`` of the request, or ``None`` (also for a malformed header)."""
    raw_cookie = _headers(scope).get("cookie")
    if not raw_cookie:
        return None
    cookies: SimpleCookie = SimpleCookie()
    try:
        cookies.load(raw_cookie)
    except Exception:
        return None
    morsel = cookies.get(name)
    return None if morsel is None else morsel.value


# --- CSRF -------------------------------------------------------------------------------------
def csrf_key(auth_token: Optional[str]) -> bytes:
    """The key CSRF tokens are signed with: derived from the auth token (so every process
    of one viewer agrees), or random per process without one."""
    if auth_token:
        return hmac.new(auth_token.encode("utf-8"), b"otel-perfmon-viewer-csrf-v1", hashlib.sha256).digest()
    return secrets.token_bytes(32)


def new_csrf_nonce() -> str:
    """A fresh value for the CSRF cookie."""
    return secrets.token_urlsafe(24)


def csrf_token(key: bytes, nonce: str) -> str:
    """The forms' hidden ``csrf_token`` for the browser whose CSRF cookie holds ``nonce``."""
    return hmac.new(key, b"csrf:" + nonce.encode("utf-8", "surrogateescape"), hashlib.sha256).hexdigest()


def is_browser_request(scope: Mapping[str, Any]) -> bool:
    """True when the request carries the headers every current browser sends on a form POST
    (``Origin`` or ``Sec-Fetch-Site``): those need the CSRF token. A request without either
    (curl, a script) cannot have been forged by a page in a browser (as Go's
    ``http.CrossOriginProtection`` reasons)."""
    headers = _headers(scope)
    return "origin" in headers or "sec-fetch-site" in headers


def csrf_ok(scope: Mapping[str, Any], key: bytes, submitted: Optional[str]) -> bool:
    """Whether a POST passes the CSRF check: a browser request needs ``submitted`` to be the
    token of its CSRF cookie, and is never accepted from another site (``Sec-Fetch-Site:
    cross-site``); other requests pass (see :func:`is_browser_request`)."""
    if _headers(scope).get("sec-fetch-site", "").strip().lower() == "cross-site":
        return False
    nonce = request_cookie(scope, CSRF_COOKIE_NAME)
    if nonce and submitted:
        return hmac.compare_digest(submitted.encode("utf-8", "surrogateescape"), csrf_token(key, nonce).encode("ascii"))
    return not is_browser_request(scope)


# --- failed-login throttle ---------------------------------------------------------------------
class LoginThrottle:
    """Failed logins per client address: after ``max_failures`` within ``window_seconds``
    the address is locked out for ``base_delay_seconds``, doubling with each further
    lock-out (at most ``max_delay_seconds``) until a successful login or an hour without
    failures. ``clock`` (monotonic seconds) is the seam tests advance. At most
    ``max_clients`` addresses are remembered (the least recently seen are forgotten).
    Thread-safe; never blocks."""

    FORGET_SECONDS = 3600.0

    def __init__(self, max_failures: int = 5, window_seconds: float = 60.0, base_delay_seconds: float = 30.0,
                 max_delay_seconds: float = 900.0, max_clients: int = 4096,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_failures = max_failures
        self.window_seconds = window_seconds
        self.base_delay_seconds = base_delay_seconds
        self.max_delay_seconds = max_delay_seconds
        self.max_clients = max_clients
        self.clock = clock
        #: pause before answering a wrong token (slows guessing; the event loop stays free)
        self.failure_pause_seconds = 0.25
        self._lock = threading.Lock()
        # client -> [failure times in the window, lock-outs so far, locked until, last failure]
        self._clients: Dict[str, Tuple[List[float], int, float, float]] = {}

    def _state(self, client: str, now: float) -> Tuple[List[float], int, float, float]:
        state = self._clients.get(client)
        if state is None or now - state[3] > self.FORGET_SECONDS:
            return [], 0, now, now
        return state

    def retry_after(self, client: str) -> int:
        """Whole seconds ``client`` must wait before its next attempt (0: may try now)."""
        now = self.clock()
        with self._lock:
            locked_until = self._state(client, now)[2]
        return max(0, math.ceil(locked_until - now)) if locked_until > now else 0

    def failed(self, client: str) -> int:
        """Count a wrong token; returns :meth:`retry_after` after it."""
        now = self.clock()
        with self._lock:
            times, lockouts, locked_until, _ = self._state(client, now)
            times = [t for t in times if now - t < self.window_seconds] + [now]
            if len(times) >= self.max_failures:
                delay = min(self.base_delay_seconds * 2 ** lockouts, self.max_delay_seconds)
                times, lockouts, locked_until = [], lockouts + 1, now + delay
            self._clients.pop(client, None)
            self._clients[client] = (times, lockouts, locked_until, now)  # most recent last
            while len(self._clients) > self.max_clients:
                del self._clients[next(iter(self._clients))]
        return max(0, math.ceil(locked_until - now)) if locked_until > now else 0

    def succeeded(self, client: str) -> None:
        """Forget ``client``'s failures (a correct token)."""
        with self._lock:
            self._clients.pop(client, None)


# --- security headers --------------------------------------------------------------------------
class SecurityHeadersMiddleware:
    """ASGI middleware: adds each of ``headers`` to every HTTP response that does not set it
    itself (redirects, 401s, 404s and errors included)."""

    def __init__(self, app: Callable[..., Awaitable[None]], headers: Mapping[str, str]) -> None:
        self.app = app
        self.headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in self.headers if k not in present]
                if extra:
                    message = {**message, "headers": list(message.get("headers", [])) + extra}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def is_authenticated(scope: Scope, token: str) -> bool:
    """True when the request carries the Bearer token or a valid login cookie."""
    headers = _headers(scope)
    authorization = headers.get("authorization", "")
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() == "bearer" and token_matches(credentials.strip(), token):
        return True
    value = request_cookie(scope, COOKIE_NAME)
    if value is not None:
        return hmac.compare_digest(value.encode("latin-1", "replace"), cookie_value(token).encode("ascii"))
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
