"""Minimal Django project of the frameworks section (:mod:`bench.frameworks`): settings, views and
URLs in one module, no database, no apps, no middleware of its own (DjangoInstrumentor adds its
own). ``DJANGO_SETTINGS_MODULE=bench.django_settings``.

Views: ``/fast`` (:func:`bench.apps.fast_work`, ~0.3 ms of bytecode) and ``/calls``
(:func:`bench.apps.call_heavy_work`, 20,000 small Python calls), the work of the Flask / FastAPI
bench routes of the same names.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.urls import path

from bench import apps

SECRET_KEY = "otel-perfmon-bench-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = __name__
INSTALLED_APPS: list = []
MIDDLEWARE: list = []
DATABASES: dict = {}
USE_TZ = True
TIME_ZONE = "UTC"  # django.setup() sets the process TZ from it (the bench log lines stay in UTC)
LOGGING_CONFIG = None


def fast(request: HttpRequest) -> HttpResponse:
    return HttpResponse(str(apps.fast_work()), content_type="text/plain")


def calls(request: HttpRequest) -> HttpResponse:
    return HttpResponse(str(apps.call_heavy_work()), content_type="text/plain")


def health(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok", content_type="text/plain")


urlpatterns = [path("fast", fast), path("calls", calls), path("health", health)]
