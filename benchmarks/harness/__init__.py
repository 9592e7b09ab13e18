"""What the benchmarks share, one job a module.

- :mod:`.databases`: the server (``--database-url``, ``JOBQUEUE_BENCH_DATABASE_URL`` or an
  embedded PostgreSQL) and the run's databases, cloned from a migrated template by
  :class:`jobqueue.testing.DatabaseFactory` and dropped at the end, SIGTERM included;
- :mod:`.jobs`: the benchmark jobs, and finished and queued rows of them loaded in bulk;
- :mod:`.servers`: server processes in their own process group (the worker daemon,
  gunicorn with the command line of ``jobqueue api``), always stopped;
- :mod:`.load`: HTTP load, closed loop, with ``wrk`` or Python threads;
- :mod:`.trace`: the database round trips of one API request, from libpq's protocol trace;
- :mod:`.cpu`: CPU seconds of processes on this machine (PostgreSQL backends, a group);
- :mod:`.stats`: percentiles;
- :mod:`.report`: progress lines, the table with targets and PASS/FAIL, the notes under it
  and the last one's load average;
- :mod:`.cli`: the flags every benchmark takes (``--database-url``, ``--quick``).
"""
