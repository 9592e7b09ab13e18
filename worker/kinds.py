"""Job kinds, configured on the worker host in a TOML file (SPEC §5).

The API never sends a command line: a job names a kind, and each worker
knows how to run the kinds in its own file.
"""

from __future__ import annotations

import dataclasses
import re
import sys
import tomllib
from pathlib import Path

#: An argv item that stands for the worker's own Python interpreter.
PYTHON = "{python}"
_KIND = re.compile(r"^[A-Za-z0-9._-]{1,100}$")


@dataclasses.dataclass(frozen=True)
class Kind:
    name: str
    argv: tuple[str, ...]
    workdir: Path | None = None
    grace_seconds: float | None = None
    env: dict[str, str] = dataclasses.field(default_factory=dict)


class KindsError(ValueError):
    """The kinds file is missing or wrong; the message says where."""


def load_kinds(path: str | Path) -> dict[str, Kind]:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError as exc:
        raise KindsError(f"kinds file {path} does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise KindsError(f"kinds file {path} is not valid TOML: {exc}") from exc
    table = data.get("kinds")
    if not isinstance(table, dict) or not table:
        raise KindsError(f"kinds file {path} has no [kinds.NAME] tables")
    kinds = {}
    for name, body in table.items():
        where = f"{path}: [kinds.{name}]"
        if not _KIND.match(name):
            raise KindsError(f"{where}: a kind name is 1–100 letters, digits or ._-")
        if not isinstance(body, dict):
            raise KindsError(f"{where} must be a table")
        unknown = set(body) - {"argv", "workdir", "grace_seconds", "env"}
        if unknown:
            raise KindsError(f"{where}: unknown keys {sorted(unknown)}")
        argv = body.get("argv")
        if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
            raise KindsError(f"{where}: argv must be a non-empty list of strings")
        workdir = body.get("workdir")
        if workdir is not None and not isinstance(workdir, str):
            raise KindsError(f"{where}: workdir must be a string")
        grace = body.get("grace_seconds")
        if grace is not None and (isinstance(grace, bool) or not isinstance(grace, (int, float))
                                  or grace < 0):  # fmt: skip
            raise KindsError(f"{where}: grace_seconds must be a number ≥ 0")
        env = body.get("env", {})
        if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
            raise KindsError(f"{where}: env must be a table of strings")
        base = path.parent
        kinds[name] = Kind(
            name=name,
            argv=tuple(sys.executable if a == PYTHON else a for a in argv),
            workdir=(base / workdir).resolve() if workdir else None,
            grace_seconds=float(grace) if grace is not None else None,
            env={str(k): v for k, v in env.items()},
        )
    return kinds
