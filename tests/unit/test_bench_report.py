"""bench/report.py's arithmetic on hand-made raw results: the attainable limit
(min of the model's batched in-process rate and the protocol floor, the
same server's no-op throughput at the same concurrency and delay), served
throughput over it, and each server's best max batch delay per metric. No
server runs: the numbers are made up so that every answer is known."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load():
    spec = importlib.util.spec_from_file_location("bench_report", ROOT / "bench" / "report.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


report = _load()


def pt(conc: int, rps: float, p99_ms: float = 1.0, p50_ms: float = 0.5) -> dict:
    return {"conc": conc, "rps": rps, "p50_us": p50_ms * 1e3, "p90_us": p50_ms * 1.5e3,
            "p99_us": p99_ms * 1e3, "cpu_us_per_req": 1e6 / rps, "errors": 0,
            "foreign_cpu_frac": 0.0, "requests": rps, "server_cpu_s": 1.0, "core_busy_s": 1.0}


def res(case: str, points: list[dict], delay: int, eff: int | None = None, **extra) -> dict:
    return {"cases": {case: {"points": points}}, "delay_us": delay,
            "effective_delay_us": delay if eff is None else eff, **extra}


WL = {
    "W1": {"model": "identity", "cases": ["identity"], "bound_us": None, "inproc": [None],
           "floor": "W1", "sweep": True, "sweep_conc": [1, 8, 64]},
    "W2": {"model": "tabular", "cases": ["tabular"], "bound_us": 10_000, "inproc": ["tabular"],
           "floor": "W1", "sweep": True, "sweep_conc": [1, 8]},
    "W1N": {"model": "identity_onnx", "cases": ["identity"], "bound_us": None, "inproc": [None],
            "floor": "W1N", "sweep": True, "sweep_conc": [1, 8]},
    "W2N": {"model": "tabular_onnx", "cases": ["tabular"], "bound_us": 10_000,
            "inproc": ["tabular_onnx"], "floor": "W1N", "sweep": True, "sweep_conc": [1, 8]},
}


def make_raw() -> dict:
    shared = {"max_batch": 32, "delay_us": 2000}
    return {
        "started": "2026-12-07 12:00:00", "quick": True, "reps": 1, "seconds": 1.0,
        "server_core": "1", "load_core": "0", "delays_us": [2000, 500, 0],
        "settings": {"workers": 1, "threads": 1, "W1": shared, "W2": shared, "W1N": shared,
                     "W2N": shared, "W3": {"max_batch": 16, "delay_us": 5000}},
        "workloads": WL,
        "inprocess": {"tabular": {"b1": 1000.0, "bN": 20000.0, "N": 32},
                      "tabular_onnx": {"b1": 5000.0, "bN": 100000.0, "N": 32}},
        "servers": {
            "berth": {"versions": {"berth": "0.1.0"}, "workloads": {
                "W1": res("identity", [pt(1, 5000), pt(8, 30000), pt(64, 50000)], 2000),
                # the best point under p99 10 ms is c=8 (c=64 passes the bound)
                "W2": res("tabular", [pt(1, 2000), pt(8, 15000), pt(64, 19000, p99_ms=20)],
                          2000),
                "W1N": res("identity", [pt(1, 8000), pt(8, 40000)], 2000),
                "W2N": res("tabular", [pt(1, 6000), pt(4, 27000), pt(8, 36000)], 2000),
            }, "by_delay": {
                "W1": {"0": res("identity", [pt(1, 5500), pt(8, 20000)], 0)},
                # no W1N at delay 0: the floor falls back to the shared delay's W1N
                "W2N": {"0": res("tabular", [pt(1, 7000), pt(8, 30000)], 0)},
            }},
            "mosec": {"versions": {"mosec": "0.9.8"}, "workloads": {
                "W1": res("identity", [pt(1, 270, p50_ms=3.6), pt(64, 17000)], 2000, 2000),
                "W2": res("tabular", [pt(1, 260, p50_ms=3.7), pt(8, 3000)], 2000, 2000),
                # a peer runs W2N without W1N (the default set): its floor is its W1
                "W2N": res("tabular", [pt(1, 250), pt(8, 2900)], 2000, 2000),
            }, "by_delay": {
                "W1": {"0": res("identity", [pt(1, 2400, p50_ms=0.4), pt(64, 15000)], 0, 0),
                       "500": res("identity", [pt(1, 800, p50_ms=1.2), pt(64, 17000)],
                                  500, 1000)},
                "W2": {"0": res("tabular", [pt(1, 2300, p50_ms=0.4), pt(8, 2500)], 0, 0)},
            }},
            "kserve": {"versions": {"kserve": "0.21.0"}, "workloads": {
                "W1": res("identity", [pt(1, 1600), pt(8, 1700)], 2000, delay_knob=False),
            }},
        },
    }


def test_throughput_at_measured_interpolated_and_clamped() -> None:
    pts = [pt(1, 1000), pt(8, 4000), pt(64, 10000)]
    assert report.throughput_at(pts, 8) == (4000, True)
    # log2 interpolation: 4 is two thirds of the way from 1 to 8
    v, measured = report.throughput_at(pts, 4)
    assert not measured and v == pytest.approx(1000 + 2 / 3 * 3000)
    assert report.throughput_at(pts, 128) == (10000, False)
    assert report.throughput_at([], 4) is None


def test_attainable_is_the_smaller_of_model_and_protocol_floor() -> None:
    raw = make_raw()
    # W2 at c=8: model 20000 rows/s at batch 32, W1 at c=8 30000 -> the model bounds it
    a = report.attainable(raw, "berth", "W2", "tabular", 2000, 8)
    assert a["limit"] == 20000 and a["bound_by"] == "model" and a["floor"] == 30000
    # W2N at c=8: model 100000, W1N (the ONNX no-op, not W1) at c=8 40000 -> protocol
    a = report.attainable(raw, "berth", "W2N", "tabular", 2000, 8)
    assert a["limit"] == 40000 and a["bound_by"] == "protocol" and a["floor_measured"]
    # c=4 has no W1N point: interpolated between c=1 (8000) and c=8 (40000)
    a = report.attainable(raw, "berth", "W2N", "tabular", 2000, 4)
    assert not a["floor_measured"] and a["limit"] == pytest.approx(8000 + 2 / 3 * 32000)
    # the floor is the same delay's no-op run where there is one...
    assert report.attainable(raw, "berth", "W2", "tabular", 0, 8)["floor"] == 20000
    # ...else the shared delay's
    assert report.attainable(raw, "berth", "W2N", "tabular", 0, 8)["floor"] == 40000
    assert report.attainable(raw, "berth", "W1", "identity", 2000, 8) is None
    # Mosec ran no W1N: W2N's floor is its W1 (c=8 interpolated between 1 and 64)
    a = report.attainable(raw, "mosec", "W2N", "tabular", 2000, 8)
    assert a["floor_workload"] == "W1" and a["bound_by"] == "protocol"
    assert a["limit"] == pytest.approx(270 + 0.5 * (17000 - 270))
    assert report.attainable(raw, "berth", "W2N", "tabular", 2000, 8)["floor_workload"] == "W1N"
    # without a no-op run (or without the in-process limit) there is no ratio
    del raw["servers"]["mosec"]["workloads"]["W1"], raw["servers"]["mosec"]["by_delay"]["W1"]
    assert report.attainable(raw, "mosec", "W2N", "tabular", 2000, 8) is None
    del raw["inprocess"]["tabular"]
    assert report.attainable(raw, "berth", "W2", "tabular", 2000, 8) is None


def test_summary_ratios_over_the_attainable_limit() -> None:
    s = report.summarize(make_raw())
    b = s["berth"]
    assert b["w2"] == 15000 and b["w2_c"] == 8
    assert b["w2_att"] == 20000 and b["w2_ra"] == pytest.approx(0.75)
    assert b["w2_r1"] == pytest.approx(15.0) and b["w2_rN"] == pytest.approx(0.75)
    assert b["w2n"] == 36000 and b["w2n_ra"] == pytest.approx(0.9)
    assert b["w1n_max"] == 40000 and b["w1_max"] == 50000
    # Mosec's W2 at the shared delay: 3000 at c=8, over min(20000, W1 at c=8)
    # where its W1 was measured at c=1 and 64 only: 270 + 1/2 * (17000 - 270)
    m = s["mosec"]
    assert m["w2_att"] == pytest.approx(270 + 0.5 * (17000 - 270))


def test_best_delay_per_metric_names_the_delay() -> None:
    best = report.best_delays(make_raw())
    m = best["mosec"]
    # the low-concurrency latency is best without a delay...
    assert m["w1_p50"] == pytest.approx(0.4) and m["w1_p50_delay"] == 0
    # ...the max throughput ties at 17000 between 2000 and 500 (1000 effective):
    # a tie goes to the shared delay
    assert m["w1_max"] == 17000 and m["w1_max_delay"] == 2000 and m["w1_max_c"] == 64
    assert m["w2"] == 3000 and m["w2_delay"] == 2000
    assert m["delays"] == [0, 1000, 2000] and m["delay_knob"]
    b = best["berth"]
    assert b["w2n"] == 36000 and b["w2n_delay"] == 2000 and b["w2n_ra"] == pytest.approx(0.9)
    assert b["w1_p50"] == pytest.approx(0.5) and b["w1_p50_delay"] == 2000  # a tie again
    k = best["kserve"]
    assert not k["delay_knob"] and k["delays"] == [2000] and k["w1_max_delay"] == 2000


def test_best_delay_ratio_line_compares_peers_at_their_best() -> None:
    best = report.best_delays(make_raw())
    line = report.ratio_line(best, "w1_p50", False, "W1 p50", ".2f")
    # Berth 0.5 ms (delay 2000) against Mosec's 0.4 ms at delay 0, not its 3.6 ms
    assert "Mosec 0.40 (delay 0 µs)" in line and "**0.80×**" in line


def test_report_renders_the_new_tables(tmp_path: Path) -> None:
    raw_file = tmp_path / "raw.json"
    raw_file.write_text(json.dumps(make_raw()))
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "report.py"), str(raw_file),
                           "--out-dir", str(tmp_path)], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    md = next(tmp_path.glob("*.md")).read_text()
    assert "W2N (ONNX) req/s at p99<10 ms | W2N ÷ attainable" in md
    assert "## Each server at its best max batch delay" in md
    assert "| Berth | W2N tabular | 36000 (c=8) | 100000 | 40000 (W1N) | 40000 (protocol) | " \
           "**0.90** |" in md
    assert "| Mosec | W1 | 500 (1000 effective) | 1.20 |" in md
    # every point carries its delay and its ratio to the attainable limit
    assert "| Berth | W2N tabular | 0 | 8 | 30000.0 | 0.75 |" in md


def test_paired_reports_are_quoted_with_their_headings_demoted(tmp_path: Path) -> None:
    assert report.paired_section(tmp_path) == []
    (tmp_path / "paired-w3.md").write_text(
        "# Paired runs: W3\n\nfive rounds\n\n## short, c=16\n\n| server | req/s |\n")
    (tmp_path / "latest.md").write_text("# not a paired report\n")
    lines = report.paired_section(tmp_path)
    assert lines[0] == "### Close results, measured side by side"
    assert "#### Paired runs: W3" in lines
    assert "##### short, c=16" in lines
    assert "| server | req/s |" in lines
    assert "(results/paired-w3.md)" in lines
    assert not any("not a paired report" in x for x in lines)


def _load_paired():
    sys.path.insert(0, str(ROOT / "bench"))  # paired.py imports driver
    try:
        spec = importlib.util.spec_from_file_location("bench_paired", ROOT / "bench" / "paired.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(ROOT / "bench"))
    return mod


def test_paired_ratios_are_taken_round_by_round() -> None:
    """Each round compares Berth with a peer measured minutes apart at most;
    the report gives the median of those per-round ratios and their range,
    not the ratio of the two medians."""
    import argparse

    paired = _load_paired()

    def run(rps: float, p99_ms: float) -> dict:
        return {"rps": rps, "p50_us": 1e3, "p99_us": p99_ms * 1e3, "cpu_us_per_req": 1e6 / rps,
                "foreign_cpu_frac": 0.0}

    runs = {("short", 16): {
        "berth": [run(300, 50), run(330, 60), run(200, 40)],
        "mosec": [run(290, 120), run(340, 110), run(100, 130)],
    }}
    a = argparse.Namespace(rounds=3, seconds=5.0, delay_us=None)
    md = paired.report("W3", [("short", 16)], ["berth", "mosec", "kserve"], runs, a, 60.0)
    # req/s ratios per round: 300/290, 330/340, 200/100 -> median 1.03, range 0.97-2.00
    # p99 ratios per round: 120/50, 110/60, 130/40 -> median 2.40, range 1.83-3.25
    assert "| mosec | 290.0 | 1.00 | 120.00* | 3448 | 1.03× (0.97-2.00) | 2.40× (1.83-3.25) | 0% |" \
        in md, md
    assert "| berth | 300.0 | 1.00 | 50.00 |" in md
    assert "| kserve | failed |" in md
    assert "max batch delay 5000 µs" in md
