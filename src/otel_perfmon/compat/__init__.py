"""Drop-in replacements for other slow-request profilers' APIs (docs/migrating.md).

- :mod:`otel_perfmon.compat.web_perfmonitor`: ``web-perfmonitor``'s ``PerformanceMiddleware``,
  ``MonitorConfig`` and ``profile``; switch with one changed import line.
"""
