"""The ``jobqueue`` command.

It belongs to the core and never imports ``api`` or ``worker``: it starts them
by name (gunicorn with ``api:create_app()``, ``python -m worker``). Operator
commands talk to the database through the core, like the API does.
"""

from __future__ import annotations

import getpass
import json
import os
import sys
from typing import TYPE_CHECKING, Any
from uuid import UUID

import click

from jobqueue.errors import JobqueueError

if TYPE_CHECKING:
    from jobqueue.cli.backend import Backend, Json


def _settings():
    from jobqueue.settings import get_settings

    return get_settings()


def _queue():
    from jobqueue.db import make_engine
    from jobqueue.migrate import require_head
    from jobqueue.queue import JobQueue

    settings = _settings()
    engine = make_engine(settings.require_database_url(), pool_size=2)
    # Closed with the command, also when it runs inside another process (tests, scripts).
    click.get_current_context().call_on_close(engine.dispose)
    require_head(engine)
    return JobQueue(engine, settings)


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:
        return "cli"


def _json(value: Any) -> str:
    from jobqueue.cli.backend import json_default

    return json.dumps(value, default=json_default, indent=2)


class _Main(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except JobqueueError as exc:
            raise click.ClickException(str(exc)) from exc


@click.group(cls=_Main)
@click.option(
    "--api",
    "api_url",
    envvar="JOBQUEUE_API_URL",
    default=None,
    metavar="URL",
    help="send job and sweep commands to this jobqueue API instead of DATABASE_URL",
)
@click.option("--token", envvar="JOBQUEUE_API_TOKEN", default=None,
              help="the API token for --api")  # fmt: skip
def main(api_url: str | None, token: str | None) -> None:
    """jobqueue: a durable PostgreSQL job queue for ML training jobs."""


def _backend() -> Backend:
    """The database, or the API with ``--api`` (see :mod:`jobqueue.cli.backend`)."""
    from jobqueue.cli.backend import Local, Remote

    root = click.get_current_context().find_root()
    if root.params.get("api_url"):
        from jobqueue.client import Client

        client = Client(root.params["api_url"], token=root.params.get("token"))
        click.get_current_context().call_on_close(client.close)
        return Remote(client)
    return Local(_queue(), _actor())


@main.command()
@click.option("--revision", default="head", show_default=True)
def migrate(revision: str) -> None:
    """Bring the database schema (DATABASE_URL) up to date."""
    from jobqueue.migrate import upgrade

    upgrade(_settings().require_database_url(), revision)
    click.echo(f"database migrated to {revision}")


@main.command()
@click.option(
    "--older-than-days", type=float, default=None, help="default: JOBQUEUE_PRUNE_AFTER_DAYS"
)
def prune(older_than_days: float | None) -> None:
    """Delete finished jobs older than the cut-off, with their events, logs and metrics."""
    from jobqueue.pruner import prune_finished

    days = older_than_days if older_than_days is not None else _settings().prune_after_days
    deleted = prune_finished(_queue().engine, older_than_seconds=days * 86400)
    click.echo(f"pruned {deleted} finished jobs older than {days:g} days")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", "processes", default=None, type=int, help="gunicorn worker processes")
@click.option(
    "--access-log/--no-access-log",
    default=False,
    show_default=True,
    help="one line per request on standard output",
)
def api(host: str, port: int, processes: int | None, access_log: bool) -> None:
    """Serve the REST API and web monitor with gunicorn."""
    from jobqueue.db import make_engine
    from jobqueue.migrate import require_head

    settings = _settings()
    if settings.auth == "on" and not settings.api_tokens.strip():
        raise click.ClickException(
            "auth is on but JOBQUEUE_API_TOKENS is empty: set tokens (e.g. operator:s3cret) "
            "or JOBQUEUE_AUTH=off"
        )
    require_head(make_engine(settings.require_database_url(), pool_size=1))
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        # Counters from every gunicorn process add up in one /metrics view.
        import tempfile

        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="jobqueue-metrics-")
    from jobqueue.cli.serving import gunicorn_argv

    argv = gunicorn_argv(f"{host}:{port}", processes=processes, access_log=access_log)
    os.execv(sys.executable, argv)


@main.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.pass_context
def worker(ctx: click.Context) -> None:
    """Run the worker daemon of this GPU host (the options of `python -m worker`).

    Every argument, ``--help`` included, goes to ``python -m worker``: the
    worker's options live with the worker, which the core does not import.
    """
    os.execv(sys.executable, [sys.executable, "-m", "worker", *ctx.args])


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="embedded PostgreSQL data (default: a persistent per-user folder)",
)
@click.option("--demo", is_flag=True, help="submit a few example jobs")
@click.option("--gpus", default="auto", show_default=True, help="the worker's --gpus")
@click.option("--virtual-gpus", type=click.IntRange(0, 64), default=None)
def up(host: str, port: int, data_dir: str | None, demo: bool, gpus: str,
       virtual_gpus: int | None) -> None:  # fmt: skip
    """Run the whole system here: database, migrations, API + monitor, one worker."""
    from pathlib import Path

    from jobqueue.cli.up import run

    code = run(
        _settings(), host=host, port=port, data_dir=Path(data_dir) if data_dir else None,
        demo=demo, gpus=gpus, virtual_gpus=virtual_gpus,
    )  # fmt: skip
    sys.exit(code)


# -- operator commands --------------------------------------------------------------


@main.command()
@click.argument("name")
@click.option("--kind", required=True)
@click.option("--config", "config_text", default="{}", help="JSON object, or @file.json")
@click.option("--gpus", type=int, default=1, show_default=True)
@click.option("--pool", default="default", show_default=True)
@click.option(
    "--team",
    default=None,
    help="the team it counts against (default: the token's with --api, else default)",
)
@click.option("--priority", type=int, default=50, show_default=True)
@click.option("--hold", is_flag=True, help="keep it pending until released")
@click.option("--idempotency-key", default=None)
def submit(name: str, kind: str, config_text: str, gpus: int, pool: str, team: str | None,
           priority: int, hold: bool, idempotency_key: str | None) -> None:  # fmt: skip
    """Submit a job."""
    from pydantic import ValidationError

    from jobqueue.specs import JobSpec

    if config_text.startswith("@"):
        with open(config_text[1:]) as fh:
            config_text = fh.read()
    body = dict(name=name, kind=kind, gpus=gpus, pool=pool, team=team, priority=priority,
                hold=hold)  # fmt: skip
    try:
        config = json.loads(config_text)
        spec = JobSpec.model_validate(
            {**body, "config": config, "idempotency_key": idempotency_key}
        )
    except (ValidationError, json.JSONDecodeError) as exc:
        raise click.BadParameter(str(exc)) from exc
    click.echo(_json(_backend().submit(spec)))


@main.command(name="ls")
@click.option("--status", "statuses", multiple=True)
@click.option("--pool", default=None)
@click.option("--team", default=None, help="only this team's jobs")
@click.option("--limit", type=click.IntRange(1, 200), default=50)
def list_jobs(statuses: tuple[str, ...], pool: str | None, team: str | None, limit: int) -> None:
    """List jobs, newest first: id, status, queue position, pool, team, owner, name."""
    jobs = _backend().jobs(statuses=list(statuses), pool=pool, team=team, limit=limit)
    for job in jobs:
        click.echo(
            f"{job['id']}  {job['status']:<9} {_place(job):<5} {job['pool']:<10} "
            f"{job['team']:<12} {job['owner']:<16} {job['name']}"
        )


def _place(job: Json) -> str:
    """ "#12" when exact, "~#12300" when only estimated (far back in a deep queue)."""
    if job["queue_position"]:
        return f"#{job['queue_position']}"
    if job["queue_position_estimate"]:
        return f"~#{job['queue_position_estimate']}"
    return ""


@main.command()
def teams() -> None:
    """List the teams: fair-share weight, recent usage against the share, GPUs running
    per pool against the quota, and queued jobs."""
    for team in _backend().teams():
        running, quota = team["gpus_running"], team["quota_gpus"]
        held = ", ".join(
            f"{pool}={running.get(pool, 0)}"
            + (f"/{quota[pool]}" if quota.get(pool) is not None else "")
            for pool in sorted(set(running) | set(quota))
        )
        click.echo(
            f"{team['name']:<20} share {team['share']:g} ({team['share_fraction']:.0%})  "
            f"usage {team['usage_fraction']:.0%} ({team['usage_gpu_seconds'] / 3600:.1f} GPU-h)  "
            f"running {held or '-'}  queued {team['jobs_queued']}"
        )


@main.command(name="set-team")
@click.argument("name")
@click.option("--share", type=float, default=1.0, show_default=True, help="fair-share weight")
@click.option("--quota", "quotas", multiple=True, metavar="POOL=GPUS",
              help="GPUs the team may hold in a pool at once (repeatable)")  # fmt: skip
def set_team(name: str, share: float, quotas: tuple[str, ...]) -> None:
    """Create or change a team (what PUT /api/teams/NAME does)."""
    from pydantic import ValidationError

    from jobqueue.specs import TeamSpec, check_team_name

    try:
        check_team_name(name)
        quota_gpus = {}
        for entry in quotas:
            pool, _, count = entry.partition("=")
            quota_gpus[pool] = int(count)
        spec = TeamSpec.model_validate({"share": share, "quota_gpus": quota_gpus})
    except (ValidationError, ValueError) as exc:
        raise click.BadParameter(str(exc)) from exc
    team = _queue().set_team(name, spec)
    click.echo(_json(team.public()))


@main.command()
@click.argument("job_id", type=click.UUID)
def show(job_id: UUID) -> None:
    """Show one job as JSON."""
    click.echo(_json(_backend().get(job_id)))


@main.command()
@click.argument("job_id", type=click.UUID)
@click.option("--after", type=int, default=0)
def logs(job_id: UUID, after: int) -> None:
    """Print a job's stored log lines."""
    for text in _backend().logs(job_id, after=after):
        click.echo(text)


def _action(name: str, help: str) -> click.Command:
    @main.command(name=name, help=help)
    @click.argument("job_id", type=click.UUID)
    def command(job_id: UUID, **options: Any) -> None:
        job = _backend().act(job_id, name, **options)
        asked = job["requested_action"]
        click.echo(f"{job['id']} {job['status']}" + (f" ({asked} requested)" if asked else ""))

    return command


_action("release", "Queue a held job.")
_action("force-start", "Put a pending or queued job ahead of every non-forced job.")
_action("pause", "Pause a job (a running one checkpoints).")
_action("resume", "Queue a paused job again.")
click.option("--force", is_flag=True, help="kill at once, no grace period")(
    _action("cancel", "Cancel a job (a running one is stopped).")
)
click.option("--reason", required=True)(
    _action("mark-failed", "End a job as failed, with a reason.")
)
click.option("--from-checkpoint/--from-scratch", default=True)(
    _action("retry", "Queue a failed or cancelled job for a new attempt.")
)

# The sweep commands use the helpers above.
from jobqueue.cli.sweeps import sweep  # noqa: E402

main.add_command(sweep)


if __name__ == "__main__":  # pragma: no cover
    main()
