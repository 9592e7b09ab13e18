"""The worker's parts on their own: report lines, kinds files, GPU discovery, and the
per-job supervisor's protocol (with real processes; no database)."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import stat
import sys
import time
from pathlib import Path

import pytest

from jobqueue import report
from jobqueue.examples import EXAMPLES_DIR, KINDS_FILE
from jobqueue.outcomes import StopCause
from worker.gpus import GpuInventory, discover
from worker.kinds import KindsError, load_kinds
from worker.process import JobProcess
from worker.reports import Report, parse_report

# -- report lines --------------------------------------------------------------------------


def test_report_lines_are_parsed():
    line = '::jobqueue:: {"progress": 0.42, "step": 420, "metrics": {"loss": 1.93}, "message": "epoch 3"}'  # noqa: E501
    assert parse_report(line) == Report(
        fraction=0.42, step=420, message="epoch 3", metrics={"loss": 1.93}
    )
    ckpt = parse_report('::jobqueue:: {"checkpoint": "/shared/ckpt/x/step-420", "step": 420}')
    assert ckpt == Report(step=420, checkpoint="/shared/ckpt/x/step-420")
    assert not ckpt.has_progress  # a checkpoint's step is not a progress report
    assert parse_report('::jobqueue:: {"step": 7}').has_progress
    assert parse_report('::jobqueue:: {"progress": 1.5}').fraction == 1.0  # clamped
    assert parse_report('::jobqueue:: {"progress": -1}').fraction == 0.0
    assert parse_report('::jobqueue:: {"step": 12.9}').step == 12
    assert parse_report("::jobqueue:: {}") == Report()
    metrics = parse_report('::jobqueue:: {"metrics": {"a": NaN, "b": Infinity, "c": 2}}').metrics
    assert metrics == {"a": "nan", "b": "inf", "c": 2}  # storable, not lost


@pytest.mark.parametrize(
    "line",
    [
        "plain output",
        " ::jobqueue:: {}",
        "::jobqueue::{}",
        "::jobqueue:: {not json",
        "::jobqueue:: [1, 2]",
        '::jobqueue:: "text"',
        '::jobqueue:: {"progress": "half"}',
        '::jobqueue:: {"progress": true}',
        '::jobqueue:: {"progress": NaN}',
        '::jobqueue:: {"step": "3"}',
        '::jobqueue:: {"step": false}',
        '::jobqueue:: {"step": Infinity}',
        '::jobqueue:: {"step": 1e300}',
        '::jobqueue:: {"step": 9223372036854775808}',
        '::jobqueue:: {"message": 5}',
        '::jobqueue:: {"metrics": [1]}',
        '::jobqueue:: {"checkpoint": 42}',
        '::jobqueue:: {"message": "a\\u0000b"}',
        '::jobqueue:: {"metrics": {"x": ["\\u0000"]}}',
        "::jobqueue:: " + "[" * 100_000 + "]" * 100_000,
        '::jobqueue:: {"metrics": {"a": ' + "[" * 900 + "]" * 900 + "}}",
    ],
)
def test_malformed_or_unstorable_report_lines_are_log_lines(line):
    assert parse_report(line) is None


def test_report_helper_prints_lines_the_worker_reads(monkeypatch, tmp_path):
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    report.progress(0.5, step=50, metrics={"loss": 0.25}, message="half")
    report.checkpoint("s3://bucket/run 1/step-50", step=50)
    report.progress(step=51)
    lines = out.getvalue().splitlines()
    assert [parse_report(line) for line in lines] == [
        Report(fraction=0.5, step=50, message="half", metrics={"loss": 0.25}),
        Report(step=50, checkpoint="s3://bucket/run 1/step-50"),
        Report(step=51),
    ]
    config = tmp_path / "config.json"
    config.write_text('{"lr": 0.1}')
    monkeypatch.setenv("JOBQUEUE_CONFIG", str(config))
    monkeypatch.setenv("JOBQUEUE_RESUME_FROM", "s3://bucket/run 1/step-50")
    monkeypatch.setenv("JOBQUEUE_CHECKPOINT_DIR", "/ckpt/job")
    assert report.config() == {"lr": 0.1}
    assert report.resume_from() == "s3://bucket/run 1/step-50"
    assert report.checkpoint_dir() == "/ckpt/job"
    monkeypatch.setenv("JOBQUEUE_RESUME_FROM", "")
    assert report.resume_from() is None


# -- kinds files ---------------------------------------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "kinds.toml"
    path.write_text(text)
    return path


def test_kinds_file_with_python_placeholder_workdir_grace_and_env(tmp_path):
    path = write(
        tmp_path,
        """
[kinds.train]
argv = ["{python}", "train.py", "--py={python}", "{python}"]
workdir = "jobs/train"
grace_seconds = 120
env = { WANDB_MODE = "offline" }

[kinds."eval.v2"]
argv = ["/usr/bin/env", "true"]
""",
    )
    kinds = load_kinds(path)
    assert set(kinds) == {"train", "eval.v2"}
    train = kinds["train"]
    # Only a whole "{python}" item is the worker's interpreter.
    assert train.argv == (sys.executable, "train.py", "--py={python}", sys.executable)
    assert train.workdir == (tmp_path / "jobs" / "train").resolve()  # relative to the file
    assert train.grace_seconds == 120.0
    assert train.env == {"WANDB_MODE": "offline"}
    other = kinds["eval.v2"]
    assert other.argv == ("/usr/bin/env", "true")
    assert other.workdir is None and other.grace_seconds is None and other.env == {}


def test_example_kinds_file_loads():
    kinds = load_kinds(KINDS_FILE)
    sgd = kinds["train-sgd"]
    assert sgd.argv == (sys.executable, "train_sgd.py")
    assert sgd.workdir == EXAMPLES_DIR
    assert (sgd.workdir / sgd.argv[1]).is_file()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not = [valid", "is not valid TOML"),
        ("[other]\nx = 1\n", "has no [kinds.NAME] tables"),
        ("kinds = 3\n", "has no [kinds.NAME] tables"),
        ('[kinds."bad name"]\nargv = ["x"]\n', "a kind name is 1–100 letters"),
        ("[kinds]\nt = 3\n", "[kinds.t] must be a table"),
        ('[kinds.t]\nargv = ["x"]\ncommand = "y"\n', "unknown keys ['command']"),
        ("[kinds.t]\nworkdir = '.'\n", "argv must be a non-empty list of strings"),
        ("[kinds.t]\nargv = []\n", "argv must be a non-empty list of strings"),
        ('[kinds.t]\nargv = "python train.py"\n', "argv must be a non-empty list of strings"),
        ('[kinds.t]\nargv = ["x", 1]\n', "argv must be a non-empty list of strings"),
        ('[kinds.t]\nargv = ["x"]\nworkdir = 3\n', "workdir must be a string"),
        ('[kinds.t]\nargv = ["x"]\ngrace_seconds = -1\n', "grace_seconds must be a number ≥ 0"),
        ('[kinds.t]\nargv = ["x"]\ngrace_seconds = true\n', "grace_seconds must be a number"),
        ('[kinds.t]\nargv = ["x"]\ngrace_seconds = "10"\n', "grace_seconds must be a number"),
        ('[kinds.t]\nargv = ["x"]\nenv = { A = 1 }\n', "env must be a table of strings"),
        ('[kinds.t]\nargv = ["x"]\nenv = "A=1"\n', "env must be a table of strings"),
    ],
)
def test_kinds_file_errors_say_what_is_wrong(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(KindsError) as caught:
        load_kinds(path)
    assert message in str(caught.value)
    assert str(path) in str(caught.value)


def test_missing_kinds_file(tmp_path):
    with pytest.raises(KindsError, match="does not exist"):
        load_kinds(tmp_path / "nope.toml")


# -- GPU discovery -------------------------------------------------------------------------


def test_gpus_none_listed_and_virtual():
    assert discover("none") == GpuInventory((), "none")
    assert discover(" NONE ") == GpuInventory((), "none")
    assert discover("0,1,3") == GpuInventory((0, 1, 3), "given")
    assert discover("3") == GpuInventory((3,), "given")  # taken as given, without a GPU here
    assert discover(" 2, 0 ") == GpuInventory((2, 0), "given")
    virtual = discover("auto", virtual=2)
    assert virtual == GpuInventory((0, 1), "virtual")
    assert virtual.devices() == [{"id": 0, "name": "virtual"}, {"id": 1, "name": "virtual"}]
    assert discover("0,1", virtual=3).ids == (0, 1, 2)
    assert discover(virtual=0) == GpuInventory((), "virtual")


@pytest.mark.parametrize("bad", ["x", "0,x", "1.5", "-1", "0,-2", "1,1", "all"])
def test_bad_gpu_lists_are_refused(bad):
    with pytest.raises(ValueError, match="--gpus"):
        discover(bad)


def test_negative_virtual_gpus_are_refused():
    with pytest.raises(ValueError, match="--virtual-gpus"):
        discover(virtual=-1)


def _without_nvml(monkeypatch, path: Path) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # `import pynvml` fails
    monkeypatch.setenv("PATH", str(path))


def test_auto_without_nvml_or_nvidia_smi_finds_none(monkeypatch, tmp_path):
    _without_nvml(monkeypatch, tmp_path)
    assert discover("auto") == GpuInventory((), "none")
    assert discover() == GpuInventory((), "none")


def test_auto_on_this_machine():
    """This machine as it is: with no NVML and no nvidia-smi it has no GPUs."""
    import shutil

    try:
        import pynvml  # noqa: F401

        has_nvml = True
    except ImportError:
        has_nvml = False
    found = discover("auto")
    if not has_nvml and shutil.which("nvidia-smi") is None:
        assert found == GpuInventory((), "none")
    else:
        assert found.source in ("nvml", "nvidia-smi", "none")
        assert found.ids == tuple(range(len(found.ids)))
        assert [d["id"] for d in found.devices()] == list(found.ids)


def test_auto_falls_back_to_nvidia_smi(monkeypatch, tmp_path):
    smi = tmp_path / "nvidia-smi"
    smi.write_text(
        "#!/bin/sh\n"
        "echo '0, NVIDIA H200, 37, 1024, 143771'\n"
        "echo '1, NVIDIA H200, [N/A], 0, 143771'\n"
    )
    smi.chmod(smi.stat().st_mode | stat.S_IXUSR)
    _without_nvml(monkeypatch, tmp_path)
    found = discover("auto")
    assert found == GpuInventory((0, 1), "nvidia-smi")
    first, second = found.devices()
    assert first == {
        "id": 0,
        "name": "NVIDIA H200",
        "utilization": 37.0,
        "memory_used": 1024 * 1024 * 1024,
        "memory_total": 143771 * 1024 * 1024,
    }
    assert second["utilization"] is None and second["memory_used"] == 0
    # Listed ids still get the stats of the devices nvidia-smi knows.
    given = discover("1,5")
    assert [d.get("name") for d in given.devices()] == ["NVIDIA H200", None]


# -- the per-job supervisor -----------------------------------------------------------------


class Lines:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def __call__(self, stream: str, text: str) -> None:
        self.seen.append((stream, text))


def start(argv: list[str], *, lease: float = 30, grace: float = 5) -> tuple[JobProcess, Lines]:
    lines = Lines()
    process = JobProcess(
        argv, env=dict(os.environ), cwd=None, grace_seconds=grace, lease_seconds=lease,
        on_line=lines,
    )  # fmt: skip
    return process, lines


@contextlib.contextmanager
def supervised(argv: list[str], **kw):
    process, lines = start(argv, **kw)
    try:
        yield process, lines
    finally:
        process.stop(StopCause.CANCEL, kill=True)
        process.wait(10)


def wait_started(process: JobProcess) -> int:
    deadline = time.monotonic() + 10
    while process.job_pid is None:
        assert time.monotonic() < deadline, "the job did not start"
        time.sleep(0.02)
    return process.job_pid


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


SH_IGNORING_TERM = ["sh", "-c", "trap '' TERM; echo ready; sleep 30"]


def wait_ready(process: JobProcess, lines) -> None:
    """Until the job said ``ready``: SIGTERM before its trap is set would end it."""
    wait_started(process)
    deadline = time.monotonic() + 10
    while ("stdout", "ready") not in lines.seen:
        assert time.monotonic() < deadline, "the job never said it was ready"
        time.sleep(0.02)


def test_job_output_reaches_the_worker_line_by_line_and_exit_code_is_told():
    with supervised(["sh", "-c", "echo out; echo err >&2; echo 'two words'; exit 7"]) as (p, lines):
        ended = p.wait(10)
    assert ended is not None and ended.exit_code == 7 and ended.signal is None
    assert ended.stopped_for is None
    assert sorted(lines.seen) == [("stderr", "err"), ("stdout", "out"), ("stdout", "two words")]


def test_program_that_cannot_start_is_a_spawn_error(tmp_path):
    with supervised([str(tmp_path / "missing")]) as (process, _):
        ended = process.wait(10)
    assert ended is not None and ended.spawn_error is not None
    assert "missing" in ended.spawn_error


def test_renewed_lease_keeps_the_job_and_an_unrenewed_one_stops_it_in_time():
    with supervised(["sleep", "30"], lease=3, grace=5) as (process, _):
        pid = wait_started(process)
        renewing_until = time.monotonic() + 4  # longer than the 3 s lease
        while time.monotonic() < renewing_until:
            process.lease(3)
            assert process.wait(0.3) is None
        assert alive(pid)
        last_renewal = time.monotonic()
        ended = process.wait(6)
        stopped_after = time.monotonic() - last_renewal
    assert ended is not None, "the job outlived its lease"
    assert stopped_after < 2.5  # before the lease ran out, with its safety margin
    assert ended.signal == signal.SIGTERM and ended.stopped_for is StopCause.LEASE
    assert not alive(pid)


def test_worker_gone_stops_the_job_at_once():
    with supervised(["sleep", "30"], lease=30, grace=5) as (process, _):
        pid = wait_started(process)
        assert process.supervisor.stdin is not None
        closed = time.monotonic()
        process.supervisor.stdin.close()  # what a dying worker does to its pipes
        ended = process.wait(5)
        assert ended is not None and time.monotonic() - closed < 3
    assert ended.signal == signal.SIGTERM and ended.stopped_for is StopCause.LEASE
    assert not alive(pid)


def test_stop_asks_politely_then_kills_after_the_grace_period():
    with supervised(SH_IGNORING_TERM, lease=30, grace=1) as (process, lines):
        wait_ready(process, lines)
        asked = time.monotonic()
        process.stop(StopCause.PAUSE)
        process.stop(StopCause.CANCEL)  # a stronger request replaces a pause
        ended = process.wait(10)
        took = time.monotonic() - asked
    assert ended is not None and ended.signal == signal.SIGKILL
    assert ended.stopped_for is StopCause.CANCEL
    assert 0.8 <= took < 4


@pytest.mark.parametrize(
    ("asks", "decides"),
    [
        ((StopCause.PAUSE, StopCause.SHUTDOWN), StopCause.PAUSE),
        ((StopCause.SHUTDOWN, StopCause.PAUSE), StopCause.PAUSE),
        ((StopCause.SHUTDOWN, StopCause.CANCEL), StopCause.CANCEL),
        ((StopCause.CANCEL, StopCause.PAUSE), StopCause.CANCEL),
        ((StopCause.FAIL, StopCause.CANCEL), StopCause.FAIL),
    ],
)
def test_the_strongest_ask_decides_why_the_job_stopped(asks, decides):
    with supervised(["sleep", "30"], lease=30, grace=5) as (process, _):
        wait_started(process)
        for cause in asks:
            process.stop(cause)
        ended = process.wait(5)
    assert ended is not None and ended.signal == signal.SIGTERM
    assert ended.stopped_for is decides


def test_kill_ends_a_job_that_ignores_sigterm_at_once():
    with supervised(SH_IGNORING_TERM, lease=30, grace=30) as (process, lines):
        wait_ready(process, lines)
        pid = wait_started(process)
        process.stop(StopCause.CANCEL)
        assert process.wait(1) is None  # SIGTERM is ignored; the grace is 30 s
        asked = time.monotonic()
        process.stop(StopCause.CANCEL, kill=True)
        ended = process.wait(5)
        assert ended is not None and time.monotonic() - asked < 2
    assert ended.signal == signal.SIGKILL and ended.stopped_for is StopCause.CANCEL
    assert not alive(pid)


def test_grace_outlasts_one_lease_while_the_lease_is_renewed():
    # Checkpointing takes 4.5 s, longer than one 4 s lease; the grace period is 8 s.
    job = ["sh", "-c", "trap 'sleep 4.5; exit 0' TERM; while :; do sleep 0.1; done"]
    with supervised(job, lease=4, grace=8) as (process, _):
        wait_started(process)
        process.lease(4)
        time.sleep(0.3)
        process.stop(StopCause.PAUSE)
        ended = None
        for _ in range(30):  # the worker keeps renewing while the job checkpoints
            process.lease(4)
            ended = process.wait(0.3)
            if ended is not None:
                break
    assert ended is not None
    assert ended.exit_code == 0 and ended.signal is None  # it had the time to finish
    assert ended.stopped_for is StopCause.PAUSE


def test_grace_never_outlasts_the_lease_when_it_is_not_renewed():
    with supervised(SH_IGNORING_TERM, lease=4, grace=30) as (process, lines):
        wait_ready(process, lines)
        process.lease(4)
        asked = time.monotonic()
        process.stop(StopCause.PAUSE)
        ended = process.wait(8)
        took = time.monotonic() - asked
    assert ended is not None and ended.signal == signal.SIGKILL
    assert ended.stopped_for is StopCause.PAUSE
    assert took < 4
