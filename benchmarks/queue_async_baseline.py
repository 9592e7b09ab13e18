"""The strong baseline of the queue benchmark: what the fastest PostgreSQL queues do,
written by hand with async psycopg 3 — and without their safety.

- enqueue: one ``INSERT … RETURNING`` that also NOTIFYs, autocommit (one round trip);
- drain: one worker of ``slots`` asyncio tasks; each claim takes as many jobs as there are
  free slots in one ``UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED) RETURNING``,
  and finished jobs are acknowledged in batches (one ``UPDATE … WHERE id = ANY(…)`` per
  batch, flushed when the batch is full or a few milliseconds old);
- an idle worker waits on LISTEN, so a submit wakes it at once.

No lease, no fencing token, no event rows, no retry bookkeeping: a job whose worker dies
between claim and ack stays ``running`` for ever. It is the floor the issue measures
jobqueue against (pg-boss, graphile-worker, PgQueuer and oban-py were all slower than it
on this machine), not a design to copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time

import psycopg

from benchmarks.harness.jobs import CONFIG_SQL

CHANNEL = "baseline_jobs"
ACK_BATCH = 64
ACK_MAX_AGE = 0.002

TABLE = """
    CREATE TABLE IF NOT EXISTS async_jobs (
        id bigserial PRIMARY KEY,
        status text NOT NULL DEFAULT 'queued',
        payload jsonb NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX IF NOT EXISTS async_jobs_queued ON async_jobs (id) WHERE status = 'queued';
"""
ENQUEUE = f"""
    WITH new AS (INSERT INTO async_jobs (payload) VALUES ({CONFIG_SQL}) RETURNING id)
    SELECT id, pg_notify('{CHANNEL}', '') FROM new
"""
CLAIM = """
    UPDATE async_jobs SET status = 'running'
    WHERE id IN (SELECT id FROM async_jobs WHERE status = 'queued' ORDER BY id
                 LIMIT %s FOR UPDATE SKIP LOCKED)
    RETURNING id
"""
ACK = "UPDATE async_jobs SET status = 'done' WHERE id = ANY(%s)"


async def prepare(conninfo: str, queued: int = 0) -> None:
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        await conn.execute(TABLE)
        await conn.execute("TRUNCATE async_jobs")
        if queued:
            await conn.execute(
                f"INSERT INTO async_jobs (payload) SELECT {CONFIG_SQL} FROM generate_series(1, %s)",
                (queued,),
            )
        await conn.execute("VACUUM ANALYZE async_jobs")


class AsyncWorker:
    """``slots`` concurrent no-op tasks, claims in batches, acks in batches, LISTEN."""

    def __init__(self, conninfo: str, slots: int, on_start=None):
        self.conninfo = conninfo
        self.slots = slots
        self.on_start = on_start
        self.done = 0
        self._free = asyncio.Semaphore(slots)
        self._acks: list[int] = []
        self._ack_since = 0.0
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        claim = await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True)
        ack = await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True)
        listen = await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True)
        await listen.execute(f"LISTEN {CHANNEL}")
        listener = asyncio.create_task(self._listen(listen))
        acker = asyncio.create_task(self._ack_loop(ack))
        try:
            while not self._stop.is_set():
                await self._free.acquire()
                free = 1
                while free < self.slots and not self._free.locked():
                    await self._free.acquire()
                    free += 1
                rows = await (await claim.execute(CLAIM, (free,))).fetchall()
                for _ in range(free - len(rows)):
                    self._free.release()
                for (job_id,) in rows:
                    task = asyncio.create_task(self._task(job_id))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                if not rows:
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), 1.0)
        finally:
            listener.cancel()
            acker.cancel()
            for conn in (claim, ack, listen):
                await conn.close()

    async def _task(self, job_id: int) -> None:
        if self.on_start is not None:
            self.on_start(job_id)
        self._acks.append(job_id)
        if len(self._acks) == 1:
            self._ack_since = time.perf_counter()
        self._free.release()

    async def _ack_loop(self, conn: psycopg.AsyncConnection) -> None:
        while True:
            if self._acks and (
                len(self._acks) >= ACK_BATCH or time.perf_counter() - self._ack_since >= ACK_MAX_AGE
            ):
                batch, self._acks = self._acks, []
                await conn.execute(ACK, (batch,))
                self.done += len(batch)
            else:
                await asyncio.sleep(ACK_MAX_AGE / 2)

    async def _listen(self, conn: psycopg.AsyncConnection) -> None:
        async for _ in conn.notifies():
            self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()


async def drain(conninfo: str, jobs: int, slots: int) -> float:
    """Seconds to drain ``jobs`` queued jobs (already loaded) with one worker."""
    worker = AsyncWorker(conninfo, slots)
    started = time.perf_counter()
    runner = asyncio.create_task(worker.run())
    while worker.done < jobs:
        await asyncio.sleep(0.001)
    elapsed = time.perf_counter() - started
    worker.stop()
    await runner
    return elapsed


async def enqueue(conninfo: str, jobs: int) -> float:
    """Seconds to submit ``jobs`` jobs one at a time, each its own round trip."""
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        started = time.perf_counter()
        for _ in range(jobs):
            await conn.execute(ENQUEUE)
        return time.perf_counter() - started


async def pickup(conninfo: str, jobs: int, gap: float) -> list[float]:
    """Seconds from each submit's return to its task starting on an idle worker."""
    started: dict[int, float] = {}
    arrived = asyncio.Event()

    def on_start(job_id: int) -> None:
        started[job_id] = time.perf_counter()
        arrived.set()

    worker = AsyncWorker(conninfo, 10, on_start=on_start)
    runner = asyncio.create_task(worker.run())
    await asyncio.sleep(0.2)
    latencies = []
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        for _ in range(jobs):
            arrived.clear()
            t0 = time.perf_counter()
            (job_id, _) = await (await conn.execute(ENQUEUE)).fetchone()
            while job_id not in started:
                await asyncio.wait_for(arrived.wait(), 10)
                arrived.clear()
            latencies.append(started[job_id] - t0)
            await asyncio.sleep(gap)
    worker.stop()
    await runner
    return latencies


def median(values: list[float]) -> float:
    return statistics.median(values)
