"""The web monitor in a real browser: Playwright for Python driving Debian's Chromium.

The real app is served over HTTP on a loopback port and a real worker daemon
runs the example training job (``examples/train_sgd.py``) on 2 virtual GPUs,
so every state the page shows comes from PostgreSQL rows a worker wrote.
The browser is Debian's ``/usr/bin/chromium`` (headless); nothing is downloaded.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.is_file():
    pytest.skip(f"{CHROMIUM} is not installed", allow_module_level=True)
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="the playwright Python package is not installed"
)

from werkzeug.serving import make_server  # noqa: E402

from api.app import create_app  # noqa: E402
from jobqueue.db import make_engine  # noqa: E402
from jobqueue.examples import KINDS_FILE  # noqa: E402
from jobqueue.planner import run_pass  # noqa: E402
from jobqueue.queue import JobQueue  # noqa: E402
from jobqueue.settings import Settings  # noqa: E402
from jobqueue.specs import JobSpec, TeamSpec  # noqa: E402
from jobqueue.states import JobStatus, allowed_actions  # noqa: E402
from jobqueue.sweep_specs import SweepSpec  # noqa: E402
from worker.daemon import WorkerConfig, WorkerDaemon  # noqa: E402
from worker.gpus import discover  # noqa: E402
from worker.kinds import load_kinds  # noqa: E402

KINDS = KINDS_FILE
SCREENSHOT_COPY = Path("/tmp/jobqueue-job-page.png")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
WAIT_MS = 30_000  # the longest any single wait on the page may take
POLL_MS = 2_000  # the monitor's REFRESH_MS
BADGE = "[data-testid=job-status]"
TOKEN = "s3cret-browser-token"

pytestmark = [pytest.mark.system, pytest.mark.browser, pytest.mark.timeout(120)]


# -- the system under test ------------------------------------------------------------


class System:
    """The API served on a loopback port, plus a core queue on the same database."""

    def __init__(self, base_url: str, queue: JobQueue):
        self.base_url = base_url
        self.queue = queue

    def submit(self, **body: Any):
        body.setdefault("kind", "train-sgd")
        body.setdefault("config", {})
        body.setdefault("gpus", 1)
        job, _ = self.queue.submit(JobSpec.model_validate(body), actor="test")
        return job

    def job(self, job_id) -> Any:
        return self.queue.get(job_id)

    def wait_status(self, job_id, *statuses: JobStatus, timeout: float = 30.0):
        deadline = time.monotonic() + timeout
        while True:
            job = self.queue.get(job_id)
            if job.status in statuses:
                return job
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} is {job.status.value}, not {statuses}")
            time.sleep(0.1)

    def wait_step(self, job_id, at_least: int, timeout: float = 30.0):
        deadline = time.monotonic() + timeout
        while True:
            job = self.queue.get(job_id)
            step = (job.progress or {}).get("step") or 0
            if step >= at_least and job.checkpoint:
                return job
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} reached step {step} only ({job.status})")
            time.sleep(0.1)


@contextlib.contextmanager
def serving(settings: Settings) -> Iterator[System]:
    engine = make_engine(settings.require_database_url(), pool_size=10)
    server = None
    thread = None
    try:
        # The worker daemon runs the lease sweep; the app's own sweeper thread could not
        # be stopped before the test's database is dropped.
        app = create_app(settings, engine=engine, background=False)
        server = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, name="browser-api", daemon=True)
        thread.start()
        yield System(f"http://127.0.0.1:{server.server_port}", JobQueue(engine, settings))
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(10)
        engine.dispose()


def make_settings(database_url: str, tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = dict(
        database_url=database_url,
        auth="off",
        lease_seconds=10,
        heartbeat_seconds=0.5,
        sweep_seconds=1,
        grace_seconds=5,
        retry_backoff_seconds=1,
        state_dir=tmp_path / "state",
    )
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def system(database_url: str, tmp_path: Path) -> Iterator[System]:
    """The API and one worker (2 virtual GPUs, the example kinds) on a fresh database."""
    settings = make_settings(database_url, tmp_path)
    config = WorkerConfig.build(
        settings,
        kinds=load_kinds(KINDS),
        gpus=discover(virtual=2),
        name=f"browser-{uuid.uuid4().hex[:8]}",
    )
    with serving(settings) as served:
        daemon = WorkerDaemon(config, settings)
        try:
            daemon.start()
            yield served
        finally:
            daemon.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield page
        assert not errors, f"JavaScript errors on the page: {errors}"
    finally:
        context.close()


# -- helpers --------------------------------------------------------------------------


def open_job(page, system: System, job_id) -> None:
    page.goto(f"{system.base_url}/#/jobs/{job_id}")
    page.wait_for_selector(BADGE)


def badge_is(page, status: str, timeout: int = WAIT_MS) -> None:
    page.wait_for_selector(f"{BADGE}[data-status={status}]", timeout=timeout)


def watch_statuses(page, until: str, timeout: float = 30.0) -> list[str]:
    """The badge's statuses as the page showed them, in order, until ``until`` shows."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = page.get_attribute(BADGE, "data-status", timeout=WAIT_MS)
        if status and (not seen or seen[-1] != status):
            seen.append(status)
        if status == until:
            return seen
        page.wait_for_timeout(100)
    raise AssertionError(f"the page never showed {until!r}; it showed {seen}")


def fact(page, name: str) -> str:
    return page.text_content(f"[data-fact='{name}']") or ""


def sgd(steps: int, step_seconds: float, every: int = 20) -> dict[str, Any]:
    return {"steps": steps, "step_seconds": step_seconds, "checkpoint_every": every}


def shown_actions(page) -> list[str]:
    return page.eval_on_selector_all("[data-action]", "els => els.map(e => e.dataset.action)")


def as_buttons(actions: list[str]) -> list[str]:
    """The buttons for a job's ``allowed_actions``: all but ``patch``, which is no button."""
    return [a for a in actions if a != "patch"]


def until(page, condition: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    """Let the page run until ``condition()`` holds (checked every 50 ms), at most ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        page.wait_for_timeout(50)


class Polls:
    """The answers the page got to its reads of one job, in the order it asked."""

    KINDS = ("events", "metrics", "logs")

    def __init__(self, page, job_id):
        self.base = f"/api/training/{job_id}"
        self.answers: dict[str, list[tuple[dict[str, list[str]], Any]]] = {
            kind: [] for kind in self.KINDS
        }
        self.requested: list[str] = []  # every GET of the job's paths, as it started
        page.on("request", self._request)
        page.on("response", self._response)

    def _kind(self, url: str) -> str | None:
        path = urlsplit(url).path
        if path == self.base:
            return "job"
        rest = path.removeprefix(self.base + "/")
        return rest if rest in self.KINDS and path.startswith(self.base + "/") else None

    def _request(self, request) -> None:
        if request.method == "GET" and self._kind(request.url):
            self.requested.append(request.url)

    def _response(self, response) -> None:
        kind = self._kind(response.url)
        if kind in self.KINDS and response.request.method == "GET" and response.ok:
            self.answers[kind].append((parse_qs(urlsplit(response.url).query), response.json()))

    def count(self) -> int:
        """How many polls have been answered in full (events, metrics and logs)."""
        return min(len(answers) for answers in self.answers.values())


# -- the tests ------------------------------------------------------------------------


def test_submit_from_the_page_lands_on_the_new_job_which_runs_to_completion(page, system):
    page.goto(f"{system.base_url}/#/submit")
    page.fill("input[name=name]", "from-the-browser")
    assert page.input_value("input[name=kind]") == "train-sgd"
    page.fill(
        "textarea[name=config]", '{"steps": 60, "step_seconds": 0.02, "checkpoint_every": 20}'
    )
    page.fill("input[name=gpus]", "1")
    page.fill("input[name=priority]", "60")
    page.click("form.submit button[type=submit]")

    page.wait_for_url(re.compile(r"#/jobs/[0-9a-f-]{36}$"), timeout=WAIT_MS)
    job_id = uuid.UUID(page.url.rsplit("/", 1)[1])
    page.wait_for_selector("h1:has-text('from-the-browser')")
    job = system.job(job_id)
    assert (job.name, job.kind, job.gpus, job.priority) == ("from-the-browser", "train-sgd", 1, 60)
    assert job.config == sgd(60, 0.02)

    badge_is(page, "completed")
    assert system.job(job_id).status is JobStatus.COMPLETED
    assert "step 60/60" in page.text_content("[data-testid=progress-message]")
    assert "completed" in fact(page, "Ended by")
    assert fact(page, "Team") == job.team == "default"
    assert fact(page, "Owner") == job.owner
    # The log the worker kept is on the page, and the list page lists the job with its team.
    page.wait_for_selector("[data-testid=logs]:has-text('done')")
    page.click("a:has-text('all jobs')")
    row = page.wait_for_selector(f"tr[data-job='{job_id}']")
    assert row.query_selector(f"{BADGE}[data-status=completed]") is not None
    assert row.query_selector("[data-testid=job-team]").text_content() == "default"


def test_submit_form_shows_the_api_error_and_bad_json_without_leaving(page, system):
    page.goto(f"{system.base_url}/#/submit")
    page.fill("input[name=name]", "broken")
    page.fill("textarea[name=config]", "{not json")
    page.click("form.submit button[type=submit]")
    page.wait_for_selector("[data-testid=submit-error]:has-text('not valid JSON')")

    page.fill("textarea[name=config]", "[1, 2]")  # valid JSON, but the API wants an object
    page.click("form.submit button[type=submit]")
    page.wait_for_selector("[data-testid=submit-error]:has-text('config:')")
    assert page.url.endswith("#/submit")
    jobs, _ = system.queue.list_jobs(limit=10)
    assert jobs == []


def test_held_job_submitted_with_the_hold_box_then_force_started(page, system, tmp_path):
    # Both virtual GPUs are busy, so the forced job visibly waits in the queue first.
    blocker = system.submit(name="blocker", gpus=2, config=sgd(10_000, 0.05))
    system.wait_status(blocker.id, JobStatus.RUNNING)

    page.goto(f"{system.base_url}/#/submit")
    page.fill("input[name=name]", "held-then-forced")
    page.fill(
        "textarea[name=config]", '{"steps": 150, "step_seconds": 0.02, "checkpoint_every": 20}'
    )
    page.check("input[name=hold]")
    page.click("form.submit button[type=submit]")
    page.wait_for_url(re.compile(r"#/jobs/[0-9a-f-]{36}$"), timeout=WAIT_MS)
    job_id = uuid.UUID(page.url.rsplit("/", 1)[1])
    badge_is(page, "pending")
    assert system.job(job_id).status is JobStatus.PENDING
    assert "held" in fact(page, "Waiting").lower()

    page.click("[data-action=force-start]")
    badge_is(page, "queued")
    page.wait_for_selector("[data-fact=Priority]:has-text('(forced)')")
    job = system.job(job_id)
    assert job.status is JobStatus.QUEUED and job.forced

    # Free the GPUs: the forced job goes first.
    system.queue.cancel(blocker.id, actor="test", force=True)
    seen = watch_statuses(page, until="completed", timeout=45)
    assert seen[0] == "queued" and seen[-1] == "completed", seen
    assert "running" in seen, seen
    assert seen.index("queued") < seen.index("running") < seen.index("completed"), seen
    assert system.job(job_id).status is JobStatus.COMPLETED
    page.wait_for_selector("[data-testid=events] li:has-text('force-start')")

    # A screenshot of the job page, kept with the test run and copied to a fixed place.
    page.wait_for_selector("[data-testid=metrics-chart]")
    shot = tmp_path / "job-page.png"
    page.screenshot(path=str(shot), full_page=True)
    shutil.copyfile(shot, SCREENSHOT_COPY)
    for path in (shot, SCREENSHOT_COPY):
        data = path.read_bytes()
        assert data.startswith(PNG_MAGIC), path
        assert len(data) > 5_000, (path, len(data))


def test_pause_a_running_job_then_resume_it_continues_from_its_checkpoint(page, system):
    job = system.submit(name="pause-me", config=sgd(240, 0.03))
    system.wait_step(job.id, 40)
    open_job(page, system, job.id)
    badge_is(page, "running")

    page.click("[data-action=pause]")
    badge_is(page, "paused")
    paused = system.job(job.id)
    assert paused.status is JobStatus.PAUSED
    assert paused.worker_name is None and paused.requested_action is None
    # The REST API, which the page reads, says the same.
    shown = requests.get(f"{system.base_url}/api/training/{job.id}", timeout=10).json()
    assert shown["status"] == "paused" and shown["worker"] is None
    assert shown["checkpoint"]["step"] == paused.checkpoint["step"]
    assert paused.checkpoint and paused.checkpoint["step"] >= 40
    paused_at = paused.checkpoint["step"]
    assert paused_at < 240
    page.wait_for_selector(f"[data-fact=Checkpoint]:has-text('step {paused_at}')")
    assert page.query_selector("[data-action=pause]") is None
    assert page.query_selector("[data-action=resume]") is not None

    page.click("[data-action=resume]")
    seen = watch_statuses(page, until="completed", timeout=45)
    assert "running" in seen, seen
    done = system.job(job.id)
    assert done.status is JobStatus.COMPLETED
    assert done.attempt == 1  # a pause is not a failure
    lines, _ = system.queue.logs(job.id, after=0, limit=10_000)
    texts = [line.text for line in lines]
    assert any(f"at step {paused_at}" in t and t.startswith("resuming from") for t in texts)
    # Training went on from the checkpoint: no step before it was reported again.
    steps_after_resume = [
        int(t.split()[1])
        for t in texts[texts.index(next(t for t in texts if t.startswith("resuming"))) :]
        if re.fullmatch(r"step \d+ loss \S+", t)
    ]
    assert steps_after_resume and min(steps_after_resume) > paused_at
    events = [e.action for e in system.queue.events(job.id)]
    assert "pause" in events and "resume" in events


def test_mark_failed_asks_for_the_reason_and_shows_it(page, system):
    job = system.submit(name="diverging", config=sgd(2_000, 0.05))
    system.wait_step(job.id, 20)
    open_job(page, system, job.id)
    badge_is(page, "running")

    prompts: list[str] = []

    def answer(dialog) -> None:
        prompts.append(dialog.message)
        dialog.accept("diverged")

    page.on("dialog", answer)
    page.click("[data-action=mark-failed]")
    badge_is(page, "failed")
    assert prompts and "fail" in prompts[0].lower()
    failed = system.job(job.id)
    assert failed.status is JobStatus.FAILED
    assert failed.termination_reason == "marked_failed"
    page.wait_for_selector("[data-testid=events] li:has-text('diverged')")
    assert "marked_failed" in fact(page, "Ended by")
    reasons = [e.reason for e in system.queue.events(job.id)]
    assert "diverged" in reasons
    # A failed job offers retry and nothing that the API would refuse.
    actions = page.eval_on_selector_all("[data-action]", "els => els.map(e => e.dataset.action)")
    assert actions == ["retry"]


def test_mark_failed_dismissed_prompt_changes_nothing(page, system):
    job = system.submit(name="keep-me", hold=True, config=sgd(20, 0.01))
    open_job(page, system, job.id)
    badge_is(page, "pending")
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.click("[data-action=mark-failed]")
    page.wait_for_timeout(500)
    assert system.job(job.id).status is JobStatus.PENDING
    assert page.get_attribute(BADGE, "data-status") == "pending"


def test_retry_a_cancelled_job_from_the_page(page, system):
    job = system.submit(name="retry-me", config=sgd(4_000, 0.05))
    system.wait_step(job.id, 20)
    system.queue.cancel(job.id, actor="test")
    cancelled = system.wait_status(job.id, JobStatus.CANCELLED)
    ckpt_step = cancelled.checkpoint["step"]
    open_job(page, system, job.id)
    badge_is(page, "cancelled")

    page.click("[data-action=retry]")
    page.wait_for_selector(f"{BADGE}[data-status=queued], {BADGE}[data-status=running]")
    badge_is(page, "running")
    retried = system.wait_status(job.id, JobStatus.RUNNING)
    assert retried.attempt == 1
    events = [e.action for e in system.queue.events(job.id)]
    assert "retry" in events
    # From the checkpoint: the new run says where it resumed.
    page.wait_for_selector(f"[data-testid=logs]:has-text('at step {ckpt_step}')")


def test_a_stale_button_shows_the_conflict_inline(page, system):
    job = system.submit(name="stale", hold=True, config=sgd(20, 0.01))
    open_job(page, system, job.id)
    badge_is(page, "pending")
    # Right after the page refreshed (every 2 s), the job changes elsewhere: the page
    # still offers "Start now", which the API now refuses.
    with page.expect_response(lambda r: r.url.endswith(f"/api/training/{job.id}")):
        pass
    system.queue.cancel(job.id, actor="someone-else")
    page.click("[data-action=force-start]")

    error = page.wait_for_selector("[data-testid=action-error]:not(:empty)")
    assert "cannot force-start" in error.text_content()
    assert "cancelled" in error.text_content()
    # The next refresh shows the real state and keeps the message.
    badge_is(page, "cancelled")
    assert "cannot force-start" in page.text_content("[data-testid=action-error]")
    assert system.job(job.id).status is JobStatus.CANCELLED


def test_token_login_when_auth_is_on(page, database_url, tmp_path):
    settings = make_settings(database_url, tmp_path, auth="on", api_tokens=f"ops:operator:{TOKEN}")
    with serving(settings) as served:
        served.submit(name="visible-after-login", hold=True)
        # The API refuses without the token.
        assert requests.get(f"{served.base_url}/api/training", timeout=10).status_code == 401

        page.goto(served.base_url + "/")
        assert page.get_attribute("body", "data-auth") == "on"
        page.wait_for_selector("#login[open]")
        page.fill("#login-token", "wrong-token")
        page.click("#login-form button[type=submit]")
        page.wait_for_selector("#login[open] #login-error:has-text('not accepted')")

        page.fill("#login-token", TOKEN)
        page.click("#login-form button[type=submit]")
        page.wait_for_selector("#login", state="hidden")
        page.wait_for_selector("a:has-text('visible-after-login')")
        assert page.evaluate("localStorage.getItem('jobqueue.token')") == TOKEN

        # An action with the token is recorded under the token's name.
        page.click("a:has-text('visible-after-login')")
        badge_is(page, "pending")
        page.click("[data-action=release]")
        badge_is(page, "queued")
        job = served.queue.list_jobs(limit=1)[0][0]
        assert job.status is JobStatus.QUEUED
        assert served.queue.events(job.id)[-1].actor == "ops"


def test_an_action_during_a_slow_poll_waits_for_it_and_log_lines_show_once(page, system):
    job = system.submit(name="log-once", config=sgd(4_000, 0.02, every=50))
    system.wait_step(job.id, 50)
    open_job(page, system, job.id)
    badge_is(page, "running")
    page.wait_for_selector("[data-testid=logs]:has-text('step 50 loss')")

    # Hold back the log request of the page's next poll and act meanwhile: the page
    # must not start a second poll (it would read the same lines) until the first ends.
    held: list[Any] = []

    def hold_first(route) -> None:
        if not held:
            held.append(route)
        else:
            route.continue_()

    polls = Polls(page, job.id)
    page.route("**/logs?after=*", hold_first)
    until(page, lambda: bool(held), "the page to poll its log", timeout=10)
    started = len(polls.requested)  # the held poll's reads
    system.wait_step(job.id, (system.job(job.id).progress or {}).get("step", 0) + 30)
    with page.expect_response(lambda r: r.url.endswith(f"/api/training/{job.id}/pause")):
        page.click("[data-action=pause]")
    system.wait_status(job.id, JobStatus.PAUSED)
    page.wait_for_timeout(300)  # time enough for a poll the action started to show
    assert polls.requested[started:] == [], "a poll started while another was in flight"

    held[0].continue_()
    # The held poll lands, the one the action asked for follows at once.
    badge_is(page, "paused")
    page.wait_for_selector("[data-testid=logs]:has-text('stopping at step')")
    landed = polls.count()
    until(page, lambda: polls.count() > landed, "one more poll")

    shown = page.text_content("[data-testid=logs]").splitlines()
    steps = [line for line in shown if re.fullmatch(r"step \d+ loss \S+", line)]
    assert steps, shown
    duplicated = sorted({line for line in steps if steps.count(line) > 1})
    assert not duplicated, f"log lines shown twice: {duplicated[:5]}"
    lines, _ = system.queue.logs(job.id, after=0, limit=10_000)
    assert shown == [line.text for line in lines]


def test_the_buttons_are_the_jobs_allowed_actions(page, system):
    # Pool "elsewhere" has no worker: its jobs wait, and keep their status for the test.
    held = system.submit(name="held", hold=True, pool="elsewhere")
    queued = system.submit(name="queued", pool="elsewhere")
    paused = system.submit(name="paused", pool="elsewhere")
    system.queue.pause(paused.id, actor="test")
    failed = system.submit(name="failed", pool="elsewhere")
    system.queue.mark_failed(failed.id, actor="test", reason="broken")
    cancelled = system.submit(name="cancelled", pool="elsewhere")
    system.queue.cancel(cancelled.id, actor="test")
    expected = {
        "pending": ["release", "force-start", "pause", "cancel", "mark-failed"],
        "queued": ["force-start", "pause", "cancel", "mark-failed"],
        "paused": ["resume", "cancel", "mark-failed"],
        "failed": ["retry"],
        "cancelled": ["retry"],
    }
    for job in (held, queued, paused, failed, cancelled):
        served = requests.get(f"{system.base_url}/api/training/{job.id}", timeout=10).json()
        status = served["status"]
        open_job(page, system, job.id)
        badge_is(page, status)
        assert shown_actions(page) == as_buttons(served["allowed_actions"]), status
        assert shown_actions(page) == expected[status], status

    # The page keeps no state table of its own: it shows what the server says. A running
    # job that is being cancelled accepts only a second cancel, which kills it at once.
    running = system.submit(name="being-cancelled", config=sgd(4_000, 0.05))
    system.wait_status(running.id, JobStatus.RUNNING)

    def requested(action: str) -> dict[str, Any]:
        accepted = [a.value for a in allowed_actions(JobStatus.RUNNING, action)]
        return {"requested_action": action, "allowed_actions": accepted}

    said = requested("cancel")
    assert said["allowed_actions"] == ["cancel"]

    def as_if_requested(route) -> None:
        response = route.fetch()
        route.fulfill(response=response, json={**response.json(), **said})

    page.route(f"**/api/training/{running.id}", as_if_requested)
    open_job(page, system, running.id)
    page.wait_for_selector(f"{BADGE}:has-text('cancelling')")
    assert shown_actions(page) == ["cancel"]
    assert page.text_content("[data-action=cancel]") == "Kill now"
    # A job being paused accepts a cancel or a mark-failed over it, and a second pause.
    said = requested("pause")
    page.wait_for_selector(f"{BADGE}:has-text('pausing')", timeout=POLL_MS * 3)
    assert shown_actions(page) == ["pause", "cancel", "mark-failed"]
    assert system.job(running.id).requested_action is None  # none of it was real


def test_the_job_page_asks_only_for_what_follows_what_it_holds(page, system):
    job = system.submit(name="incremental", hold=True, config=sgd(300, 0.02, every=50))
    polls = Polls(page, job.id)
    open_job(page, system, job.id)
    page.wait_for_selector("[data-testid=events] li:has-text('submit')")
    until(page, lambda: polls.count() >= 2, "two polls")
    # Events and log lines come after what it holds; holding no point, it asks for the
    # newest metrics.
    submit_id = system.queue.events(job.id)[0].id
    assert polls.answers["events"][1][0]["after"] == [str(submit_id)]
    assert "after" not in polls.answers["metrics"][1][0]
    assert polls.answers["logs"][1][0]["after"] == ["0"]

    # New rows come server-side: the page shows them.
    system.queue.release(job.id, actor="test")
    badge_is(page, "completed")
    page.wait_for_selector("[data-testid=events] li:has-text('exit')")
    page.wait_for_selector("[data-testid=logs]:has-text('done')")
    page.wait_for_selector("[data-testid=metrics-chart]")
    settled = polls.count()
    until(page, lambda: polls.count() > settled, "a poll after the job completed")

    # Each read asked for what follows the last item the page held from earlier answers.
    last = 0
    for query, body in polls.answers["events"]:
        assert query["after"] == [str(last)], (query, last)
        if body["items"]:
            last = body["items"][-1]["id"]  # oldest first
    newest: int | None = None
    for query, body in polls.answers["metrics"]:
        if newest is None:
            assert "after" not in query and query["limit"] == ["5000"], query
        else:
            assert query["after"] == [str(newest)], (query, newest)
        if body["points"]:
            newest = body["points"][-1]["n"]  # oldest first
    following = "0"
    for query, body in polls.answers["logs"]:
        assert query["after"] == [following], (query, following)
        following = str(body["next"])
    # Some reads after the first brought new rows, and the page shows each row once.
    assert any(body["items"] for _, body in polls.answers["events"][1:])
    assert any(body["points"] for _, body in polls.answers["metrics"][1:])
    shown_events = page.eval_on_selector_all(
        "[data-testid=events] li", "els => els.map(e => Number(e.dataset.event))"
    )
    assert shown_events == [e.id for e in system.queue.events(job.id)]
    points = system.queue.metrics(job.id, limit=10_000)
    assert len(points) >= 10
    assert page.get_attribute("[data-testid=metrics-chart]", "data-points") == str(len(points))
    lines, _ = system.queue.logs(job.id, after=0, limit=10_000)
    assert page.text_content("[data-testid=logs]").splitlines() == [x.text for x in lines]

    # Another job's page starts from nothing, and this job's polling stops.
    other = system.submit(name="other", hold=True)
    others = Polls(page, other.id)
    page.click("a:has-text('all jobs')")
    page.click("a:has-text('other')")
    page.wait_for_selector("h1:has-text('other')")
    until(page, lambda: others.count() >= 1, "the other job's first poll")
    assert others.answers["events"][0][0]["after"] == ["0"]
    assert "after" not in others.answers["metrics"][0][0]
    assert others.answers["logs"][0][0]["after"] == ["0"]
    assert page.eval_on_selector_all("[data-testid=events] li", "els => els.length") == 1
    before = len(polls.requested)
    page.wait_for_timeout(POLL_MS + 500)
    assert polls.requested[before:] == []


def test_a_failing_poll_shows_the_error_backs_off_and_recovers(page, system):
    asked: list[float] = []

    def fail_first(route) -> None:
        asked.append(time.monotonic())
        if len(asked) == 1:
            route.fulfill(status=503, json={"error": {"message": "database is down"}})
        else:
            route.continue_()

    system.submit(name="waiting", pool="elsewhere")
    page.route("**/api/queue", fail_first)
    page.goto(f"{system.base_url}/#/queue")
    page.wait_for_selector("[data-testid=error]:has-text('database is down')")
    page.wait_for_selector("h2:has-text('Pool elsewhere')", timeout=POLL_MS * 4)
    assert page.query_selector("[data-testid=error]") is None
    # After a failure the next try waits twice as long as a poll.
    assert asked[1] - asked[0] >= 2 * POLL_MS / 1000 - 0.2, asked

    # Leaving the view stops its polling.
    page.click("[data-nav=submit]")
    page.wait_for_selector("form.submit")
    before = len(asked)
    page.wait_for_timeout(POLL_MS + 500)
    assert len(asked) == before


def test_the_queue_shows_team_usage_and_the_workers_their_reservations(page, system):
    system.queue.set_team("vision", TeamSpec(share=1, quota_gpus={"default": 2}))
    busy = system.submit(name="busy", team="vision", config=sgd(2000, 0.02),
                         max_runtime_seconds=3600)  # fmt: skip
    system.wait_step(busy.id, 1)
    big = system.submit(name="big", team="nlp", gpus=2, config=sgd(10, 0.01))
    run_pass(system.queue.engine, system.queue.settings, force=True)
    page.goto(f"{system.base_url}/#/queue")
    vision = page.wait_for_selector("[data-testid=teams] tr[data-team=vision]")
    assert "default: 1 / 2" in vision.inner_text()
    assert page.wait_for_selector("[data-testid=teams] tr[data-team=nlp]")
    page.wait_for_selector(f"a[href='#/jobs/{big.id}']")
    # Its expected start: when the busy job's time limit ends.
    expected = page.inner_text(f"tr:has(a[href='#/jobs/{big.id}']) [data-testid=expected]")
    assert expected not in ("", "–")
    page.click("[data-nav=workers]")
    cell = page.wait_for_selector("[data-testid=reservation]:has-text('big')")
    assert "2 GPUs from" in cell.inner_text()
    system.queue.cancel(busy.id, actor="test", force=True)


def test_the_sweep_page_shows_configs_beside_metrics_sorts_and_acts_on_all(page, system):
    body = {"name": "lrs", "max_running": 2, "objective": {"metric": "loss", "mode": "min"},
            "job": {"kind": "train-sgd", "gpus": 1, "config": sgd(3000, 0.02)},
            "grid": {"lr": [0.5, 0.05, 0.005]}}  # fmt: skip
    done = system.queue.submit_sweep(SweepSpec.model_validate(body), actor="test")
    first, second = (system.wait_step(item.id, 20) for item in done.items[:2])
    page.goto(f"{system.base_url}/#/sweeps")
    page.click(f"[data-testid=sweeps] tr[data-sweep='{done.sweep.id}'] a")
    page.wait_for_selector("[data-testid=sweep-jobs] tr[data-index='2']")
    assert "held" in page.inner_text("[data-testid=sweep-jobs] tr[data-index='2']")
    assert '"lr": 0.005' not in page.inner_text("[data-testid=sweep-jobs]")  # one column per key
    assert "0.005" in page.inner_text("[data-testid=sweep-jobs] tr[data-index='2'] td[data-key=lr]")
    assert "Best: lrs[" in page.inner_text("[data-testid=best]")
    # Sorting by the metric asks the server for that order: the jobs with a loss first.
    page.click("[data-testid=sweep-jobs] th[data-sort='metric:loss']")
    page.wait_for_selector("[data-testid=sweep-jobs] th[data-sort='metric:loss']:has-text('▲')")
    order = page.eval_on_selector_all(
        "[data-testid=sweep-jobs] tbody tr", "rows => rows.map(r => Number(r.dataset.index))"
    )
    assert order[-1] == 2 and sorted(order[:2]) == [0, 1]
    page.click("[data-action=pause]")
    message = page.wait_for_selector("[data-testid=sweep-error]:has-text('changed')")
    assert "2 running asked to stop" in message.inner_text()
    for job in (first, second):
        system.wait_status(job.id, JobStatus.PAUSED)
    summary = system.queue.sweep(done.sweep.id)
    assert summary.counts == {"paused": 3}
