"""Names of every environment variable otel-perfmon reads (one place, as in OTel's SDK).

Each constant is followed by its ``.. envvar::`` docstring (meaning, unit, default), as in
OpenTelemetry's ``opentelemetry.sdk.environment_variables``; ``docs/generate_config.py``
builds ``docs/configuration.md`` from these docstrings and ``config._ENV``. A default in
backquotes must match the ``PerfmonConfig`` default (``tests/test_docs.py`` checks it).

Lists are comma-separated with whitespace trimmed; booleans accept
``true/false/1/0/yes/no`` (case-insensitive). An invalid value is logged as a
warning and the field's default is used, following OpenTelemetry's convention.
"""

OTEL_PERFMON_ENABLED = "OTEL_PERFMON_ENABLED"
""".. envvar:: OTEL_PERFMON_ENABLED

Master switch: false adds nothing to the TracerProvider. Default: `true`.
"""

OTEL_PERFMON_THRESHOLD_SECONDS = "OTEL_PERFMON_THRESHOLD_SECONDS"
""".. envvar:: OTEL_PERFMON_THRESHOLD_SECONDS

A span slower than this (seconds) is slow and gets a report. Default: `1`.
"""

OTEL_PERFMON_TASK_THRESHOLD_SECONDS = "OTEL_PERFMON_TASK_THRESHOLD_SECONDS"
""".. envvar:: OTEL_PERFMON_TASK_THRESHOLD_SECONDS

Threshold (seconds) for local-root CONSUMER spans (Celery tasks); unset uses the request
threshold. Default: `unset`.
"""

OTEL_PERFMON_DEDUP_WINDOW_SECONDS = "OTEL_PERFMON_DEDUP_WINDOW_SECONDS"
""".. envvar:: OTEL_PERFMON_DEDUP_WINDOW_SECONDS

One report and one notification per fingerprint (service + method + route template) per
window (seconds; 864000 = 10 days); 0 disables dedup. Default: `864000`.
"""

OTEL_PERFMON_REPORT_DIR = "OTEL_PERFMON_REPORT_DIR"
""".. envvar:: OTEL_PERFMON_REPORT_DIR

Directory of the report files and of the default (SQLite) dedup store; created with mode
0700. Also an fsspec URL: `s3://bucket/prefix` (extra `s3`), `gs://…` (`gcs`), `az://…`
(`azure`), `memory://…`, `file://…`; then the SQLite file and the upload spool stay in a local
directory (docs/storage.md). Default: `./perfmon-reports`.
"""

OTEL_PERFMON_DEDUP_STORE = "OTEL_PERFMON_DEDUP_STORE"
""".. envvar:: OTEL_PERFMON_DEDUP_STORE

Where dedup state lives: `memory` (this process), `sqlite` (a file in the report directory,
shared by the processes of a host), a `redis://` URL (shared by hosts; extra `redis`), or the
name of an `otel_perfmon.dedup_stores` entry point. Default: `sqlite`.
"""

OTEL_PERFMON_INCLUDE_URLS = "OTEL_PERFMON_INCLUDE_URLS"
""".. envvar:: OTEL_PERFMON_INCLUDE_URLS

URL globs (or `re:<regex>`); when non-empty, only matching requests are profiled. Default: `empty`.
"""

OTEL_PERFMON_EXCLUDE_URLS = "OTEL_PERFMON_EXCLUDE_URLS"
""".. envvar:: OTEL_PERFMON_EXCLUDE_URLS

URL globs (or `re:<regex>`) never profiled; include wins over exclude. Default: `empty`.
"""

OTEL_PERFMON_CAPTURE_HEADERS = "OTEL_PERFMON_CAPTURE_HEADERS"
""".. envvar:: OTEL_PERFMON_CAPTURE_HEADERS

Request headers copied into reports (names, case-insensitive). Default: the list under
"Headers and redaction".
"""

OTEL_PERFMON_REDACT_HEADERS = "OTEL_PERFMON_REDACT_HEADERS"
""".. envvar:: OTEL_PERFMON_REDACT_HEADERS

Headers whose values are always replaced by `[REDACTED]`, besides any name that looks
secret. Default: the list under "Headers and redaction".
"""

OTEL_PERFMON_EXPORTERS = "OTEL_PERFMON_EXPORTERS"
""".. envvar:: OTEL_PERFMON_EXPORTERS

Exporters besides the report files, by name: `console`, `webhook`, `slack`, `mattermost`,
`email`, `apprise`, `otlp`, or an `otel_perfmon.exporters` entry point (in code also
instances or dicts with a `type`). Default: `empty`.
"""

OTEL_PERFMON_REPORT_URL_TEMPLATE = "OTEL_PERFMON_REPORT_URL_TEMPLATE"
""".. envvar:: OTEL_PERFMON_REPORT_URL_TEMPLATE

Link to a report, e.g. `https://perf.example.com/reports/{report_id}`; sets the span attribute
`perfmon.report.url` and the link in notifications. Default: `unset`.
"""

OTEL_PERFMON_PROFILE_INTERVAL_SECONDS = "OTEL_PERFMON_PROFILE_INTERVAL_SECONDS"
""".. envvar:: OTEL_PERFMON_PROFILE_INTERVAL_SECONDS

pyinstrument's sampling interval (seconds) for spans the policy picked. Default: `0.001`.
"""

OTEL_PERFMON_PROFILE_POLICY = "OTEL_PERFMON_PROFILE_POLICY"
""".. envvar:: OTEL_PERFMON_PROFILE_POLICY

Which eligible spans get a pyinstrument session: `adaptive`, `always`, an
`otel_perfmon.profile_policies` entry point (in code also a policy object). Default: `adaptive`.
"""

OTEL_PERFMON_QUEUE_SIZE = "OTEL_PERFMON_QUEUE_SIZE"
""".. envvar:: OTEL_PERFMON_QUEUE_SIZE

Length of the bounded report queue (slow spans); overflow is dropped and counted in
`reports_dropped`. Default: `1000`.
"""

OTEL_PERFMON_EXPORT_TIMEOUT_SECONDS = "OTEL_PERFMON_EXPORT_TIMEOUT_SECONDS"
""".. envvar:: OTEL_PERFMON_EXPORT_TIMEOUT_SECONDS

Time (seconds) one exporter call may take, retries included. Default: `30`.
"""

OTEL_PERFMON_SHUTDOWN_TIMEOUT_SECONDS = "OTEL_PERFMON_SHUTDOWN_TIMEOUT_SECONDS"
""".. envvar:: OTEL_PERFMON_SHUTDOWN_TIMEOUT_SECONDS

At process exit (interpreter exit, gunicorn's SIGTERM, uvicorn's re-raised SIGTERM), the time
(seconds) allowed to write the queued reports and deliver their notifications; what is left
after it is dropped and counted. Default: `5`.
"""

OTEL_PERFMON_RETENTION_MAX_AGE_SECONDS = "OTEL_PERFMON_RETENTION_MAX_AGE_SECONDS"
""".. envvar:: OTEL_PERFMON_RETENTION_MAX_AGE_SECONDS

Reports whose JSON was last written longer ago than this (seconds; 2592000 = 30 days) are
deleted, all their files together, by the worker (at most every 5 minutes) and by
`otel-perfmon prune`; their dedup entry is released so the route can report again. 0 keeps
them forever. Default: `2592000`.
"""

OTEL_PERFMON_RETENTION_MAX_BYTES = "OTEL_PERFMON_RETENTION_MAX_BYTES"
""".. envvar:: OTEL_PERFMON_RETENTION_MAX_BYTES

Largest total size (bytes; 1073741824 = 1 GiB) of the report files in the report directory or
bucket prefix; past it the oldest reports are deleted first, as for the age. 0 sets no bound.
Default: `1073741824`.
"""

# adaptive profiling policy, stack sampler, in-flight reports
OTEL_PERFMON_PROFILE_BUDGET = "OTEL_PERFMON_PROFILE_BUDGET"
""".. envvar:: OTEL_PERFMON_PROFILE_BUDGET

Adaptive policy: estimated pyinstrument time allowed per second of wall time (0-1).
Default: `0.005`.
"""

OTEL_PERFMON_PROFILE_EXPLORE_RATE = "OTEL_PERFMON_PROFILE_EXPLORE_RATE"
""".. envvar:: OTEL_PERFMON_PROFILE_EXPLORE_RATE

Adaptive policy: probability (0-1) of profiling a span of a route that is not a candidate.
Default: `0.001`.
"""

OTEL_PERFMON_PROFILE_CANDIDATE_RATIO = "OTEL_PERFMON_PROFILE_CANDIDATE_RATIO"
""".. envvar:: OTEL_PERFMON_PROFILE_CANDIDATE_RATIO

Adaptive policy: a route becomes a candidate for 10 minutes once two of its spans within that
time took this multiple of the threshold. Default: `0.5`.
"""

OTEL_PERFMON_SAMPLER_INTERVAL_SECONDS = "OTEL_PERFMON_SAMPLER_INTERVAL_SECONDS"
""".. envvar:: OTEL_PERFMON_SAMPLER_INTERVAL_SECONDS

Stack-sampling interval (seconds) of a span without a pyinstrument session once it has passed
its threshold. Default: `0.005`.
"""

OTEL_PERFMON_SAMPLER_EARLY_INTERVAL_SECONDS = "OTEL_PERFMON_SAMPLER_EARLY_INTERVAL_SECONDS"
""".. envvar:: OTEL_PERFMON_SAMPLER_EARLY_INTERVAL_SECONDS

Stack-sampling interval (seconds) from a span's start until it passes its threshold (0.01 =
100 Hz); 0 samples only after the threshold (profile mode `after_threshold`). Default: `0.01`.
"""

OTEL_PERFMON_SAMPLER_BUDGET = "OTEL_PERFMON_SAMPLER_BUDGET"
""".. envvar:: OTEL_PERFMON_SAMPLER_BUDGET

Share of one CPU core (0-1) the stack sampler thread may use; it stretches its intervals to
stay within it; 0 turns stack sampling off. Default: `0.008`.
"""

OTEL_PERFMON_INFLIGHT_MULTIPLE = "OTEL_PERFMON_INFLIGHT_MULTIPLE"
""".. envvar:: OTEL_PERFMON_INFLIGHT_MULTIPLE

A request still running at this multiple of its threshold gets an early report with its
current stack (mode `in_flight`); 0 turns it off, else it must be > 1. Default: `5`.
"""
OTEL_PERFMON_CAPTURE_REQUEST_BODY = "OTEL_PERFMON_CAPTURE_REQUEST_BODY"
""".. envvar:: OTEL_PERFMON_CAPTURE_REQUEST_BODY

Request parameters (form fields, JSON body) that the app parsed, put in reports, scrubbed:
`never`, `small` (up to 1,000 bytes), `medium` (10,000) or `always` (100,000). Multipart
and binary bodies give content type, length and file names only. Default: `medium`.
"""
OTEL_PERFMON_ROUTE_STATS_INTERVAL_SECONDS = "OTEL_PERFMON_ROUTE_STATS_INTERVAL_SECONDS"
""".. envvar:: OTEL_PERFMON_ROUTE_STATS_INTERVAL_SECONDS

Seconds between flushes of every route's request numbers (count, slow count, p50/p95/p99/max)
from this process to the dedup store, for the viewer's `/routes` page; 0 keeps them in memory
only. Default: `5`.
"""

# Notifier exporters (issue 3). A notifier named in OTEL_PERFMON_EXPORTERS reads its own
# variables below; a missing required one raises ConfigurationError at configure time.
OTEL_PERFMON_WEBHOOK_URL = "OTEL_PERFMON_WEBHOOK_URL"
""".. envvar:: OTEL_PERFMON_WEBHOOK_URL

webhook: the http(s) URL each report's JSON summary is POSTed to. Required.
"""

OTEL_PERFMON_WEBHOOK_HEADERS = "OTEL_PERFMON_WEBHOOK_HEADERS"
""".. envvar:: OTEL_PERFMON_WEBHOOK_HEADERS

webhook: extra request headers as `k1=v1,k2=v2` (values URL-decoded). Default: none.
"""

OTEL_PERFMON_WEBHOOK_SECRET = "OTEL_PERFMON_WEBHOOK_SECRET"
""".. envvar:: OTEL_PERFMON_WEBHOOK_SECRET

webhook: HMAC-SHA256 key; the request then carries `X-Perfmon-Signature: sha256=<hex>` of the
raw body. Default: unset (unsigned).
"""

OTEL_PERFMON_SLACK_WEBHOOK_URL = "OTEL_PERFMON_SLACK_WEBHOOK_URL"
""".. envvar:: OTEL_PERFMON_SLACK_WEBHOOK_URL

slack: the incoming-webhook URL. Required.
"""

OTEL_PERFMON_MATTERMOST_WEBHOOK_URL = "OTEL_PERFMON_MATTERMOST_WEBHOOK_URL"
""".. envvar:: OTEL_PERFMON_MATTERMOST_WEBHOOK_URL

mattermost: the incoming-webhook URL. Required unless a bot token and channel id are set.
"""

OTEL_PERFMON_MATTERMOST_URL = "OTEL_PERFMON_MATTERMOST_URL"
""".. envvar:: OTEL_PERFMON_MATTERMOST_URL

mattermost: server base URL for the files API. Default: the part of the webhook URL before
`/hooks/`.
"""

OTEL_PERFMON_MATTERMOST_BOT_TOKEN = "OTEL_PERFMON_MATTERMOST_BOT_TOKEN"
""".. envvar:: OTEL_PERFMON_MATTERMOST_BOT_TOKEN

mattermost: a bot account's access token; with it the report zip is uploaded too. Default: unset.
"""

OTEL_PERFMON_MATTERMOST_CHANNEL_ID = "OTEL_PERFMON_MATTERMOST_CHANNEL_ID"
""".. envvar:: OTEL_PERFMON_MATTERMOST_CHANNEL_ID

mattermost: the channel the bot posts the zip to (the bot must be a member). Required with
the bot token.
"""

OTEL_PERFMON_SMTP_HOST = "OTEL_PERFMON_SMTP_HOST"
""".. envvar:: OTEL_PERFMON_SMTP_HOST

email: SMTP server host name. Required.
"""

OTEL_PERFMON_SMTP_PORT = "OTEL_PERFMON_SMTP_PORT"
""".. envvar:: OTEL_PERFMON_SMTP_PORT

email: SMTP port. Default: 465 with SSL, 587 with STARTTLS, else 25.
"""

OTEL_PERFMON_SMTP_USERNAME = "OTEL_PERFMON_SMTP_USERNAME"
""".. envvar:: OTEL_PERFMON_SMTP_USERNAME

email: login name; login happens only when it is set. Default: unset.
"""

OTEL_PERFMON_SMTP_PASSWORD = "OTEL_PERFMON_SMTP_PASSWORD"
""".. envvar:: OTEL_PERFMON_SMTP_PASSWORD

email: login password (never logged). Default: unset.
"""

OTEL_PERFMON_SMTP_SENDER = "OTEL_PERFMON_SMTP_SENDER"
""".. envvar:: OTEL_PERFMON_SMTP_SENDER

email: the From address. Required.
"""

OTEL_PERFMON_SMTP_RECIPIENTS = "OTEL_PERFMON_SMTP_RECIPIENTS"
""".. envvar:: OTEL_PERFMON_SMTP_RECIPIENTS

email: comma-separated To addresses. Required.
"""

OTEL_PERFMON_SMTP_USE_TLS = "OTEL_PERFMON_SMTP_USE_TLS"
""".. envvar:: OTEL_PERFMON_SMTP_USE_TLS

email: STARTTLS (bool). Default: true.
"""

OTEL_PERFMON_SMTP_USE_SSL = "OTEL_PERFMON_SMTP_USE_SSL"
""".. envvar:: OTEL_PERFMON_SMTP_USE_SSL

email: implicit TLS, e.g. port 465 (bool; not together with USE_TLS). Default: false.
"""

OTEL_PERFMON_EMAIL_SUBJECT_PREFIX = "OTEL_PERFMON_EMAIL_SUBJECT_PREFIX"
""".. envvar:: OTEL_PERFMON_EMAIL_SUBJECT_PREFIX

email: text before the subject `Slow GET /route: 1234.5 ms`. Default: [perfmon].
"""

OTEL_PERFMON_APPRISE_URLS = "OTEL_PERFMON_APPRISE_URLS"
""".. envvar:: OTEL_PERFMON_APPRISE_URLS

apprise: comma-separated apprise URLs (Discord, Teams, Telegram, ntfy, ...). Required.
"""

# Report viewer (`otel-perfmon serve`, issue 5); it also reads OTEL_PERFMON_REPORT_DIR and
# OTEL_PERFMON_DEDUP_STORE (for occurrence counts).
OTEL_PERFMON_VIEWER_HOST = "OTEL_PERFMON_VIEWER_HOST"
""".. envvar:: OTEL_PERFMON_VIEWER_HOST

viewer: address `otel-perfmon serve` binds (`--host`). Default: 127.0.0.1.
"""

OTEL_PERFMON_VIEWER_PORT = "OTEL_PERFMON_VIEWER_PORT"
""".. envvar:: OTEL_PERFMON_VIEWER_PORT

viewer: TCP port (`--port`). Default: 8484.
"""

OTEL_PERFMON_VIEWER_AUTH_TOKEN = "OTEL_PERFMON_VIEWER_AUTH_TOKEN"
""".. envvar:: OTEL_PERFMON_VIEWER_AUTH_TOKEN

viewer: token every page and API call needs (Bearer header or the login form) (`--auth-token`).
Default: unset (no auth).
"""

OTEL_PERFMON_VIEWER_TRACE_URL_TEMPLATE = "OTEL_PERFMON_VIEWER_TRACE_URL_TEMPLATE"
""".. envvar:: OTEL_PERFMON_VIEWER_TRACE_URL_TEMPLATE

viewer: link from a report to its trace, e.g. `http://jaeger:16686/trace/{trace_id}`; also
`{span_id}`, `{report_id}`, `{service_name}` (`--trace-url-template`). Default: unset.
"""
