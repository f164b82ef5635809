"""WSGI entry point: ``gunicorn -w 2 --chdir examples django_project.wsgi:application``.

The two set-up steps a user writes, both before ``get_wsgi_application()``: the OpenTelemetry
SDK (``tracing_setup.py``) and ``configure_perfmon()``, which instruments Django with OTel's
``DjangoInstrumentor`` (its middleware must be in place before the application loads).
"""

import os

from django.core.wsgi import get_wsgi_application

from otel_perfmon import configure_perfmon
from tracing_setup import setup_tracing

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "django_project.settings")
setup_tracing("example-django")
perfmon = configure_perfmon()
application = get_wsgi_application()
