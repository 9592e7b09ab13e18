"""Prometheus metrics: jobs by status and pool, oldest queued age, actions, latency.

Counters and histograms live in the process that served the request; under
gunicorn set ``PROMETHEUS_MULTIPROC_DIR`` (``jobqueue api`` does) so that
every worker process adds to one view. Job gauges are read from the database
at scrape time, so they are right whichever process answers.
"""

from __future__ import annotations

import logging
import os
import time

from flask import Flask, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily

from jobqueue.reads import Reads

log = logging.getLogger(__name__)

#: Methods a latency label names as they are; any other a client invents counts as
#: "other", so that clients cannot grow the metrics without bound.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class _JobGauges:
    """Reads job counts from the database when Prometheus scrapes."""

    def __init__(self, reads: Reads):
        self.reads = reads

    def describe(self):
        return []

    def collect(self):
        by_status = GaugeMetricFamily(
            "jobqueue_jobs", "Jobs by status and pool", labels=["status", "pool"]
        )
        oldest = GaugeMetricFamily(
            "jobqueue_oldest_queued_seconds",
            "Age of the oldest claimable queued job, per pool",
            labels=["pool"],
        )
        try:
            stats = self.reads.queue_stats()
            for (status, pool), count in stats.jobs.items():
                by_status.add_metric([status, pool], count)
            for pool, seconds in stats.oldest_queued_seconds.items():
                oldest.add_metric([pool], seconds)
        except Exception:
            log.warning("metrics: could not read job counts", exc_info=True)
        yield by_status
        yield oldest


class ApiMetrics:
    def __init__(self, reads: Reads):
        self.registry = CollectorRegistry(auto_describe=True)
        self._multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        counters_registry = None if self._multiprocess else self.registry
        self.actions = Counter(
            "jobqueue_actions", "Accepted job actions", ["action"], registry=counters_registry
        )
        self.latency = Histogram(
            "jobqueue_request_seconds",
            "API request latency",
            ["method", "endpoint", "status"],
            buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=counters_registry,
        )
        if self._multiprocess:
            multiprocess.MultiProcessCollector(self.registry)
        self.registry.register(_JobGauges(reads))

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def install(self, app: Flask) -> None:
        @app.before_request
        def _start_timer():
            g.request_started = time.perf_counter()

        @app.after_request
        def _observe(response):
            started = g.get("request_started")
            if started is not None:
                endpoint = request.url_rule.rule if request.url_rule else "unmatched"
                method = request.method if request.method in _METHODS else "other"
                self.latency.labels(method, endpoint, str(response.status_code)).observe(
                    time.perf_counter() - started
                )
            return response
