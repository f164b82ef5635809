# The example app (examples/zero_code_app.py, no perfmon code) and the report viewer.
# Built from the repository root: see docker-compose.yaml (context: ..).
FROM python:3.12-slim
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install ".[flask,viewer,s3,redis]" gunicorn opentelemetry-distro opentelemetry-exporter-otlp-proto-http
COPY examples/zero_code_app.py examples/workloads.py /app/
WORKDIR /app
EXPOSE 8000 8484
CMD ["opentelemetry-instrument", "gunicorn", "-w", "2", "-b", "0.0.0.0:8000", "zero_code_app:app"]
