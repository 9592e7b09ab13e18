"""The command line every benchmark shares."""

from __future__ import annotations

import argparse

from benchmarks.harness.databases import add_server_argument


def benchmark_parser(prog: str, description: str, *, quick_help: str) -> argparse.ArgumentParser:
    """A parser with ``--database-url`` and ``--quick``; the benchmark adds its own flags."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    add_server_argument(parser)
    parser.add_argument("--quick", action="store_true", help=quick_help)
    return parser
