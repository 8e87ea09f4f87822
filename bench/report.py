"""Turns a raw result file of bench/driver.py into the Markdown report and chart.

Writes bench/results/<date>-<machine>.md and .png, and copies them to
bench/results/latest.md and latest.png. Usage: report.py RAW.json [--notes FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
ORDER = ["berth", "berth_py", "kserve", "mlserver", "bentoml", "ray", "pytriton", "mosec",
         "litserve"]
LABEL = {"berth": "Berth", "berth_py": "Berth, ONNX in a Python worker", "kserve": "KServe",
         "mlserver": "MLServer", "bentoml": "BentoML", "ray": "Ray Serve",
         "pytriton": "Triton (PyTriton)", "mosec": "Mosec", "litserve": "LitServe"}
PKG = {"berth": "berth", "berth_py": "berth", "kserve": "kserve", "mlserver": "mlserver",
       "bentoml": "bentoml", "ray": "ray", "pytriton": "nvidia-pytriton", "mosec": "mosec",
       "litserve": "litserve"}
BERTH = ("berth", "berth_py")  # not peers of each other
# (workload, case) -> the summary's key prefix; W1 and W1N are the no-op workloads
KEY = {("W1", "identity"): "w1", ("W1N", "identity"): "w1n", ("W2", "tabular"): "w2",
       ("W2N", "tabular"): "w2n", ("W3", "short"): "w3s", ("W3", "long"): "w3l"}
NOOP = ("W1", "W1N")
# the in-process case of each (workload, case) and the floor workload, for raw
# files written before the driver recorded them
INPROC = {("W2", "tabular"): "tabular", ("W2N", "tabular"): "tabular_onnx",
          ("W3", "short"): "short", ("W3", "long"): "long"}
FLOOR = {"W1": "W1", "W2": "W1", "W3": "W1", "W1N": "W1N", "W2N": "W1N"}
# the metrics chosen per server at its best delay: key, higher is better
BEST_METRICS = [("w1_p50", False), ("w1_p99", False), ("w1_max", True), ("w1_cpu", False),
                ("w1n_p50", False), ("w1n_max", True), ("w1n_cpu", False),
                ("w2", True), ("w2n", True)]


def machine() -> dict[str, str]:
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    osname = "?"
    try:
        osname = re.search(r'PRETTY_NAME="(.*)"', Path("/etc/os-release").read_text()).group(1)
    except (OSError, AttributeError):
        pass
    try:
        wrk = subprocess.run(["wrk", "--version"], capture_output=True,
                             text=True).stdout.split("\n")[0]
    except OSError:
        wrk = ""
    return {"cpu": cpu, "cores": str(os.cpu_count()), "memory": mem,
            "kernel": platform.release(), "os": osname, "python": platform.python_version(),
            "wrk": wrk.strip() or "?"}


def slug(cpu: str, cores: str) -> str:
    s = re.sub(r"\(.*?\)|processor|cpu|\d+-core", "", cpu, flags=re.I)
    s = re.sub(r"[^a-z0-9]+", "-", s.lower()).strip("-")
    return f"{s}-{cores}c"


def best_under(points: list[dict], bound_us: float | None) -> dict | None:
    ok = [p for p in points if bound_us is None or p["p99_us"] <= bound_us]
    ok = [p for p in ok if p["errors"] == 0] or ok
    return max(ok, key=lambda p: p["rps"]) if ok else None


def results_by_delay(raw: dict, name: str, w: str) -> dict[int, dict]:
    """delay (µs) -> the server's result on workload w at that max batch delay:
    the shared delay's from "workloads", the sweep's others from "by_delay"."""
    e = raw["servers"].get(name, {})
    out: dict[int, dict] = {}
    if w in e.get("workloads", {}):
        res = e["workloads"][w]
        out[int(res.get("delay_us", raw["settings"][w]["delay_us"]))] = res
    for d, res in e.get("by_delay", {}).get(w, {}).items():
        out[int(d)] = res
    return out


def throughput_at(points: list[dict], conc: int) -> tuple[float, bool] | None:
    """(req/s at this concurrency, measured) from a no-op workload's points:
    the point itself, else interpolated linearly in log2(concurrency) between
    the neighbours, else the nearest end (measured False for both)."""
    import math

    pts = sorted((p["conc"], p["rps"]) for p in points)
    if not pts:
        return None
    for c, r in pts:
        if c == conc:
            return r, True
    lo = [(c, r) for c, r in pts if c < conc]
    hi = [(c, r) for c, r in pts if c > conc]
    if not lo or not hi:
        return (lo[-1] if lo else hi[0])[1], False
    (c0, r0), (c1, r1) = lo[-1], hi[0]
    t = (math.log2(conc) - math.log2(c0)) / (math.log2(c1) - math.log2(c0))
    return r0 + t * (r1 - r0), False


def floor_points(raw: dict, name: str, w: str, delay: int) -> tuple[list[dict], str]:
    """The points of the no-op workload that is w's protocol floor, for the same
    server at the same delay (else at the shared delay), and which workload
    they are: W2N's floor is W1N, else W1 where a server did not run W1N (for
    Berth's Python-worker row, Berth's W1)."""
    fw = raw["workloads"].get(w, {}).get("floor") or FLOOR.get(w, "W1")
    for n, f in ((name, fw), (name, "W1"), ("berth" if name == "berth_py" else name, "W1")):
        by = results_by_delay(raw, n, f)
        res = by.get(delay) or by.get(int(raw["settings"].get(f, {}).get("delay_us", -1)))
        if res and res.get("cases"):
            return next(iter(res["cases"].values()))["points"], f
    return [], fw


def attainable(raw: dict, name: str, w: str, case: str, delay: int, conc: int) -> dict | None:
    """The attainable limit at one concurrency: min(the model's in-process rate
    at the max batch size, the protocol floor: the no-op workload's throughput
    of the same server at the same concurrency and delay). None where either
    is unknown; a no-op workload's limit is its own floor."""
    if w in NOOP:
        return None
    inproc = raw.get("inprocess", {})
    ip_case = dict(zip(raw["workloads"].get(w, {}).get("cases", []),
                       raw["workloads"].get(w, {}).get("inproc", []))).get(case) \
        or INPROC.get((w, case))
    model = inproc.get(ip_case, {}).get("bN") if ip_case else None
    pts, fw = floor_points(raw, name, w, delay)
    fl = throughput_at(pts, conc)
    if not model or not fl or not fl[0]:
        return None  # both bounds are needed: no ratio rather than half of one
    limit = min(model, fl[0])
    return {"model": model, "floor": fl[0], "floor_measured": fl[1], "floor_workload": fw,
            "limit": limit, "bound_by": "model" if model <= fl[0] else "protocol"}


def metrics(raw: dict, name: str, w: str, res: dict, delay: int) -> dict:
    """The headline metrics of one result (one workload at one delay)."""
    s: dict = {}
    bound = raw["workloads"][w]["bound_us"]
    inproc = raw.get("inprocess", {})
    for case, c in res.get("cases", {}).items():
        pts = c["points"]
        key = KEY.get((w, case), f"{w.lower()}_{case}")
        c1 = next((p for p in pts if p["conc"] == 1), None)
        if w in NOOP:
            top = best_under(pts, None)
            s[key + "_p50"] = c1 and c1["p50_us"] / 1e3
            s[key + "_p99"] = c1 and c1["p99_us"] / 1e3
            s[key + "_max"] = top and top["rps"]
            s[key + "_max_c"] = top and top["conc"]
            s[key + "_cpu"] = top and top["cpu_us_per_req"]
            s[key + "_cpu_c1"] = c1 and c1["cpu_us_per_req"]
            continue
        top = best_under(pts, bound)
        s[key] = top["rps"] if top else 0.0
        s[key + "_c"] = top and top["conc"]
        s[key + "_p99_c1"] = c1 and c1["p99_us"] / 1e3
        s[key + "_max"] = max(p["rps"] for p in pts)
        s[key + "_cpu"] = top and top["cpu_us_per_req"]
        ip = inproc.get(INPROC.get((w, case), case))
        if ip:
            s[key + "_r1"] = s[key] / ip["b1"]
            s[key + "_rN"] = s[key] / ip["bN"]
        att = top and attainable(raw, name, w, case, delay, top["conc"])
        if att:
            s[key + "_att"] = att["limit"]
            s[key + "_ra"] = s[key] / att["limit"]
    return s


def summarize(raw: dict) -> dict[str, dict]:
    """server -> metric -> value (None where not measured), at the shared delay."""
    out: dict[str, dict] = {}
    for name in ORDER:
        e = raw["servers"].get(name)
        if e is None:
            continue
        s: dict = {"version": e.get("versions", {}).get(PKG[name], "?"), "errors": {},
                   "foreign": 0.0}
        if "error" in e:
            s["errors"]["all"] = e["error"]
        for w, res in e.get("workloads", {}).items():
            if "error" in res:
                s["errors"][w] = res["error"]
            for c in res.get("cases", {}).values():
                s["foreign"] = max([s["foreign"]] + [p.get("foreign_cpu_frac", 0)
                                                     for p in c["points"]])
            d = int(res.get("delay_us", raw["settings"][w]["delay_us"]))
            s.update(metrics(raw, name, w, res, d))
        out[name] = s
    return out


def best_delays(raw: dict) -> dict[str, dict]:
    """server -> metric -> value at the server's best max batch delay for that
    metric (among the delays it ran), with <metric>_delay naming the delay (µs,
    the effective one where the server rounds it) and the metric's companions
    (_c, _ra, ...) from the same delay. Ties go to the shared delay."""
    out: dict[str, dict] = {}
    for name in ORDER:
        if name not in raw["servers"]:
            continue
        per: dict[int, dict] = {}  # delay -> metrics at that delay
        eff: dict[int, int] = {}
        knob = True
        for w in raw["workloads"]:
            for d, res in results_by_delay(raw, name, w).items():
                per.setdefault(d, {}).update(metrics(raw, name, w, res, d))
                eff[d] = int(res.get("effective_delay_us", d))
                knob = knob and res.get("delay_knob", True)
        s: dict = {"delay_knob": knob, "delays": sorted(eff.values())}
        for key, higher in BEST_METRICS:
            cands = [(v[key], d) for d, v in per.items() if v.get(key) is not None]
            if not cands:
                continue
            shared = int(raw["settings"].get(key_workload(key), {}).get("delay_us", -1))
            d = max(cands, key=lambda vd: (vd[0] if higher else -vd[0], vd[1] == shared))[1]
            names = {k for k, _ in BEST_METRICS}
            s.update({k: v for k, v in per[d].items()
                      if k == key or (k.startswith(key + "_") and k not in names)})
            s[key + "_delay"] = eff[d]
        out[name] = s
    return out


def key_workload(key: str) -> str:
    return {"w1": "W1", "w1n": "W1N", "w2": "W2", "w2n": "W2N"}[key.split("_")[0]]


def fmt(v, spec: str = ".0f", none: str = "—") -> str:
    if v is None:
        return none
    return format(v, spec)


def ratio_line(summary: dict, key: str, higher_better: bool, label: str, spec: str) -> str | None:
    b = summary.get("berth", {}).get(key)
    peers = {n: s.get(key) for n, s in summary.items() if n not in BERTH and s.get(key)}
    if not b or not peers:
        return None
    best_name = (max if higher_better else min)(peers, key=lambda n: peers[n])
    best = peers[best_name]
    r = b / best if higher_better else best / b
    verdict = ("a tie, within this machine's noise" if 0.95 <= r <= 1.05
               else "Berth ahead" if r > 1.0 else "Berth behind")

    def at(n: str) -> str:  # the delay a best-delay summary chose
        d = summary[n].get(key + "_delay")
        return "" if d is None else f" (delay {d} µs)"
    return (f"| {label} | {format(b, spec)}{at('berth')} | {LABEL[best_name]} "
            f"{format(best, spec)}{at(best_name)} | **{r:.2f}×** ({verdict}) |")


def chart(summary: dict, path: Path, title: str) -> None:
    try:
        import matplotlib
    except ImportError:  # the bench venv has it; without it the report has no chart
        return

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("w1_p50", "W1 latency at concurrency 1, p50 (ms, lower is better)"),
              ("w1_max", "W1 max throughput (req/s)"),
              ("w1_cpu", "W1 server CPU per request (µs, lower is better)"),
              ("w2", "W2 throughput at p99 < 10 ms (req/s)"),
              ("w2n", "W2N (ONNX) throughput at p99 < 10 ms (req/s)"),
              ("w3s", "W3 short texts: req/s at p99 < 100 ms"),
              ("w3l", "W3 long texts: req/s at p99 < 100 ms")]
    # where no server meets the W3 bound, chart the best rate at any latency instead
    for i, (key, _) in enumerate(panels):
        if key in ("w3s", "w3l") and not any(s.get(key) for s in summary.values()):
            which = "short" if key == "w3s" else "long"
            panels[i] = (key + "_max", f"W3 {which} texts: max req/s (none met p99 < 100 ms)")
    panels = [p for p in panels if any(s.get(p[0]) is not None for s in summary.values())]
    if not panels:
        return
    cols = 2
    rows = (len(panels) + 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(13, 3.6 * rows), squeeze=False)
    for ax, (key, ttl) in zip(axes.flat, panels):
        names = [n for n in ORDER if n in summary
                 and (n != "berth_py" or summary[n].get(key) is not None)]
        vals = [summary[n].get(key) or 0 for n in names]
        colors = ["#d9480f" if n == "berth" else "#4c6ef5" for n in names]
        bars = ax.barh([LABEL[n] for n in names], vals, color=colors)
        ax.invert_yaxis()
        ax.set_title(ttl, fontsize=10)
        for b, v, n in zip(bars, vals, names):
            txt = "n/a" if summary[n].get(key) is None else f"{v:,.1f}" if v < 100 else f"{v:,.0f}"
            ax.text(b.get_width(), b.get_y() + b.get_height() / 2, " " + txt, va="center",
                    fontsize=8)
        ax.margins(x=0.18)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


RATIO_METRICS = [
    ("w1_p50", False, "W1 p50 at c=1 (ms)", ".2f"),
    ("w1_p99", False, "W1 p99 at c=1 (ms)", ".2f"),
    ("w1_max", True, "W1 max throughput (req/s)", ".0f"),
    ("w1_cpu", False, "W1 server CPU (µs/req)", ".0f"),
    ("w2", True, "W2 req/s at p99 < 10 ms", ".0f"),
    ("w1n_p50", False, "W1N (ONNX no-op) p50 at c=1 (ms)", ".2f"),
    ("w1n_max", True, "W1N max throughput (req/s)", ".0f"),
    ("w2n", True, "W2N (ONNX) req/s at p99 < 10 ms", ".0f"),
    ("w3s", True, "W3 short req/s at p99 < 100 ms", ".1f"),
    ("w3l", True, "W3 long req/s at p99 < 100 ms", ".1f")]
PEERS_NOT_RUN = RESULTS / "peers-not-run.md"


def rate_cell(s: dict, k: str) -> str:
    """A throughput at a p99 bound, with its concurrency (or why it is 0)."""
    if s.get(k + "_c"):
        return f"{fmt(s[k])} (c={s[k + '_c']})"
    if s.get(k + "_p99_c1"):
        return f"{fmt(s[k])} (p99 {s[k + '_p99_c1']:.0f} ms at c=1)"
    return fmt(s[k])


def at_delay(s: dict, k: str) -> str:
    d = s.get(k + "_delay")
    return "" if d is None else f", delay {d / 1000:g} ms"


def headline(summary: dict) -> list[str]:
    """The headline table: one row per server at the shared delay."""
    L = ["| server | W1 p50 / p99 at c=1 (ms) | W1 max req/s | W1 CPU µs/req | "
         "W2 req/s at p99<10 ms | W2 ÷ loop b=1 | W2 ÷ attainable | "
         "W2N (ONNX) req/s at p99<10 ms | W2N ÷ attainable | W3 short req/s at p99<100 ms | "
         "÷ loop b=1 | ÷ attainable | W3 long req/s at p99<100 ms | ÷ loop b=1 | "
         "÷ attainable | foreign CPU |", "|" + " --- |" * 17]
    for n in ORDER:
        s = summary.get(n)
        if s is None:
            continue
        fail = "all" in s["errors"]
        cells = [LABEL[n] + (" (failed)" if fail else "")]
        cells.append(f"{fmt(s.get('w1_p50'), '.2f')} / {fmt(s.get('w1_p99'), '.2f')}"
                     if s.get("w1_p50") is not None else ("failed" if "W1" in s["errors"] else "—"))
        cells.append(fmt(s.get("w1_max")) + (f" (c={s['w1_max_c']})" if s.get("w1_max_c") else ""))
        cells.append(fmt(s.get("w1_cpu")))
        for k, w in (("w2", "W2"), ("w2n", "W2N"), ("w3s", "W3"), ("w3l", "W3")):
            n_cols = 2 if k == "w2n" else 3
            if s.get(k) is None:
                cells += ["failed" if w in s["errors"] else "—"] + ["—"] * (n_cols - 1)
                continue
            cells.append(rate_cell(s, k))
            if k != "w2n":
                cells.append(fmt(s.get(k + "_r1"), ".2f"))
            cells.append(fmt(s.get(k + "_ra"), ".2f"))
        cells.append(f"{100 * s['foreign']:.0f}%")
        L.append("| " + " | ".join(cells) + " |")
    L.append("")
    return L


def attainable_table(raw: dict, summary: dict) -> list[str]:
    """Per server and workload at the shared delay: the served rate at its
    best point, the model's batched limit, the protocol floor there, and the
    ratio of the rate to the smaller of the two."""
    L = ["| server | workload | req/s at the p99 bound (c) | model in-process at max batch | "
         "protocol floor at that c (no-op workload) | attainable limit | ÷ attainable |",
         "|" + " --- |" * 7]
    rows = 0
    for n in ORDER:
        s = summary.get(n, {})
        for (w, case), k in KEY.items():
            if w in NOOP or not s.get(k + "_c"):
                continue
            res = raw["servers"][n]["workloads"][w]
            d = int(res.get("delay_us", raw["settings"][w]["delay_us"]))
            att = attainable(raw, n, w, case, d, s[k + "_c"])
            if not att:
                continue
            floor = (f"{'' if att['floor_measured'] else '~'}"
                     f"{att['floor']:.0f} ({att['floor_workload']})")
            L.append(f"| {LABEL[n]} | {w} {case} | {rate_cell(s, k)} | {fmt(att['model'])} | "
                     f"{floor} | {att['limit']:.0f} ({att['bound_by']}) | "
                     f"**{s[k + '_ra']:.2f}** |")
            rows += 1
    return L + [""] if rows else []


def best_table(best: dict) -> list[str]:
    """Each server at its own best max batch delay, per metric."""
    L = ["| server | delays run (µs) | W1 p50 at c=1 (ms) | W1 max req/s | W1 CPU µs/req | "
         "W2 req/s at p99<10 ms | W2 ÷ attainable | W2N req/s at p99<10 ms | "
         "W2N ÷ attainable | W1N max req/s |", "|" + " --- |" * 10]
    for n in ORDER:
        s = best.get(n)
        if not s or len(s) <= 2:
            continue
        cells = [LABEL[n], ", ".join(map(str, s["delays"])) +
                 ("" if s["delay_knob"] else " (no delay knob)")]
        for k, spec in (("w1_p50", ".2f"), ("w1_max", ".0f"), ("w1_cpu", ".0f")):
            cells.append(fmt(s.get(k), spec) + (f" ({at_delay(s, k)[2:]})"
                                                 if s.get(k) is not None else ""))
        for k in ("w2", "w2n"):
            if s.get(k) is None:
                cells += ["—", "—"]
                continue
            cells.append(rate_cell(s, k)[:-1] + at_delay(s, k) + ")"
                         if rate_cell(s, k).endswith(")") else rate_cell(s, k) + at_delay(s, k))
            cells.append(fmt(s.get(k + "_ra"), ".2f"))
        cells.append(fmt(s.get("w1n_max")) + (f" ({at_delay(s, 'w1n_max')[2:]})"
                                               if s.get("w1n_max") is not None else ""))
        L.append("| " + " | ".join(cells) + " |")
    return L + [""]


def sweep_table(raw: dict) -> list[str]:
    """Every server, sweep workload and delay: the headline numbers."""
    L = ["| server | workload | max batch delay µs | p50 at c=1 (ms) | "
         "req/s (max, or at the p99 bound) | ÷ attainable |", "|" + " --- |" * 6]
    rows = 0
    for n in ORDER:
        for w, wl in raw["workloads"].items():
            if not wl.get("sweep"):
                continue
            for d, res in sorted(results_by_delay(raw, n, w).items()):
                eff = int(res.get("effective_delay_us", d))
                dl = f"{d}" + (f" ({eff} effective)" if eff != d else "")
                if "error" in res:
                    L.append(f"| {LABEL[n]} | {w} | {dl} | failed | — | — |")
                    continue
                m = metrics(raw, n, w, res, d)
                for (w2, case), k in KEY.items():
                    if w2 != w or case not in res.get("cases", {}):
                        continue
                    noop = w in NOOP
                    c1 = m.get(k + "_p50") if noop else next(
                        (p["p50_us"] / 1e3 for p in res["cases"][case]["points"]
                         if p["conc"] == 1), None)
                    rate = (fmt(m.get(k + "_max")) + f" (c={m.get(k + '_max_c')})" if noop
                            else rate_cell(m, k))
                    L.append(f"| {LABEL[n]} | {w} | {dl} | {fmt(c1, '.2f')} | {rate} | "
                             f"{'—' if noop else fmt(m.get(k + '_ra'), '.2f')} |")
                    rows += 1
    return L + [""] if rows else []


def paired_section(results: Path = RESULTS) -> list[str]:
    """The paired reports (bench/paired.sh, results/paired-*.md) quoted
    whole, headings demoted: the check of the metrics above where servers are
    within the host's drift of each other."""
    files = sorted(results.glob("paired-*.md"))
    if not files:
        return []
    L = ["### Close results, measured side by side", "",
         "A full run measures each server's whole curve before the next server starts, so "
         "two servers' points are minutes apart and this host's speed drifts by 10-20 % "
         "over an hour. Where servers are that close (W3, where all run the same model; "
         "latency at c=1), bench/paired.sh measures them point by point in rotating "
         "rounds (bench/README.md). Its latest reports, as written:", ""]
    for f in files:
        for line in f.read_text().rstrip().splitlines():
            L.append("###" + line if line.startswith("#") else line)
        L += ["", f"(results/{f.name})", ""]
    return L


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("raw", nargs="+", help="raw result files; for a server in several, the "
                    "last file wins (to re-measure some servers and keep the rest)")
    ap.add_argument("--notes", help="Markdown file appended as the notes section")
    ap.add_argument("--out-dir", help="write the report here (and never to latest.*)")
    a = ap.parse_args()
    raws = [json.loads(Path(r).read_text()) for r in a.raw]
    raw = raws[-1]
    if len(raws) > 1:
        merged: dict = {}
        for r in raws:  # per server and workload: a later pass wins
            for n, e in r["servers"].items():
                m = merged.setdefault(n, json.loads(json.dumps(e)))
                m["workloads"].update(e.get("workloads", {}))
                m.setdefault("by_delay", {}).update(e.get("by_delay", {}))
                m.update({k: v for k, v in e.items() if k not in ("workloads", "by_delay")})
        raw = dict(raw, servers={n: merged[n] for n in ORDER if n in merged})
        raw["inprocess"] = {k: v for r in raws for k, v in r.get("inprocess", {}).items()}
        raw["workloads"] = {k: v for r in raws for k, v in r["workloads"].items()}
        raw["passes"] = [(r["started"], sorted(r["servers"]), sorted(r["workloads"]),
                          r.get("elapsed_s", 0)) for r in raws]
        raw.pop("elapsed_s", None)
    m = machine()
    summary = summarize(raw)
    date = raw["started"].split()[0]
    complete = (set(raw["servers"]) >= set(ORDER)
                and set(raw["workloads"]) >= {"W1", "W2", "W3", "W1N", "W2N"}
                and not raw.get("quick"))
    stem = f"{date}-{slug(m['cpu'], m['cores'])}"
    if raw.get("quick"):
        stem += "-quick"
    elif not complete:  # a partial run: its own file, latest.* untouched
        stem += "-" + raw["started"].split()[1].replace(":", "")[:4] + "-partial"
    # a --quick smoke run is not for quoting: it goes to bench/work/, not results/
    out_dir = HERE / "work" if raw.get("quick") else RESULTS
    if a.out_dir:
        out_dir, complete = Path(a.out_dir), False
    out_dir.mkdir(exist_ok=True)
    md_path, png_path = out_dir / f"{stem}.md", out_dir / f"{stem}.png"
    st = raw["settings"]
    inproc = raw.get("inprocess", {})
    L: list[str] = []
    L.append(f"# Berth vs peers: {raw['started']}" + (" (quick smoke run: 1 short repetition, "
                                                     "not for quoting)" if raw.get("quick") else ""))
    L.append("")
    L.append("## Machine")
    L.append("")
    L.append(f"- CPU: {m['cpu']}, {m['cores']} cores ({m['os']}, kernel {m['kernel']}), "
             f"memory {m['memory']}, Python {m['python']}, load generator {m['wrk']}")
    L.append(f"- Server and all its processes pinned to core {raw['server_core']}; the load "
             f"generator (wrk, 1 thread) pinned to core {raw['load_core']} (taskset).")
    rounds = raw.get("rounds", 1)
    L.append(f"- Each point: {raw['reps']} run(s) of {raw['seconds']:.0f} s after a warm-up"
             + (f", in each of {rounds} rounds (every server measured once per round, round "
                "after round; the in-process limits once per round)" if rounds > 1 else "")
             + ", median shown"
             # raw files from before the retry rule have no "rounds" key
             + ("; a run with more than 5 % foreign CPU on the server core is measured "
                "again (twice at most, the quietest kept)" if "rounds" in raw else "")
             + ". Requests carry one row (W1, W2) or one text (W3), HTTP/1.1 "
             "keep-alive, JSON bodies.")
    L.append(f"- Same for every server: {st['workers']} model worker process, "
             f"{st['threads']} intra-op thread; W1/W2 max batch {st['W2']['max_batch']}, "
             f"max queue delay {st['W2']['delay_us']} µs; W3 max batch {st['W3']['max_batch']}, "
             f"delay {st['W3']['delay_us']} µs.")
    if raw.get("delays_us"):
        L.append("- Max batch delay sweep: every server with a fixed delay knob also ran "
                 + ", ".join(w for w, v in raw["workloads"].items() if v.get("sweep"))
                 + f" at {', '.join(str(d) for d in sorted(raw['delays_us']))} µs (the shared "
                 "delay at every concurrency, the others with "
                 + str(raw.get("sweep_reps", raw["reps"])) + " repetition(s) per point "
                 "at concurrency "
                 + "; ".join(f"{w}: {', '.join(map(str, v.get('sweep_conc', [])))}"
                             for w, v in raw["workloads"].items() if v.get("sweep")) + ").")
    if "elapsed_s" in raw:
        L.append(f"- The run took {raw['elapsed_s'] / 60:.1f} minutes.")
    for started, names, wls, el in raw.get("passes", []):
        L.append(f"- Pass started {started} ({el / 60:.1f} min): {', '.join(wls)} on "
                 + ", ".join(LABEL[n] for n in names if n in LABEL)
                 + " (a later pass replaces an earlier one's results for the same server "
                 "and workload).")
    L.append("")
    L.append("| server | version | numpy | scikit-learn | onnxruntime |")
    L.append("| --- | --- | --- | --- | --- |")
    for n in ORDER:
        if n in raw["servers"]:
            v = raw["servers"][n].get("versions", {})
            L.append(f"| {LABEL[n]} | {v.get(PKG[n], '?')} | {v.get('numpy', '?')} | "
                     f"{v.get('scikit-learn', '?')} | {v.get('onnxruntime', '?')} |")
    if raw["servers"].get("berth", {}).get("build"):
        L.append("")
        L.append(f"Berth build: {raw['servers']['berth']['build']} (git describe of the working "
                 "tree it was built from).")
    L.append("")
    L.append("## Headline")
    L.append("")
    L += headline(summary)
    L.append("*foreign CPU*: the most CPU that other processes took on the server core during "
             "any of that server's runs (median of a point's repetitions). Above ~5% the "
             "server shared its core with someone else's work and its numbers are pessimistic.")
    L.append("")
    if inproc:
        L.append("In-process limit (the model called directly in a loop on the server core, "
                 "rows/s): " + "; ".join(
                     f"{k}: {v['b1']:.0f} at batch 1, {v['bN']:.0f} at batch {v['N']}"
                     for k, v in inproc.items()) + ".")
        L.append("")
    lines = [ratio_line(summary, k, hb, lab, sp) for k, hb, lab, sp in RATIO_METRICS]
    lines = [x for x in lines if x]
    if lines:
        L.append("### Berth against the best peer on each metric")
        L.append("")
        L.append("| metric | Berth | best peer | Berth's ratio (>1: Berth better) |")
        L.append("| --- | --- | --- | --- |")
        L += lines
        L.append("")
        L += paired_section()
    att = attainable_table(raw, summary)
    if att:
        L.append("### Served throughput over the attainable limit")
        L.append("")
        L.append("The attainable limit at a concurrency is the smaller of the model's "
                 "in-process rate at the maximum batch size (the model called directly in a "
                 "loop on the server core, batch " + str(st["W2"]["max_batch"]) + " for W2/W2N, "
                 + str(st["W3"]["max_batch"]) + " for W3: the most a server that batches fully "
                 "could get from the model) and the protocol floor: the same server's no-op "
                 "throughput (W1; for W2N, W1N, the no-op ONNX graph, where the server ran it) "
                 "at the same concurrency "
                 "and max batch delay (~: interpolated between the measured concurrencies). "
                 "Each row is the server's headline point; *÷ attainable* for every point is in "
                 "the last table. Issue 19's target: W2N on Berth's native path ≥ 0.9.")
        L.append("")
        L += att
    best = best_delays(raw)
    if any(s.get("delays") and len(s["delays"]) > 1 for s in best.values()):
        L.append("## Each server at its best max batch delay")
        L.append("")
        L.append("The tables above run every server at the shared delay. Here each metric is "
                 "taken at the delay (among those the server ran) where that server does best "
                 "on it, named in each cell; a server without a fixed delay knob (KServe: no "
                 "batcher; BentoML: an adaptive one) has only its one setting. Mosec's knob is "
                 "in whole milliseconds and 0 means its 10 ms default: 500 µs runs as 1 ms and "
                 "0 runs Mosec without its batcher (max batch 1). MLServer turns its adaptive "
                 "batcher off at a max_batch_time of 0 (its own rule), so its 0 runs unbatched.")
        L.append("")
        L += best_table(best)
        lines = [ratio_line(best, k, hb, lab, sp) for k, hb, lab, sp in RATIO_METRICS]
        lines = [x for x in lines if x]
        if lines:
            L.append("### Berth against the best peer, each at its best delay")
            L.append("")
            L.append("| metric | Berth | best peer | Berth's ratio (>1: Berth better) |")
            L.append("| --- | --- | --- | --- |")
            L += lines
            L.append("")
        L.append("### The sweep")
        L.append("")
        L += sweep_table(raw)
    if PEERS_NOT_RUN.exists():
        L.append(PEERS_NOT_RUN.read_text().rstrip())
        L.append("")
    chart(summary, png_path, f"Berth vs peers, {date}, {m['cpu']} ({m['cores']} cores)")
    if png_path.exists():
        L.append(f"![chart]({png_path.name})")
        L.append("")
    pa_rows = []
    for n in ORDER:
        e = raw["servers"].get(n, {})
        for w, res in e.get("workloads", {}).items():
            for key, proto in (("perf_analyzer", "HTTP"), ("perf_analyzer_grpc", "gRPC")):
                pa = res.get(key)
                if not pa:
                    continue
                cells = []
                for c in ("1", "16"):
                    p = pa.get(c)
                    if p is None:
                        cells.append("—")
                    elif "error" in p:
                        cells.append("error (below)" if c == "1" else "—")
                    else:
                        cells.append(f"{p['rps']:.0f} req/s, p50 {p['p50_us'] / 1e3:.2f} ms, "
                                     f"p99 {p['p99_us'] / 1e3:.2f} ms")
                errs = "; ".join(p["error"] for p in pa.values() if "error" in p).replace("|", "/")
                pa_rows.append(f"| {LABEL[n]} | {w} | {proto} | {cells[0]} | {cells[1]} | {errs} |")
    if pa_rows:
        L.append("### perf_analyzer over HTTP and gRPC (OIP servers)")
        L.append("")
        L.append("| server | workload | protocol | concurrency 1 | concurrency 16 | error |")
        L.append("| --- | --- | --- | --- | --- | --- |")
        L += pa_rows
        L.append("")
    fails = [(n, w, e) for n, s in summary.items() for w, e in s["errors"].items()]
    if fails:
        L.append("## What failed")
        L.append("")
        for n, w, e in fails:
            first = "\n".join(e.strip().splitlines()[-8:])
            L.append(f"- **{LABEL[n]}**, {w}:")
            L.append("")
            L.append("  ```")
            L += ["  " + x for x in first.splitlines()]
            L.append("  ```")
        L.append("")
    L.append("## Every point")
    L.append("")
    L.append("| server | case | delay µs | concurrency | req/s | ÷ attainable | p50 ms | p90 ms | "
             "p99 ms | server CPU µs/req | errors | foreign CPU on server core |")
    L.append("|" + " --- |" * 12)
    for n in ORDER:
        for w in raw["workloads"]:
            for d, res in sorted(results_by_delay(raw, n, w).items(), key=lambda x: -x[0]):
                for case, c in res.get("cases", {}).items():
                    for p in c["points"]:
                        att = attainable(raw, n, w, case, d, p["conc"])
                        ra = "—" if not att else f"{p['rps'] / att['limit']:.2f}"
                        L.append(f"| {LABEL[n]} | {w} {case} | {d} | {p['conc']} | "
                                 f"{p['rps']:.1f} | {ra} | "
                                 f"{p['p50_us'] / 1e3:.2f} | {p['p90_us'] / 1e3:.2f} | "
                                 f"{p['p99_us'] / 1e3:.2f} | {p['cpu_us_per_req']:.0f} | "
                                 f"{p['errors']:.0f} | {100 * p.get('foreign_cpu_frac', 0):.0f}% |")
    L.append("")
    if a.notes and Path(a.notes).exists():
        L.append(Path(a.notes).read_text().rstrip())
        L.append("")
    md_path.write_text("\n".join(L))
    if complete:
        shutil.copyfile(md_path, RESULTS / "latest.md")
        if png_path.exists():
            shutil.copyfile(png_path, RESULTS / "latest.png")
        # latest.md links the chart by its dated name; keep that working from latest.md too
    print(f">> [report] {md_path}" + (f" and {png_path}" if png_path.exists() else ""))


if __name__ == "__main__":
    main()
