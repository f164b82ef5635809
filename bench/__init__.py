"""otel-perfmon's benchmarks, one module per section (run from the repository root).

* ``bench/run.py`` (``make bench``): the overhead benchmark, a thin CLI over
  :mod:`bench.inprocess`, :mod:`bench.load`, :mod:`bench.memory`, :mod:`bench.quality` and
  :mod:`bench.sampler_cost` (``--only`` picks sections), rendered by :mod:`bench.output` into
  ``bench/results.md``; :mod:`bench.apps` holds the benchmarked apps and variants,
  :mod:`bench.common` what the sections share.
* ``python -m bench.instructions`` (``make bench-instructions``): CPU instructions per request
  under valgrind.
* ``bench/request_path.py``: the hooks' cost on the request thread.
* ``python -m bench.viewer_list`` (``make bench-viewer``): the report viewer with 10,000 reports.
"""
