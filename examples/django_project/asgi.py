"""ASGI entry point: ``uvicorn --app-dir examples django_project.asgi:application``.

As ``wsgi.py``: the OpenTelemetry SDK and ``configure_perfmon()`` before
``get_asgi_application()``. ``def`` views run in asgiref's thread executor; otel-perfmon
samples (or profiles) that thread for the request's span.
"""

import os

from django.core.asgi import get_asgi_application

from otel_perfmon import configure_perfmon
from tracing_setup import setup_tracing

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "django_project.settings")
setup_tracing("example-django")
perfmon = configure_perfmon()
application = get_asgi_application()
