"""A sweep of 10,000 jobs through the REST API, served by gunicorn as deployed.

Run ``python -m benchmarks.sweep_bench [--database-url URL] [--quick]``. In one run it
measures, each median of a few rounds on a fresh database each:

1. ``POST /api/sweeps`` of N configs over one job body, until the answer (every job
   created), against N ``POST /api/training`` of the same jobs over 8 keep-alive
   connections (the only way before sweeps) and against a bare ``INSERT … SELECT`` of N
   rows of the same size into a table of the same columns, without indexes, events or
   triggers (the floor of writing N rows in one statement);
2. ``POST /api/sweeps/{id}/cancel`` of those N queued jobs against a bare ``UPDATE`` of
   the N floor rows.

Targets (issue "sweeps and deep queues"): the sweep submit ≤ 2 s and the bulk cancel
≤ 1 s for 10,000 jobs, on 2 cores.
"""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.harness.cli import benchmark_parser
from benchmarks.harness.databases import benchmark_databases
from benchmarks.harness.report import Report, Stopwatch, log, verdict
from benchmarks.harness.servers import ROOT, GunicornServers, clean_env, root_pythonpath
from jobqueue.cli.serving import API_THREADS, default_api_processes
from jobqueue.db import connect_raw

JOBQUEUE_APP = "api:create_app()"
JOB = {"kind": "train", "gpus": 1, "pool": "default", "config": {"epochs": 10, "model": "resnet50"}}
CONNECTIONS = 8


def configs(n: int) -> list[dict]:
    return [{"lr": 10 ** -(1 + i % 4), "batch_size": 32 * (1 + i % 8), "seed": i} for i in range(n)]


class Client:
    """Keep-alive HTTP/1.1 with a bearer token."""

    def __init__(self, port: int, token: str):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def post(self, path: str, body: object) -> tuple[int, dict]:
        self.conn.request("POST", path, body=json.dumps(body), headers=self.headers)
        response = self.conn.getresponse()
        return response.status, json.loads(response.read())

    def close(self) -> None:
        self.conn.close()


def sweep_round(port: int, token: str, n: int) -> tuple[float, float]:
    client = Client(port, token)
    try:
        t0 = time.perf_counter()
        status, body = client.post(
            "/api/sweeps", {"name": "bench", "job": JOB, "configs": configs(n)}
        )
        submit = time.perf_counter() - t0
        assert status == 201 and len(body["jobs"]) == n, (status, str(body)[:300])
        t0 = time.perf_counter()
        status, done = client.post(f"/api/sweeps/{body['sweep']['id']}/cancel", {})
        cancel = time.perf_counter() - t0
        assert status == 200 and done["changed"] == n, (status, str(done)[:300])
        return submit, cancel
    finally:
        client.close()


def singles_round(port: int, token: str, n: int) -> float:
    bodies = [{**JOB, "name": f"bench[{i}]", "config": {**JOB["config"], **c}}
              for i, c in enumerate(configs(n))]  # fmt: skip

    def post_share(share: list[dict]) -> None:
        client = Client(port, token)
        try:
            for body in share:
                status, _ = client.post("/api/training", body)
                assert status == 201, status
        finally:
            client.close()

    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(CONNECTIONS) as pool:
        list(pool.map(post_share, [bodies[i::CONNECTIONS] for i in range(CONNECTIONS)]))
    return time.perf_counter() - t0


def floor_round(url: str, n: int) -> tuple[float, float]:
    rows = json.dumps([{**JOB, "name": f"bench[{i}]", "config": {**JOB["config"], **c}}
                       for i, c in enumerate(configs(n))])  # fmt: skip
    with connect_raw(url) as conn:
        conn.execute("DROP TABLE IF EXISTS floor_jobs")
        conn.execute("CREATE TABLE floor_jobs (id uuid DEFAULT gen_random_uuid(), name text,"
                     " kind text, config jsonb, status text, pool text, gpus int,"
                     " created_at timestamptz DEFAULT now())")  # fmt: skip
        conn.commit()
        t0 = time.perf_counter()
        conn.execute(
            "INSERT INTO floor_jobs (name, kind, config, status, pool, gpus)"
            " SELECT r.name, r.kind, r.config, 'queued', r.pool, r.gpus"
            " FROM jsonb_to_recordset(%s::jsonb) AS r(name text, kind text, config jsonb,"
            " pool text, gpus int)",
            (rows,),
        )
        conn.commit()
        insert = time.perf_counter() - t0
        t0 = time.perf_counter()
        conn.execute("UPDATE floor_jobs SET status = 'cancelled' WHERE status = 'queued'")
        conn.commit()
        return insert, time.perf_counter() - t0


def main(argv: Sequence[str] | None = None) -> int:
    parser = benchmark_parser(
        "python -m benchmarks.sweep_bench",
        "A 10,000-job sweep through the REST API against single submits and a bare INSERT.",
        quick_help="1,000 jobs, one round",
    )
    args = parser.parse_args(argv)
    n, rounds = (1_000, 1) if args.quick else (10_000, 3)
    token = secrets.token_hex(16)
    report = Report()
    clock = Stopwatch()
    with benchmark_databases(args.database_url) as dbs, tempfile.TemporaryDirectory() as tmp:
        servers = GunicornServers(Path(tmp), access_log=False)
        try:
            sweeps, cancels, singles, floors = [], [], [], []
            for r in range(1, rounds + 1):
                url = dbs.jobqueue()
                env = {
                    **clean_env("PROMETHEUS_MULTIPROC_DIR"),
                    "DATABASE_URL": url,
                    "JOBQUEUE_AUTH": "on",
                    "JOBQUEUE_API_TOKENS": f"bench:operator:{token}",
                    "PROMETHEUS_MULTIPROC_DIR": tmp,
                    "PYTHONPATH": root_pythonpath(),
                }
                shape = (default_api_processes(), API_THREADS)
                server = servers.start(JOBQUEUE_APP, env, ROOT, f"round{r}", shape)
                submit, cancel = sweep_round(server.port, token, n)
                single = singles_round(server.port, token, n)
                servers.stop(server)
                floor = floor_round(dbs.plain(), n)
                log(
                    f"round {r}: sweep {submit:.2f} s, cancel {cancel:.2f} s, "
                    f"{n:,} single submits {single:.2f} s, floor {floor[0]:.3f}/{floor[1]:.3f} s"
                )
                sweeps.append(submit)
                cancels.append(cancel)
                singles.append(single)
                floors.append(floor)
        finally:
            servers.stop_all()
    med = statistics.median
    sweep_s, cancel_s, single_s = med(sweeps), med(cancels), med(singles)
    floor_insert, floor_update = med(f[0] for f in floors), med(f[1] for f in floors)
    report.add(f"POST /api/sweeps of {n:,} configs", f"{sweep_s:.2f} s",
               f"{n:,} POST /api/training ({CONNECTIONS} connections): {single_s:.2f} s",
               f"{sweep_s / single_s:.3f}x", "<= 2 s", verdict(sweep_s <= 2.0))  # fmt: skip
    report.add(f"  the same against a bare INSERT of {n:,} rows", f"{sweep_s:.2f} s",
               f"{floor_insert:.3f} s", f"{sweep_s / floor_insert:.1f}x", "-", "info")  # fmt: skip
    report.add(f"POST /api/sweeps/{{id}}/cancel of {n:,} queued jobs", f"{cancel_s:.2f} s",
               f"bare UPDATE of {n:,} rows: {floor_update:.3f} s",
               f"{cancel_s / floor_update:.1f}x", "<= 1 s", verdict(cancel_s <= 1.0))  # fmt: skip
    report.notes.append(
        f"Median of {rounds} rounds, each on a fresh database; the API as `jobqueue api` serves "
        f"it ({default_api_processes()} processes x {API_THREADS} threads). The floor table has "
        "the jobs' main columns and no index, event or trigger."
    )
    report.notes.append(clock.machine_note(dbs.server_version, quick=args.quick))
    print(report.render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
