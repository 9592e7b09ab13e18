"""``jobqueue sweep …``: submit a sweep from a JSON file, read it, act on all its jobs."""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

import click

from jobqueue.cli import _backend, _json


@click.group()
def sweep() -> None:
    """Sweeps: many jobs submitted and managed as one."""


@sweep.command(name="submit")
@click.argument("file", type=click.File("r"))
def submit_sweep(file: Any) -> None:
    """Submit the sweep FILE describes (the body of POST /api/sweeps; - reads stdin)."""
    from pydantic import ValidationError

    from jobqueue.client import ApiError
    from jobqueue.sweep_specs import SweepItemsInvalid, SweepSpec

    try:
        spec = SweepSpec.model_validate(json.load(file))
        done = _backend().submit_sweep(spec)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}") from exc
    except ValidationError as exc:
        raise click.BadParameter(str(exc)) from exc
    except SweepItemsInvalid as exc:
        _invalid(exc.items)
    except ApiError as exc:
        if exc.code != "invalid_items":
            raise
        _invalid(exc.details["items"])
    made = sum(1 for item in done["jobs"] if item["created"])
    verb = "submitted" if done["created"] else "already submitted"
    click.echo(f"{done['sweep']['id']} {verb}: {made} jobs created, {len(done['jobs'])} in all")


def _invalid(items: list[dict[str, Any]]) -> None:
    for item in items:
        where = "job" if item["index"] is None else f"item {item['index']}"
        for error in item["errors"]:
            click.echo(f"{where}: {error['field'] or 'body'}: {error['message']}", err=True)
    raise click.ClickException(f"{len(items)} invalid items: nothing submitted")


@sweep.command(name="ls")
@click.option("--team", default=None, help="only this team's sweeps")
@click.option("--limit", type=click.IntRange(1, 200), default=50)
def list_sweeps(team: str | None, limit: int) -> None:
    """List sweeps, newest first: id, jobs by status, name."""
    for s in _backend().sweeps(team=team, limit=limit):
        counts = " ".join(f"{k}={v}" for k, v in sorted(s["counts"].items()) if v)
        click.echo(f"{s['id']}  {s['team']:<12} {counts:<40} {s['name']}")


@sweep.command(name="show")
@click.argument("sweep_id", type=click.UUID)
def show_sweep(sweep_id: UUID) -> None:
    """Show a sweep's summary as JSON."""
    click.echo(_json(_backend().sweep(sweep_id)))


@sweep.command(name="jobs")
@click.argument("sweep_id", type=click.UUID)
@click.option("--sort", default="index", show_default=True,
              help="index, status, progress, or metric:NAME")  # fmt: skip
@click.option("--desc", is_flag=True, help="descending")
@click.option("--limit", type=click.IntRange(1, 1000), default=100)
def sweep_jobs(sweep_id: UUID, sort: str, desc: bool, limit: int) -> None:
    """The sweep's table: index, status, latest metrics, config."""
    metric = None
    if sort.startswith("metric:"):
        sort, metric = "metric", sort.removeprefix("metric:")
    rows = _backend().sweep_jobs(sweep_id, sort=sort, descending=desc, metric=metric, limit=limit)
    for row in rows:
        metrics = json.dumps(row["metrics"] or {}, sort_keys=True)
        click.echo(
            f"{row['sweep_index']:>5}  {row['status']:<9} {metrics:<30} {json.dumps(row['config'])}"
        )


def _bulk(name: str, help: str) -> click.Command:
    @sweep.command(name=name, help=help)
    @click.argument("sweep_id", type=click.UUID)
    def command(sweep_id: UUID, **options: Any) -> None:
        outcome = _backend().act_on_sweep(sweep_id, name, **options)
        click.echo(
            f"{sweep_id}: {outcome['changed']} changed, {outcome['requested']} running asked "
            f"to stop, {outcome['unchanged']} unchanged"
        )

    return command


_bulk("release", "Queue the sweep's held jobs.")
_bulk("force-start", "Force-start the sweep's pending and queued jobs.")
_bulk("pause", "Pause the sweep's jobs (running ones checkpoint).")
_bulk("resume", "Queue the sweep's paused jobs again.")
click.option("--force", is_flag=True, help="kill running jobs at once")(
    _bulk("cancel", "Cancel the sweep's jobs (running ones are stopped).")
)
click.option("--from-checkpoint/--from-scratch", default=True)(
    _bulk("retry", "Retry the sweep's failed jobs.")
)


@sweep.command(name="set")
@click.argument("sweep_id", type=click.UUID)
@click.option("--priority", type=click.IntRange(0, 100), default=None)
@click.option("--max-running", default=None, help="a number, or none to remove the cap")
def set_sweep(sweep_id: UUID, priority: int | None, max_running: str | None) -> None:
    """Change the waiting jobs' priority and/or the sweep's max_running."""
    from pydantic import ValidationError

    from jobqueue.sweep_specs import SweepPatch

    body: dict[str, Any] = {}
    if priority is not None:
        body["priority"] = priority
    if max_running is not None:
        body["max_running"] = None if max_running == "none" else _count(max_running)
    try:
        patch = SweepPatch.model_validate(body)
    except ValidationError as exc:
        raise click.BadParameter(str(exc)) from exc
    click.echo(_json(_backend().patch_sweep(sweep_id, patch)["sweep"]))


def _count(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise click.BadParameter(f"--max-running takes a number or none, not {text!r}") from None
