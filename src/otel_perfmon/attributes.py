"""Span attribute keys set by otel-perfmon (public API; one source of truth).

Set while the span is still recording, by the watchdog, when it passes its threshold.
"""

#: bool: the span passed its threshold.
PERFMON_SLOW = "perfmon.slow"
#: string: id of the report holding the span's profile (the existing one when deduplicated).
PERFMON_REPORT_ID = "perfmon.report.id"
#: string: link to the report, only when ``report_url_template`` is set.
PERFMON_REPORT_URL = "perfmon.report.url"

ALL = (PERFMON_SLOW, PERFMON_REPORT_ID, PERFMON_REPORT_URL)
