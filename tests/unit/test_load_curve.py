"""bench/load_curve.py in a few seconds: a real `berth serve`, the whole
curve squeezed (--time-scale 0.03), and the files it promises, with sane
rows. Nothing about speed is asserted."""

from __future__ import annotations

import csv
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "load_curve.py"
PHASES = ["ramp", "plateau", "burst", "settle", "idle", "wake"]


def test_a_short_curve_writes_its_files(tmp_path: Path) -> None:
    env = dict(os.environ, PATH=f"{ROOT / '.venv' / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")
    done = subprocess.run([sys.executable, str(SCRIPT), "--time-scale", "0.03", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120, env=env, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    with (tmp_path / "load_curve.csv").open() as f:
        samples = list(csv.DictReader(f))
    assert len(samples) >= 5
    times = [float(s["t"]) for s in samples]
    assert times == sorted(times)
    # the phases in the curve's order, the client counts the curve's
    seen = [p for i, p in enumerate(s["phase"] for s in samples) if i == 0 or samples[i - 1]["phase"] != p]
    assert seen == [p for p in PHASES if p in seen] and "burst" in seen
    assert all(0 <= int(s["clients"]) <= 24 for s in samples)
    assert max(int(s["clients"]) for s in samples if s["phase"] == "burst") == 24
    assert all(s["berth_queue_depth"] != "" for s in samples)  # /metrics was read every time
    with (tmp_path / "load_curve_requests.csv").open() as f:
        requests = list(csv.DictReader(f))
    assert requests, "no request was sent"
    # every request of a closed-loop client is answered, none refused
    assert {r["status"] for r in requests} == {"200"}
    assert all(float(r["latency_ms"]) > 0 for r in requests)
    md = (tmp_path / "load_curve.md").read_text()
    assert f"{len(requests)} requests, 0 failed." in md
    if importlib.util.find_spec("matplotlib") is not None:
        assert (tmp_path / "load_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
