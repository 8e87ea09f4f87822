"""A real Prometheus (Debian's ``prometheus`` package) scrapes Berth every
second while it serves a known load, and the series are checked through
Prometheus's own query API: request counts by outcome, latency quantiles
from the duration histogram, batch sizes, workers, and the scrape config
with a bearer token that docs/metrics.md shows."""

from __future__ import annotations

import contextlib
import http.client
import json
import shutil
import subprocess
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from berth_e2e import (
    BerthServer,
    add_python_model,
    free_port,
    http_call,
    infer_body,
    tensor,
    wait_until,
)

PROMETHEUS = shutil.which("prometheus")
pytestmark = pytest.mark.skipif(
    PROMETHEUS is None, reason="Debian's prometheus is not installed (make deps installs it)"
)

TOKEN = "scrape-token-41c9"
GOOD_REQUESTS = 200
BAD_REQUESTS = 5
THREADS = 4

ECHO_SOURCE = '''
import time
import berth


class Echo(berth.Model):
    """y = x + 1, 5 ms a batch."""

    inputs = [berth.TensorSpec("x", "FP32", [-1])]
    outputs = [berth.TensorSpec("y", "FP32", [-1])]

    def predict(self, inputs):
        time.sleep(0.005)
        return {"y": inputs["x"] + 1}
'''


class Prometheus:
    """One prometheus process on 127.0.0.1 with its own config and storage
    under ``workdir``."""

    def __init__(self, workdir: Path, scrape_configs: list[dict[str, Any]]) -> None:
        self.workdir = workdir
        self.port = free_port()
        config = {"global": {"scrape_interval": "1s", "scrape_timeout": "1s",
                             "evaluation_interval": "1s"},
                  "scrape_configs": scrape_configs}
        # JSON is YAML: no YAML writer needed.
        self.config = workdir / "prometheus.yml"
        self.config.write_text(json.dumps(config, indent=2))
        self.log = workdir / "prometheus.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [PROMETHEUS or "prometheus",
                 f"--config.file={self.config}",
                 f"--storage.tsdb.path={workdir / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{self.port}",
                 "--log.level=warn"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=str(workdir),
                start_new_session=True)

    def get(self, path: str) -> Any:
        resp = http_call(self.port, "GET", path, timeout=10)
        assert resp.status == 200, f"{path}: {resp.status} {resp.body[:500]!r}"
        doc = resp.json()
        assert doc["status"] == "success", doc
        return doc["data"]

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            pytest.fail(f"prometheus exited with {self.proc.returncode}:\n{self.log_text()}")
        try:
            return http_call(self.port, "GET", "/-/ready", timeout=2).status == 200
        except (OSError, http.client.HTTPException):
            return False

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.get("/api/v1/query?query=" + urllib.parse.quote(expr))
        assert data["resultType"] == "vector", data
        return list(data["result"])

    def value(self, expr: str) -> float | None:
        """The value of a query that gives one series; None when it gives
        none (yet)."""
        result = self.query(expr)
        if not result:
            return None
        assert len(result) == 1, f"{expr} gave {len(result)} series: {result}"
        return float(result[0]["value"][1])

    def log_text(self) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-5000:]
        return ""

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("prometheus-repo")
    add_python_model(root, "echo", ECHO_SOURCE, "Echo", yaml_extra="max_batch_size: 8\ninstances: 2\n")
    return root


@pytest.fixture(scope="module")
def servers(module_server: Any, repo: Path) -> tuple[BerthServer, BerthServer]:
    """An open server, and one that needs a token (for /metrics too)."""
    open_server = module_server(str(repo))
    with_tokens = module_server(str(repo), "--auth-tokens-env", "BERTH_SCRAPE_TOKENS",
                                env={"BERTH_SCRAPE_TOKENS": TOKEN})
    return open_server, with_tokens


@pytest.fixture(scope="module")
def prometheus(servers: tuple[BerthServer, BerthServer],
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    open_server, with_tokens = servers

    def job(name: str, server: BerthServer, token: str | None = None) -> dict[str, Any]:
        cfg: dict[str, Any] = {"job_name": name,
                               "static_configs": [{"targets": [f"127.0.0.1:{server.port}"]}]}
        if token is not None:
            cfg["authorization"] = {"type": "Bearer", "credentials": token}
        return cfg

    prom = Prometheus(tmp_path_factory.mktemp("prometheus"), [
        job("berth", open_server),
        job("berth-tokens", with_tokens, TOKEN),
        job("berth-wrong-token", with_tokens, TOKEN + "x"),
    ])
    try:
        wait_until(prom.ready, 60, "prometheus ready", interval=0.2, on_timeout=prom.log_text)
        yield prom
    finally:
        prom.close()


def send_load(server: BerthServer) -> None:
    """GOOD_REQUESTS one-row requests from THREADS clients at once, then
    BAD_REQUESTS with an unknown input."""
    body = json.dumps(infer_body([tensor("x", "FP32", [1], [1.0])]))
    per_thread = GOOD_REQUESTS // THREADS
    failures: list[str] = []

    def run() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        try:
            for _ in range(per_thread):
                conn.request("POST", "/v2/models/echo/infer", body, {"Content-Type": "application/json"})
                resp = conn.getresponse()
                data = resp.read()
                if resp.status != 200:
                    failures.append(f"{resp.status} {data[:200]!r}")
        finally:
            conn.close()

    threads = [threading.Thread(target=run) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures[:5]
    bad = infer_body([tensor("z", "FP32", [1], [1.0])])
    for _ in range(BAD_REQUESTS):
        assert server.infer("echo", bad).status == 400


@pytest.fixture(scope="module")
def scraped(prometheus: Prometheus, servers: tuple[BerthServer, BerthServer]) -> Prometheus:
    """Prometheus has scraped the open server before and after the load."""
    open_server, _ = servers
    wait_until(lambda: prometheus.value('up{job="berth"}') == 1, 60, "a first scrape of berth",
               interval=0.2, on_timeout=prometheus.log_text)
    # A scrape that saw zero requests, so rate() has a start.
    wait_until(lambda: prometheus.value('sum(berth_requests_total{job="berth",model="echo"})') == 0,
               30, "a scrape before the load", interval=0.2)
    send_load(open_server)
    total = GOOD_REQUESTS + BAD_REQUESTS
    wait_until(lambda: prometheus.value('sum(berth_requests_total{job="berth",model="echo"})') == total,
               60, f"prometheus to see all {total} requests", interval=0.2,
               on_timeout=lambda: str(prometheus.query('berth_requests_total{job="berth"}')))
    return prometheus


def test_targets_are_up(scraped: Prometheus, servers: tuple[BerthServer, BerthServer]) -> None:
    open_server, with_tokens = servers
    assert scraped.value('up{job="berth"}') == 1
    assert scraped.value(f'up{{job="berth",instance="127.0.0.1:{open_server.port}"}}') == 1
    # The scrape config with a bearer token works; a wrong token does not.
    wait_until(lambda: scraped.value('up{job="berth-tokens"}') == 1, 30, "the token job up", interval=0.2)
    wait_until(lambda: scraped.value('up{job="berth-wrong-token"}') == 0, 30, "the wrong-token job down",
               interval=0.2)
    targets = {t["labels"]["job"]: t for t in scraped.get("/api/v1/targets")["activeTargets"]}
    assert targets["berth"]["health"] == "up" and targets["berth"]["lastError"] == ""
    assert targets["berth-tokens"]["health"] == "up"
    assert targets["berth-wrong-token"]["health"] == "down"
    assert "401" in targets["berth-wrong-token"]["lastError"]
    assert scraped.value('sum(berth_requests_total{job="berth-tokens",model="echo"})') == 0


def test_request_counts(scraped: Prometheus) -> None:
    sel = 'job="berth",model="echo",version="1"'
    assert scraped.value(f'sum(berth_requests_total{{{sel},outcome="success"}})') == GOOD_REQUESTS
    assert scraped.value(f'berth_requests_total{{{sel},protocol="rest",outcome="client_error"}}') == BAD_REQUESTS
    assert scraped.value(f'sum(berth_requests_total{{{sel},protocol="grpc"}})') == 0
    # Every series of the family is there, one per protocol and outcome.
    assert len(scraped.query(f"berth_requests_total{{{sel}}}")) == 2 * 6
    assert scraped.value(f"berth_request_duration_seconds_count{{{sel}}}") == GOOD_REQUESTS + BAD_REQUESTS
    assert scraped.value(f'sum(rate(berth_requests_total{{{sel}}}[1m]))') > 0


def test_latency_quantiles(scraped: Prometheus) -> None:
    def quantile(q: float) -> float | None:
        return scraped.value(
            f"histogram_quantile({q}, sum by (le) "
            f'(rate(berth_request_duration_seconds_bucket{{job="berth",model="echo"}}[1m])))'
        )

    p50, p99 = quantile(0.5), quantile(0.99)
    assert p50 is not None and p99 is not None
    # Within the buckets (the last finite one is 60 s), ordered.
    assert 0 < p50 <= p99 <= 60
    # The buckets are cumulative and +Inf holds every observation.
    buckets = scraped.query('berth_request_duration_seconds_bucket{job="berth",model="echo"}')
    by_le = sorted((float(b["metric"]["le"]), float(b["value"][1])) for b in buckets)
    assert [v for _, v in by_le] == sorted(v for _, v in by_le)
    assert by_le[-1] == (float("inf"), GOOD_REQUESTS + BAD_REQUESTS)


def test_batches(scraped: Prometheus) -> None:
    sel = 'job="berth",model="echo"'
    # One row a request: the rows of every batch add up to the good requests
    # (the bad ones never reached a worker).
    assert scraped.value(f"berth_batch_size_sum{{{sel}}}") == GOOD_REQUESTS
    batches = scraped.value(f"berth_batch_size_count{{{sel}}}")
    assert batches is not None and 1 <= batches <= GOOD_REQUESTS
    assert scraped.value(f'berth_batch_size_bucket{{{sel},le="+Inf"}}') == batches
    # No batch beyond max_batch_size (8).
    assert scraped.value(f'berth_batch_size_bucket{{{sel},le="8"}}') == batches
    assert scraped.value(f"berth_compute_duration_seconds_count{{{sel}}}") == batches
    assert scraped.value(f"berth_queue_duration_seconds_count{{{sel}}}") == GOOD_REQUESTS
    mean = scraped.value(
        f"sum(rate(berth_batch_size_sum{{{sel}}}[1m])) / sum(rate(berth_batch_size_count{{{sel}}}[1m]))")
    assert mean is not None and 1 <= mean <= 8


def test_workers_and_process(scraped: Prometheus, servers: tuple[BerthServer, BerthServer]) -> None:
    sel = 'job="berth",model="echo",version="1"'
    assert scraped.value(f"berth_workers{{{sel}}}") == 2
    assert scraped.value(f"berth_queue_depth{{{sel}}}") == 0
    assert scraped.value(f"berth_inflight_requests{{{sel}}}") == 0
    assert scraped.value(f"berth_worker_restarts_total{{{sel}}}") == 0
    assert scraped.value(f"berth_model_load_seconds{{{sel}}}") > 0
    assert scraped.value(f"berth_workers_resident_memory_bytes{{{sel}}}") > 1e6
    assert scraped.value('berth_process_cpu_seconds_total{job="berth"}') > 0
    info = scraped.query('berth_build_info{job="berth"}')
    assert len(info) == 1 and float(info[0]["value"][1]) == 1
    assert info[0]["metric"]["version"] == servers[0].get("/v2").json()["version"]
    # Per job: both servers expose the same families.
    assert scraped.value('count(berth_workers{model="echo"})') == 2
