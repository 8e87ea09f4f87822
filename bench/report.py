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
ORDER = ["berth", "kserve", "mlserver", "bentoml", "ray", "pytriton", "mosec", "litserve"]
LABEL = {"berth": "Berth", "kserve": "KServe", "mlserver": "MLServer", "bentoml": "BentoML",
         "ray": "Ray Serve", "pytriton": "Triton (PyTriton)", "mosec": "Mosec",
         "litserve": "LitServe"}
PKG = {"berth": "berth", "kserve": "kserve", "mlserver": "mlserver", "bentoml": "bentoml",
       "ray": "ray", "pytriton": "nvidia-pytriton", "mosec": "mosec", "litserve": "litserve"}


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
    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.split("\n")[0]
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


def summarize(raw: dict) -> dict[str, dict]:
    """server -> metric -> value (None where not measured)."""
    out: dict[str, dict] = {}
    inproc = raw.get("inprocess", {})
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
            bound = raw["workloads"][w]["bound_us"]
            for case, c in res.get("cases", {}).items():
                pts = c["points"]
                s["foreign"] = max([s["foreign"]] + [p.get("foreign_cpu_frac", 0) for p in pts])
                c1 = next((p for p in pts if p["conc"] == 1), None)
                if w == "W1":
                    top = best_under(pts, None)
                    s["w1_p50"] = c1 and c1["p50_us"] / 1e3
                    s["w1_p99"] = c1 and c1["p99_us"] / 1e3
                    s["w1_max"] = top and top["rps"]
                    s["w1_max_c"] = top and top["conc"]
                    s["w1_cpu"] = top and top["cpu_us_per_req"]
                    s["w1_cpu_c1"] = c1 and c1["cpu_us_per_req"]
                else:
                    top = best_under(pts, bound)
                    key = {"tabular": "w2", "short": "w3s", "long": "w3l"}[case]
                    s[key] = top["rps"] if top else 0.0
                    s[key + "_c"] = top and top["conc"]
                    s[key + "_p99_c1"] = c1 and c1["p99_us"] / 1e3
                    s[key + "_max"] = max(p["rps"] for p in pts)
                    s[key + "_cpu"] = top and top["cpu_us_per_req"]
                    ip = inproc.get(case)
                    if ip:
                        s[key + "_r1"] = s[key] / ip["b1"]
                        s[key + "_rN"] = s[key] / ip["bN"]
        out[name] = s
    return out


def fmt(v, spec: str = ".0f", none: str = "—") -> str:
    if v is None:
        return none
    return format(v, spec)


def ratio_line(summary: dict, key: str, higher_better: bool, label: str, spec: str) -> str | None:
    b = summary.get("berth", {}).get(key)
    peers = {n: s.get(key) for n, s in summary.items() if n != "berth" and s.get(key)}
    if not b or not peers:
        return None
    best_name = (max if higher_better else min)(peers, key=lambda n: peers[n])
    best = peers[best_name]
    r = b / best if higher_better else best / b
    verdict = ("a tie, within this machine's noise" if 0.95 <= r <= 1.05
               else "Berth ahead" if r > 1.0 else "Berth behind")
    return (f"| {label} | {format(b, spec)} | {LABEL[best_name]} {format(best, spec)} | "
            f"**{r:.2f}×** ({verdict}) |")


def chart(summary: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("w1_p50", "W1 latency at concurrency 1, p50 (ms, lower is better)"),
              ("w1_max", "W1 max throughput (req/s)"),
              ("w1_cpu", "W1 server CPU per request (µs, lower is better)"),
              ("w2", "W2 throughput at p99 < 10 ms (req/s)"),
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
        names = [n for n in ORDER if n in summary]
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("raw", nargs="+", help="raw result files; for a server in several, the "
                    "last file wins (to re-measure some servers and keep the rest)")
    ap.add_argument("--notes", help="Markdown file appended as the notes section")
    a = ap.parse_args()
    raws = [json.loads(Path(r).read_text()) for r in a.raw]
    raw = raws[-1]
    if len(raws) > 1:
        merged: dict = {}
        for r in raws:  # per server and workload: a later pass wins
            for n, e in r["servers"].items():
                m = merged.setdefault(n, json.loads(json.dumps(e)))
                m["workloads"].update(e.get("workloads", {}))
                m.update({k: v for k, v in e.items() if k != "workloads"})
        raw = dict(raw, servers={n: merged[n] for n in ORDER if n in merged})
        raw["inprocess"] = {k: v for r in raws for k, v in r.get("inprocess", {}).items()}
        raw["workloads"] = {k: v for r in raws for k, v in r["workloads"].items()}
        raw["passes"] = [(r["started"], sorted(r["servers"]), sorted(r["workloads"]),
                          r.get("elapsed_s", 0)) for r in raws]
        raw.pop("elapsed_s", None)
    m = machine()
    summary = summarize(raw)
    date = raw["started"].split()[0]
    complete = (set(raw["servers"]) >= set(ORDER) and set(raw["workloads"]) >= {"W1", "W2", "W3"}
                and not raw.get("quick"))
    stem = f"{date}-{slug(m['cpu'], m['cores'])}"
    if raw.get("quick"):
        stem += "-quick"
    elif not complete:  # a partial run: its own file, latest.* untouched
        stem += "-" + raw["started"].split()[1].replace(":", "")[:4] + "-partial"
    # a --quick smoke run is not for quoting: it goes to bench/work/, not results/
    out_dir = HERE / "work" if raw.get("quick") else RESULTS
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
    L.append(f"- Each point: {raw['reps']} run(s) of {raw['seconds']:.0f} s after a warm-up, "
             "median shown. Requests carry one row (W1, W2) or one text (W3), HTTP/1.1 "
             "keep-alive, JSON bodies.")
    L.append(f"- Same for every server: {st['workers']} model worker process, "
             f"{st['threads']} intra-op thread; W1/W2 max batch {st['W2']['max_batch']}, "
             f"max queue delay {st['W2']['delay_us']} µs; W3 max batch {st['W3']['max_batch']}, "
             f"delay {st['W3']['delay_us']} µs.")
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
    L.append("| server | W1 p50 / p99 at c=1 (ms) | W1 max req/s | W1 CPU µs/req | "
             "W2 req/s at p99<10 ms | W2 ÷ loop b=1 | W3 short req/s at p99<100 ms | "
             "÷ loop b=1 | W3 long req/s at p99<100 ms | ÷ loop b=1 | foreign CPU |")
    L.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
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
        for k, w in (("w2", "W2"), ("w3s", "W3"), ("w3l", "W3")):
            if s.get(k) is None:
                cells += ["failed" if w in s["errors"] else "—", "—"]
                continue
            cells.append(fmt(s[k]) + (f" (c={s[k + '_c']})" if s.get(k + "_c") else
                                      f" (p99 {s[k + '_p99_c1']:.0f} ms at c=1)"
                                      if s.get(k + "_p99_c1") else ""))
            cells.append(fmt(s.get(k + "_r1"), ".2f"))
        cells.append(f"{100 * s['foreign']:.0f}%")
        L.append("| " + " | ".join(cells) + " |")
    L.append("")
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
    lines = [ratio_line(summary, k, hb, lab, sp) for k, hb, lab, sp in (
        ("w1_p50", False, "W1 p50 at c=1 (ms)", ".2f"),
        ("w1_p99", False, "W1 p99 at c=1 (ms)", ".2f"),
        ("w1_max", True, "W1 max throughput (req/s)", ".0f"),
        ("w1_cpu", False, "W1 server CPU (µs/req)", ".0f"),
        ("w2", True, "W2 req/s at p99 < 10 ms", ".0f"),
        ("w3s", True, "W3 short req/s at p99 < 100 ms", ".1f"),
        ("w3l", True, "W3 long req/s at p99 < 100 ms", ".1f"))]
    lines = [x for x in lines if x]
    if lines:
        L.append("### Berth against the best peer on each metric")
        L.append("")
        L.append("| metric | Berth | best peer | Berth's ratio (>1: Berth better) |")
        L.append("| --- | --- | --- | --- |")
        L += lines
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
    L.append("| server | case | concurrency | req/s | p50 ms | p90 ms | p99 ms | "
             "server CPU µs/req | errors | foreign CPU on server core |")
    L.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for n in ORDER:
        e = raw["servers"].get(n, {})
        for w, res in e.get("workloads", {}).items():
            for case, c in res.get("cases", {}).items():
                for p in c["points"]:
                    L.append(f"| {LABEL[n]} | {w} {case} | {p['conc']} | {p['rps']:.1f} | "
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
