"""A small Django project profiled by otel-perfmon (WSGI under gunicorn, ASGI under uvicorn)."""
