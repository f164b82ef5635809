"""The example views: a slow CPU view, a slow blocking (sync) view, a slow async view, a
parameterized one (odd ids are slow), a fast one and ``/health``.

``EXAMPLE_SLOW_SECONDS`` (default 1.2) sets how long the slow views take. Under ASGI Django
runs the ``def`` views in asgiref's thread executor and the ``async def`` one on the event loop.
"""

import time

from django.http import HttpRequest, JsonResponse

from workloads import SLOW_SECONDS, crunch_numbers, fetch_from_slow_service, load_from_slow_backend


def health(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"ok": True})


def fast(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"ok": True})


def cpu_report(request: HttpRequest) -> JsonResponse:
    """CPU-bound: many small Python calls."""
    return JsonResponse({"total": crunch_numbers(time.monotonic() + SLOW_SECONDS)})


def query_orders(seconds: float) -> dict:
    """The culprit of ``sync_io``: a blocking call (stands in for a slow database query)."""
    return load_from_slow_backend(seconds)


def sync_io(request: HttpRequest) -> JsonResponse:
    """A sync view that waits on blocking I/O."""
    return JsonResponse(query_orders(SLOW_SECONDS))


async def async_io(request: HttpRequest) -> JsonResponse:
    """An async view that awaits slow I/O."""
    return JsonResponse(await fetch_from_slow_service(SLOW_SECONDS))


def signup(request: HttpRequest) -> JsonResponse:
    """A slow form post: the view reads ``request.POST`` (so the report may show it, scrubbed)."""
    name = request.POST.get("name", "")
    load_from_slow_backend(SLOW_SECONDS)
    return JsonResponse({"name": name})


def item(request: HttpRequest, item_id: int) -> JsonResponse:
    """Parameterized: odd ids are slow (CPU)."""
    if item_id % 2:
        crunch_numbers(time.monotonic() + SLOW_SECONDS)
    return JsonResponse({"id": item_id, "q": request.GET.get("q", "")})
