"""The ``otel-perfmon`` command (console script ``otel-perfmon = otel_perfmon.cli:main``).

``otel-perfmon list [--report-dir DIR] [--limit N] [--dedup-store S]``: the reports in a
directory, newest first (:mod:`otel_perfmon.cli.list`).
``otel-perfmon test-notifiers``: send a synthetic report through every exporter configured by
environment variables; one line per exporter, exit 0 when all succeeded (1 failure, 2 none/invalid)
(:mod:`otel_perfmon.cli.test_notifiers`).
``otel-perfmon serve [--report-dir DIR] [--host H] [--port P] [--auth-token T]``: the report viewer
(:mod:`otel_perfmon.cli.serve`, :mod:`otel_perfmon.viewer`).
``otel-perfmon prune [--report-dir DIR|URL] [--dry-run]``: apply retention now
(:mod:`otel_perfmon.cli.prune`).

Each subcommand module has an ``add_*_command(subparsers)`` function; none imports this package.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from otel_perfmon.cli.list import add_list_command
from otel_perfmon.cli.prune import add_prune_command
from otel_perfmon.cli.serve import add_serve_command
from otel_perfmon.cli.test_notifiers import add_test_notifiers_command

# Note: importing ``otel_perfmon.cli.list`` binds the name ``list`` in this module to that
# submodule; the builtin is not used here.


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand (defaults read from the environment once)."""
    from otel_perfmon.config import config_from_env

    config = config_from_env()
    parser = argparse.ArgumentParser(prog="otel-perfmon", description="otel-perfmon reports and tools")
    commands = parser.add_subparsers(dest="command", required=True)
    add_list_command(commands, config)
    add_test_notifiers_command(commands)
    add_serve_command(commands, config)
    add_prune_command(commands, config)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    return int(args.run(args))


__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    sys.exit(main())
