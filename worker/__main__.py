"""``python -m worker`` (also ``jobqueue worker``): run the worker daemon of this host."""

from __future__ import annotations

import logging
import os
import sys

import click

from jobqueue.errors import SchemaNotAtHead
from jobqueue.settings import get_settings
from worker.daemon import WorkerConfig, WorkerDaemon
from worker.gpus import discover
from worker.kinds import KindsError, load_kinds


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--gpus",
    default="auto",
    show_default=True,
    help="auto (NVML, else nvidia-smi, else none), none, or ids like 0,1,2,3",
)
@click.option(
    "--virtual-gpus",
    type=click.IntRange(0, 64),
    default=None,
    help="N fake GPU slots (ids 0…N-1), for machines without GPUs",
)
@click.option(
    "--virtual-gpus-if-none",
    "fallback_virtual",
    type=click.IntRange(1, 64),
    default=None,
    help="with --gpus auto: N virtual slots when no GPU is found",
)
@click.option("--pool", "pools", multiple=True, help="pool to serve (repeatable; default: default)")
@click.option(
    "--kinds",
    "kinds_file",
    type=click.Path(dir_okay=False),
    default=lambda: os.environ.get("JOBQUEUE_KINDS_FILE"),
    help="TOML file of the job kinds this host runs [env JOBQUEUE_KINDS_FILE]",
)
@click.option("--name", default=None, help="worker name (default: the hostname)")
@click.option(
    "--slots",
    type=click.IntRange(1, 256),
    default=None,
    help="most jobs at once (default: max(4, 2 × GPUs))",
)
@click.option("--log-level", default="INFO", show_default=True)
def main(gpus: str, virtual_gpus: int | None, fallback_virtual: int | None,
         pools: tuple[str, ...], kinds_file: str | None, name: str | None, slots: int | None,
         log_level: str) -> None:  # fmt: skip
    """Claim jobs that fit this host's free GPUs and run them."""
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if not kinds_file:
        raise click.UsageError("give the job kinds this host runs: --kinds FILE (TOML)")
    try:
        kinds = load_kinds(kinds_file)
        inventory = discover(gpus, virtual_gpus)
        if not inventory.ids and fallback_virtual and gpus.strip().lower() == "auto":
            logging.getLogger("worker").warning(
                "no GPU found: using %d virtual GPU slots", fallback_virtual
            )
            inventory = discover(gpus, fallback_virtual)
    except (KindsError, ValueError) as exc:
        raise click.UsageError(str(exc)) from exc
    settings = get_settings()
    config = WorkerConfig.build(
        settings, kinds=kinds, gpus=inventory, name=name, pools=pools, slots=slots
    )
    try:
        WorkerDaemon(config, settings).serve_forever()
    except SchemaNotAtHead as exc:
        click.echo(f"jobqueue worker: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
