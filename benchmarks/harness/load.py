"""HTTP load on a server, closed loop: each connection sends its next request when the
answer to the last one arrived.

The generator is ``wrk`` (``apt-get install wrk``) with a small Lua script, else a Python one
(threads with keep-alive ``http.client`` connections).
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import os
import secrets
import shutil
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.harness.cpu import server_cpu
from benchmarks.harness.report import log
from benchmarks.harness.servers import Gunicorn
from benchmarks.harness.stats import nearest_rank

WRK_SCRIPT = r"""
-- wrk -s this.lua URL -- METHOD PATHS_FILE TOKEN
local paths, method, body, headers, idx = {}, "GET", nil, {}, 0

function init(args)
  method = args[1]
  for line in io.lines(args[2]) do
    if #line > 0 then paths[#paths + 1] = line end
  end
  idx = math.random(#paths)
  if args[3] ~= nil and args[3] ~= "" then headers["Authorization"] = "Bearer " .. args[3] end
  if method == "POST" then
    body = "{}"
    headers["Content-Type"] = "application/json"
  end
end

function request()
  idx = idx % #paths + 1
  return wrk.format(method, paths[idx], headers, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "JQBENCH {\"requests\": %d, \"duration_us\": %d, \"p50_us\": %d, \"p99_us\": %d, " ..
    "\"mean_us\": %.1f, \"max_us\": %d, \"connect\": %d, \"read\": %d, \"write\": %d, " ..
    "\"status\": %d, \"timeout\": %d}\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.mean, latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
"""


@dataclasses.dataclass
class Load:
    """One measured load run."""

    requests: int
    seconds: float
    p50: float
    p99: float
    errors: int  # transport errors and non-2xx answers
    client_cpu: float  # CPU seconds of the load generator
    server_cpu: dict[int, float] = dataclasses.field(default_factory=dict)  # per gunicorn pid
    db_cpu: float | None = None
    #: req/s of earlier attempts dropped because one gunicorn worker got every connection
    lopsided: list[float] = dataclasses.field(default_factory=list)
    #: req/s of every round, when this is the median of several (see median_round)
    rounds: list[float] = dataclasses.field(default_factory=list)

    def one_worker_only(self, workers: int) -> bool:
        """Did a single process do (nearly) all the work while there were several?"""
        total = sum(self.server_cpu.values())
        return workers > 1 and total > 0 and max(self.server_cpu.values()) > 0.9 * total

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def cpu_line(self) -> str:
        per = 1000.0 / max(self.requests, 1)
        app = sum(self.server_cpu.values())
        shares = sorted((v for v in self.server_cpu.values() if v > 0.05), reverse=True)
        split = "/".join(f"{100 * v / app:.0f}%" for v in shares) if app else "-"
        db = f"{self.db_cpu * per:.2f} ms" if self.db_cpu is not None else "n/a"
        again = (
            f"; measured again after {len(self.lopsided)} run(s) where one worker got every "
            f"connection ({', '.join(f'{r:,.0f}' for r in self.lopsided)} req/s)"
            if self.lopsided
            else ""
        )
        of_rounds = (
            f"; median of {len(self.rounds)} rounds: "
            f"{', '.join(f'{r:,.0f}' for r in self.rounds)} req/s"
            if self.rounds
            else ""
        )
        return (
            f"CPU per request: gunicorn {app * per:.2f} ms (split over processes {split}), "
            f"PostgreSQL {db}, load generator {self.client_cpu * per:.2f} ms{again}{of_rounds}"
        )


class Wrk:
    name = "wrk"

    def __init__(self, workdir: Path, connections: int):
        self.script = workdir / "jqbench.lua"
        self.script.write_text(WRK_SCRIPT)
        self.workdir = workdir
        self.connections = connections

    def run(self, port: int, method: str, paths: Sequence[str], token: str, seconds: float) -> Load:
        paths_file = self.workdir / f"paths-{secrets.token_hex(4)}.txt"
        paths_file.write_text("\n".join(paths) + "\n")
        argv = [
            "wrk", "-t1", f"-c{self.connections}", f"-d{max(1, round(seconds))}s",
            "--timeout", "5s", "-s", str(self.script), f"http://127.0.0.1:{port}",
            "--", method, str(paths_file), token,
        ]  # fmt: skip
        before = os.times()
        done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
        after = os.times()
        paths_file.unlink()
        line = next((x for x in done.stdout.splitlines() if x.startswith("JQBENCH ")), None)
        if done.returncode != 0 or line is None:
            raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout}\n{done.stderr}")
        r = json.loads(line[len("JQBENCH ") :])
        return Load(
            requests=r["requests"],
            seconds=r["duration_us"] / 1e6,
            p50=r["p50_us"] / 1e6,
            p99=r["p99_us"] / 1e6,
            errors=sum(r[k] for k in ("connect", "read", "write", "status", "timeout")),
            client_cpu=(after.children_user - before.children_user)
            + (after.children_system - before.children_system),
        )


class PythonLoad:
    """Threads, each with one keep-alive http.client connection, for a bounded time."""

    name = "python (http.client threads)"

    def __init__(self, workdir: Path, connections: int):
        self.connections = connections

    def run(self, port: int, method: str, paths: Sequence[str], token: str, seconds: float) -> Load:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        body = None
        if method == "POST":
            body, headers = b"{}", {**headers, "Content-Type": "application/json"}
        latencies: list[list[float]] = [[] for _ in range(self.connections)]
        errors = [0] * self.connections
        start = time.perf_counter()
        deadline = start + seconds

        def client(i: int) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            n = i
            mine = latencies[i]
            try:
                while (t0 := time.perf_counter()) < deadline:
                    path = paths[n % len(paths)]
                    n += self.connections
                    try:
                        conn.request(method, path, body=body, headers=headers)
                        resp = conn.getresponse()
                        resp.read()
                        mine.append(time.perf_counter() - t0)
                        if not 200 <= resp.status < 300:
                            errors[i] += 1
                    except (OSError, http.client.HTTPException):
                        errors[i] += 1
                        conn.close()
                        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            finally:
                conn.close()

        cpu0 = time.process_time()
        threads = [threading.Thread(target=client, args=(i,)) for i in range(self.connections)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - start
        everything = sorted(x for xs in latencies for x in xs)
        return Load(
            requests=len(everything),
            seconds=elapsed,
            p50=nearest_rank(everything, 50),
            p99=nearest_rank(everything, 99),
            errors=sum(errors),
            client_cpu=time.process_time() - cpu0,
        )


def load_generator(choice: str, workdir: Path, connections: int) -> Wrk | PythonLoad:
    """``wrk``, ``python``, or ``auto``: wrk when it is installed, else Python threads."""
    if choice == "auto":
        choice = "wrk" if shutil.which("wrk") else "python"
    return (Wrk if choice == "wrk" else PythonLoad)(workdir, connections)


def median_round(loads: Sequence[Load]) -> Load:
    """The round with the median req/s, with every round's req/s noted on it."""
    ordered = sorted(loads, key=lambda load: load.rps)
    chosen = dataclasses.replace(ordered[len(ordered) // 2])
    chosen.rounds = [load.rps for load in loads]
    return chosen


def measure(
    generator: Wrk | PythonLoad,
    server: Gunicorn,
    database: str,
    method: str,
    paths: Sequence[str],
    token: str,
    warmup: float,
    seconds: float,
    *,
    retries: int = 1,
) -> Load:
    """Warm up, then one measured run with the CPU the server processes used meanwhile.

    gunicorn's gthread workers keep the keep-alive connections they accepted, and now and
    then one worker accepts all of them while the others idle (about one run in four here
    with 2 workers): such a run is noted and measured again on fresh connections, up to
    ``retries`` times."""
    if warmup > 0:
        generator.run(server.port, method, paths, token, warmup)
    dropped: list[float] = []
    while True:
        app0, db0 = server.cpu(), server_cpu(database)
        load = generator.run(server.port, method, paths, token, seconds)
        app1, db1 = server.cpu(), server_cpu(database)
        load.server_cpu = {pid: app1[pid] - app0.get(pid, 0.0) for pid in app1}
        load.db_cpu = None if db0 is None or db1 is None else db1 - db0
        if not load.one_worker_only(server.workers) or len(dropped) >= retries:
            load.lopsided = dropped
            return load
        log(f"      one worker got every connection ({load.rps:,.0f} req/s): measuring again")
        dropped.append(load.rps)
