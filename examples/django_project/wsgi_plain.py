"""WSGI entry point with no OpenTelemetry or otel-perfmon code: profiled with zero code.

    DJANGO_SETTINGS_MODULE=django_project.settings PYTHONPATH=examples OTEL_SERVICE_NAME=shop \\
        opentelemetry-instrument gunicorn -w 2 --chdir examples django_project.wsgi_plain:application

The launcher's ``django`` entry point (opentelemetry-instrumentation-django) adds OTel's
middleware, and its ``perfmon`` entry point adds otel-perfmon. ``DJANGO_SETTINGS_MODULE`` must
be in the environment (and the project importable) when the launcher runs, before this file.
"""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "django_project.settings")
application = get_wsgi_application()
