"""The web dashboard at /ui: its JSON state under load, its static files
(served from inside berthd, with ETags and no way out of the fixed table),
its token rule, and the page itself as Debian's headless Chromium draws it
against a live server under load.

Set BERTH_UPDATE_SCREENSHOT=1 to refresh docs/images/dashboard.png from the
screenshot this test takes.
"""

from __future__ import annotations

import base64
import html
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from berth_e2e import (
    RAISER_SOURCE,
    ROOT,
    BerthServer,
    add_python_model,
    http_call,
    infer_body,
    tensor,
    wait_until,
)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SYSTEM_CHARTJS = Path("/usr/share/javascript/chart.js/chart.min.js")
SCREENSHOT = ROOT / "docs" / "images" / "dashboard.png"
TOKEN = "dash-token-7f3a"

#: A model that takes 10 ms a batch, so that under concurrent load requests
#: wait in the queue and are batched.
BUSY_SOURCE = '''
import time
import berth


class Busy(berth.Model):
    """y = x + 1, 10 ms a batch."""

    inputs = [berth.TensorSpec("x", "FP32", [-1])]
    outputs = [berth.TensorSpec("y", "FP32", [-1])]

    def predict(self, inputs):
        time.sleep(0.01)
        return {"y": inputs["x"] + 1}
'''

GOOD = infer_body([tensor("x", "FP32", [1], [1.0])])
#: Names an input the model does not have: 400 from the signature check.
UNKNOWN_INPUT = infer_body([tensor("z", "FP32", [1], [1.0])])
#: An input name with markup in it, which the 400's message repeats.
MARKUP_INPUT = infer_body([tensor("<img src=x onerror=alert(1)>", "FP32", [1], [1.0])])


class Load:
    """Closed-loop load: ``threads`` clients, each sending the next request
    as soon as the last one is answered, until stopped."""

    def __init__(self, port: int, model: str, threads: int = 8) -> None:
        self.port = port
        self.model = model
        self.stop_event = threading.Event()
        self.ok = 0
        self.failed = 0
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        body = json.dumps(GOOD)
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            while not self.stop_event.is_set():
                try:
                    conn.request("POST", f"/v2/models/{self.model}/infer", body,
                                 {"Content-Type": "application/json"})
                    resp = conn.getresponse()
                    resp.read()
                    ok = resp.status == 200
                except (OSError, http.client.HTTPException):
                    ok = False
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                with self.lock:
                    if ok:
                        self.ok += 1
                    else:
                        self.failed += 1
        finally:
            conn.close()

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        for t in self.threads:
            t.join(timeout=30)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dashboard-repo")
    add_python_model(root, "busy", BUSY_SOURCE, "Busy", yaml_extra="max_batch_size: 8\ninstances: 2\n")
    add_python_model(root, "raiser", RAISER_SOURCE, "Raiser")
    return root


@pytest.fixture(scope="module")
def server(module_server: Any, repo: Path) -> BerthServer:
    return module_server(str(repo))


@pytest.fixture(scope="module")
def loaded(server: BerthServer) -> Iterator[tuple[BerthServer, Load]]:
    """The server under load for the whole module, with a few failures among
    the recent errors and at least five one-second samples of traffic."""
    with Load(server.port, "busy") as load:
        assert server.infer("busy", UNKNOWN_INPUT).status == 400
        for _ in range(2):
            assert server.infer("raiser", infer_body([tensor("x", "FP32", [1], [-1.0])])).status == 500

        def busy_samples() -> bool:
            busy = model_of(state(server), "busy")
            return sum(1 for v in busy["series"]["rate"] if v) >= 5 and any(
                v and v > 1 for v in busy["series"]["batch"]
            )

        wait_until(busy_samples, 60, "five seconds of samples with traffic and a batch of more than one row")
        yield server, load
    assert load.ok > 0


def state(server: BerthServer, headers: dict[str, str] | None = None) -> dict[str, Any]:
    resp = http_call(server.port, "GET", "/ui/api/state", headers=headers)
    assert resp.status == 200, resp.body[:500]
    assert resp.header("content-type") == "application/json"
    assert resp.header("cache-control") == "no-store"
    doc = resp.json()
    assert isinstance(doc, dict)
    return doc


def model_of(doc: dict[str, Any], name: str) -> dict[str, Any]:
    found = [m for m in doc["models"] if m["name"] == name]
    assert len(found) == 1, f"{name!r} in {[m['name'] for m in doc['models']]}"
    return found[0]


def metric_sum(server: BerthServer, name: str, model: str) -> float:
    text = server.get("/metrics").body.decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and f'model="{model}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


# ------------------------------------------------------------------ the API


def test_state_under_load(loaded: tuple[BerthServer, Load]) -> None:
    server, load = loaded
    with load.lock:  # answers the client had before the snapshot: the load goes on
        answered_before = load.ok
    doc = state(server)
    srv = doc["server"]
    assert srv["name"] == "berth" and srv["version"] == server.get("/v2").json()["version"]
    assert srv["draining"] is False and srv["auth"] is False
    assert srv["sample_interval_s"] == 1 and srv["latency_window_s"] == 5

    times = doc["times_ms"]
    assert 5 <= len(times) <= 300
    assert times == sorted(times) and len(set(times)) == len(times)
    assert abs(srv["now_ms"] - times[-1]) < 10_000

    busy = model_of(doc, "busy")
    assert (busy["version"], busy["state"], busy["reason"]) == ("1", "READY", "")
    assert (busy["instances"], busy["workers_ready"], busy["max_batch_size"]) == (2, 2, 8)
    assert busy["platform"]
    assert busy["requests"] >= answered_before > 0
    assert busy["errors"] >= 1  # the unknown input
    for key in ("rate", "error_rate", "p50_ms", "p99_ms", "batch", "queue"):
        assert len(busy["series"][key]) == len(times), key
    s = busy["series"]
    assert any(v and v > 0 for v in s["rate"])
    assert all(v is None or v >= 0 for v in s["rate"] + s["error_rate"] + s["queue"])
    # Batches are between one row and the model's maximum.
    assert all(v is None or 1 <= v <= 8 for v in s["batch"])
    # Where both quantiles are known, p50 <= p99, both within the buckets.
    pairs = [(a, b) for a, b in zip(s["p50_ms"], s["p99_ms"]) if a is not None and b is not None]
    assert pairs
    assert all(0 < a <= b <= 60_000 for a, b in pairs)
    # The queue is sampled every second; every sample is a whole number.
    assert all(v is None or float(v).is_integer() for v in s["queue"])


def test_recent_errors(loaded: tuple[BerthServer, Load]) -> None:
    server, _ = loaded
    doc = state(server)
    errors = doc["errors"]
    assert doc["server"]["errors_total"] >= 3
    bad_input = [e for e in errors if e["model"] == "busy" and "'z'" in e["message"]]
    assert bad_input, errors
    e = bad_input[0]
    assert (e["version"], e["protocol"], e["http"], e["count"]) == ("1", "rest", 400, 1)
    assert "unknown input 'z'" in e["message"]
    # Two identical failures in a row are one entry counted twice.
    raised = [e for e in errors if e["model"] == "raiser"]
    assert len(raised) == 1 and raised[0]["count"] == 2
    assert raised[0]["http"] == 500 and raised[0]["first_ms"] <= raised[0]["time_ms"]
    # A failure over gRPC is noted too, with its protocol.
    grpcclient = pytest.importorskip("tritonclient.grpc")
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(url=server.grpc_url)
    try:
        inp = grpcclient.InferInput("w", [1], "FP32")
        inp.set_data_from_numpy(np.array([1.0], dtype=np.float32))
        with pytest.raises(InferenceServerException):
            client.infer("busy", [inp])
    finally:
        client.close()
    errors = state(server)["errors"]
    newest = errors[0]
    assert (newest["model"], newest["protocol"], newest["code"]) == ("busy", "grpc", "INVALID")
    assert "unknown input 'w'" in newest["message"]
    # Newest first.
    assert [e["time_ms"] for e in errors] == sorted((e["time_ms"] for e in errors), reverse=True)
    # The counts agree with /metrics for the model nobody else loads.
    raiser = model_of(doc, "raiser")
    assert raiser["requests"] == metric_sum(server, "berth_requests_total", "raiser") == 2
    assert raiser["errors"] == 2


# --------------------------------------------------------------- static files


def test_static_files(server: BerthServer) -> None:
    page = server.get("/ui")
    assert page.status == 200
    assert page.header("content-type") == "text/html; charset=utf-8"
    text = page.body.decode()
    assert '<script src="/ui/chart.min.js"' in text and '<script src="/ui/app.js"' in text
    # No CDN: every script, style and fetch comes from this server.
    assert "http://" not in text and "https://" not in text and "//cdn" not in text
    csp = page.header("content-security-policy") or ""
    assert "script-src 'self'" in csp and "connect-src 'self'" in csp
    assert page.header("x-content-type-options") == "nosniff"
    assert server.get("/ui/").body == page.body

    for path, ctype in (("/ui/app.js", "text/javascript; charset=utf-8"),
                        ("/ui/style.css", "text/css; charset=utf-8"),
                        ("/ui/chart.min.js", "text/javascript; charset=utf-8")):
        resp = server.get(path)
        assert resp.status == 200, path
        assert resp.header("content-type") == ctype, path
        assert resp.header("cache-control") == "no-cache"
        etag = resp.header("etag")
        assert etag and etag.startswith('"') and etag.endswith('"')
        again = http_call(server.port, "GET", path, headers={"If-None-Match": etag})
        assert again.status == 304 and again.body == b"" and again.header("etag") == etag
        other = http_call(server.port, "GET", path, headers={"If-None-Match": '"nope"'})
        assert other.status == 200 and other.body == resp.body

    chart = server.get("/ui/chart.min.js").body
    assert b"Chart.js v" in chart[:200]
    if SYSTEM_CHARTJS.exists():
        assert chart == SYSTEM_CHARTJS.read_bytes()


@pytest.mark.parametrize("path", [
    "/ui/nope.js",
    "/ui/../etc/passwd",
    "/ui/%2e%2e/%2e%2e/etc/passwd",
    "/ui//etc/passwd",
    "/ui/app.js/",
    "/ui/app.js/..",
    "/ui/API/state",
    "/ui/api/state/",
    "/ui/index.html",
])
def test_unknown_dashboard_paths_are_404(server: BerthServer, path: str) -> None:
    resp = server.get(path)
    assert resp.status == 404, path
    assert resp.header("content-type") == "application/json"
    assert "dashboard" in resp.json()["error"]


def test_methods(server: BerthServer) -> None:
    for path in ("/ui", "/ui/api/state", "/ui/app.js"):
        resp = server.post(path, {})
        assert resp.status == 405
        assert resp.header("allow") == "GET, HEAD"
        head = http_call(server.port, "HEAD", path)
        assert head.status == 200 and head.body == b""
        assert head.header("content-type") == server.get(path).header("content-type")
    # /uix is not the dashboard's: the REST router's 404.
    assert server.get("/uix").status == 404
    # The query string plays no part.
    assert server.get("/ui/app.js?v=1").status == 200


# --------------------------------------------------------------------- tokens


def test_tokens(berth_server: Any, repo: Path) -> None:
    """With tokens configured every /ui path needs one: a bearer token, or
    the token as the password of HTTP Basic authentication (what a browser
    sends after its sign-in prompt). The health probes stay open, as ever."""
    srv = berth_server(str(repo), "--auth-tokens-env", "BERTH_DASH_TOKENS",
                       env={"BERTH_DASH_TOKENS": TOKEN}, wait_for="listening")
    basic = "Basic " + base64.b64encode(f"anyone:{TOKEN}".encode()).decode()
    wrong = "Basic " + base64.b64encode(f"anyone:{TOKEN}x".encode()).decode()
    for path in ("/ui", "/ui/app.js", "/ui/chart.min.js", "/ui/api/state", "/ui/nope"):
        resp = srv.get(path)
        assert resp.status == 401, path
        challenge = resp.header("www-authenticate") or ""
        assert challenge.startswith("Basic realm="), challenge
        assert "token" in resp.json()["error"]
        for bad in (wrong, f"Bearer {TOKEN}x", "Basic !!!", "Basic " + base64.b64encode(TOKEN.encode()).decode()):
            assert http_call(srv.port, "GET", path, headers={"Authorization": bad}).status == 401
        want = 404 if path == "/ui/nope" else 200
        assert http_call(srv.port, "GET", path, headers={"Authorization": basic}).status == want
        assert http_call(srv.port, "GET", path, headers={"Authorization": f"Bearer {TOKEN}"}).status == want
    doc = state(srv, headers={"Authorization": basic})
    assert doc["server"]["auth"] is True
    assert srv.get("/v2/health/live").status == 200
    # Basic credentials open the dashboard only.
    assert http_call(srv.port, "GET", "/v2/models/busy", headers={"Authorization": basic}).status == 401


# -------------------------------------------------------------------- browser


def chromium(args: list[str], url: str, workdir: Path, budget_ms: int = 6000) -> subprocess.CompletedProcess[bytes]:
    """Runs Debian's chromium headless on url and returns what it printed.
    Its profile, cache and crash reports stay under workdir; nothing but
    127.0.0.1 resolves."""
    assert CHROMIUM is not None
    home = workdir / "home"
    home.mkdir(parents=True, exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "LANG": "C.UTF-8",
        "TZ": "UTC",
    }
    cmd = [
        CHROMIUM,
        "--headless=new",
        "--no-sandbox",  # tests may run as root, where the sandbox refuses
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
        f"--user-data-dir={workdir / 'profile'}",
        f"--virtual-time-budget={budget_ms}",
        *args,
        url,
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            cwd=str(workdir), start_new_session=True)
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        out, err = b"", b"chromium did not finish in 120 s"
    finally:
        # Chromium's helper processes share its process group.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def text_of(dom: str, element_id: str) -> str:
    m = re.search(rf'id="{element_id}"[^>]*>(.*?)</', dom, re.S)
    assert m, f"no element #{element_id} in the page"
    return html.unescape(re.sub(r"<[^>]+>", "", m.group(1))).strip()


def table_rows(dom: str, table_id: str) -> list[tuple[str, list[str]]]:
    """(the <tr ...> tag, its cells' text) of every row in a table's body."""
    m = re.search(rf'<table id="{table_id}".*?<tbody>(.*?)</tbody>', dom, re.S)
    assert m, f"no table #{table_id} in the page"
    rows = []
    for tag, body in re.findall(r"(<tr[^>]*>)(.*?)</tr>", m.group(1), re.S):
        cells = [html.unescape(re.sub(r"<[^>]+>", "", c)).strip()
                 for c in re.findall(r"<td[^>]*>(.*?)</td>", body, re.S)]
        rows.append((tag, cells))
    return rows


def number(text: str) -> float:
    m = re.search(r"[-+]?\d+(?:\.\d+)?", text)
    assert m, f"no number in {text!r}"
    return float(m.group(0))


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (make deps installs it)")
def test_chromium_screenshot(loaded: tuple[BerthServer, Load], tmp_path: Path) -> None:
    server, _ = loaded
    update = os.environ.get("BERTH_UPDATE_SCREENSHOT") == "1"
    if update:  # a picture for the docs: a minute of history
        wait_until(lambda: len(state(server)["times_ms"]) >= 60, 90, "a minute of samples")
    shot = tmp_path / "dashboard.png"
    run = chromium(["--window-size=1280,760", f"--screenshot={shot}"], f"{server.url}/ui", tmp_path)
    assert shot.exists(), run.stderr.decode(errors="replace")[-3000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1280, 760)
    image = pytest.importorskip("PIL.Image")
    with image.open(shot) as img:
        rgb = img.convert("RGB")
        # The charts' lines are drawn in the palette's colours: the first
        # model's blue is on screen.
        colours = {c for _, c in rgb.getcolors(maxcolors=1 << 20) or []}
        assert any(abs(r - 0x2F) < 40 and abs(g - 0x6F) < 40 and abs(b - 0xDF) < 40 for r, g, b in colours)
        if update:
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            rgb.quantize(colors=64).save(SCREENSHOT, optimize=True)


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (make deps installs it)")
def test_chromium_shows_the_dashboard(loaded: tuple[BerthServer, Load], tmp_path: Path) -> None:
    server, _ = loaded
    assert server.post("/v2/models/busy/infer", MARKUP_INPUT).status == 400
    run = chromium(["--dump-dom"], f"{server.url}/ui", tmp_path)
    dom = run.stdout.decode("utf-8", "replace")
    assert run.returncode == 0 and "<html" in dom, run.stderr.decode(errors="replace")[-3000:]
    assert 'data-polls="' in dom, "the page never drew a state (script or fetch failed)"

    assert text_of(dom, "server-status") == "live"
    rows = {cells[0]: (tag, cells) for tag, cells in table_rows(dom, "models")}
    assert set(rows) == {"busy", "raiser"}
    tag, cells = rows["busy"]
    assert 'data-version="1"' in tag
    # Model, version, status, workers, max batch, queue, in flight, requests,
    # errors, req/s, p50, p99.
    assert cells[1] == "1" and cells[2] == "READY" and cells[3] == "2/2" and cells[4] == "8"
    assert number(cells[7]) > 0 and number(cells[8]) >= 1
    assert number(cells[9]) > 0, f"req/s of busy under load: {cells}"
    assert rows["raiser"][1][3] == "1/1"

    # Every chart has drawn points, and its latest value is on the page.
    for chart in ("rate", "latency", "batch", "queue"):
        m = re.search(rf'id="chart-{chart}"[^>]*data-points="(\d+)"', dom) or re.search(
            rf'data-points="(\d+)"[^>]*id="chart-{chart}"', dom)
        assert m and int(m.group(1)) > 0, f"chart {chart} has no points"
    assert number(text_of(dom, "latest-rate")) > 0
    assert text_of(dom, "latest-rate").endswith("req/s")
    lat = re.fullmatch(r"p50 ([\d.]+) · p99 ([\d.]+) ms", text_of(dom, "latest-latency"))
    assert lat, text_of(dom, "latest-latency")
    assert 0 < float(lat.group(1)) <= float(lat.group(2))
    assert 1 <= number(text_of(dom, "latest-batch")) <= 8
    assert number(text_of(dom, "latest-queue")) >= 0

    errors = table_rows(dom, "errors")
    assert any(c[1] == "busy" and "400 INVALID" in c[4] and "unknown input 'z'" in c[6] for _, c in errors), errors
    assert any(c[1] == "raiser" and c[4].startswith("500") and c[5] == "2" for _, c in errors), errors
    # Markup in an error message stays text (the page adds no element).
    assert "<img src=x" not in dom


def test_error_text_is_kept_safe(loaded: tuple[BerthServer, Load]) -> None:
    """A request-driven message (an input name with markup)
    arrives as plain, valid UTF-8 JSON text; the page only ever sets it as
    text."""
    server, _ = loaded
    assert server.post("/v2/models/busy/infer", MARKUP_INPUT).status == 400
    doc = state(server)
    msgs = [e["message"] for e in doc["errors"] if e["model"] == "busy"]
    assert any("<img src=x onerror=alert(1)>" in m for m in msgs), msgs
    app = server.get("/ui/app.js").body.decode()
    assert "innerHTML" not in app and "insertAdjacentHTML" not in app
