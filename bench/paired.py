"""Paired comparison: servers measured in alternating runs, not one after another.

The full run (driver.py) measures one server at a time, minutes apart. On a
shared host whose speed drifts by 10-20 % over an hour, a model-bound
workload such as W3 (every server runs the same ONNX Runtime graph, so they
differ by a few per cent at most) is then decided by when each server ran.
Here each round runs every server in turn (the order rotating from round
to round) on every point (a case at a concurrency), so that each pair of
servers is compared within a minute or two of the host's speed, and the
rounds spread over the whole run. The report gives each server's median
and, for Berth against each peer, the median and range of the per-round
ratios.

    python bench/paired.py --servers berth,kserve,pytriton --workload W3 \
        --points short:16,long:1 --rounds 4 --seconds 5 --out results/paired-w3.md

Run it through bench/paired.sh, which installs and prepares as run.sh does.
Only one server is up at a time: it is started for its turn (answers
checked, 2 s warm-up at c=4, then 1 s at each point's concurrency before
that point is measured) and stopped after it. A server that fails to start
or fails during its turn is left out of the later rounds, and its ratios
against Berth are not given (its rounds no longer pair with Berth's). Keeping every server up and
idle between turns was tried: LitServe polls while idle (~12 % of a core,
charged to whoever is measured), and freezing the idle ones (cgroup
freezer; SIGSTOP sends SIGCHLD, which MLServer does not survive) crashed
Triton's Python backend when it was thawed.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import time
from pathlib import Path

import driver as d


def parse_points(text: str, wl: dict) -> list[tuple[str, int]]:
    points = []
    for item in text.split(","):
        case, _, conc = item.partition(":")
        if case not in wl["cases"]:
            raise SystemExit(f"paired.py: case {case!r} is not one of {', '.join(wl['cases'])}")
        if not conc.isdigit() or int(conc) < 1:
            raise SystemExit(f"paired.py: {item!r}: give CASE:CONCURRENCY, e.g. {case}:16")
        points.append((case, int(conc)))
    return points


def start(name: str, w: str, port: int, want: dict, delay_us: int | None) -> tuple[d.Server, str]:
    wl = d.WORKLOADS[w]
    d.say(f"{name}: starting ({wl['model']}, port {port}, core {d.SERVER_CORE})")
    srv = d.Server(name, wl["model"], port, w, delay_us)
    url = f"http://127.0.0.1:{port}" + d.SERVERS[name]["path"].format(m=wl["model"])
    proto = d.SERVERS[name]["proto"]
    try:
        err = d.wait_ready(srv, url, (d.WORK / "bodies" / f"{proto}-{wl['cases'][0]}.json").read_bytes(), 240)
        if err:
            raise RuntimeError(err)
        for case in wl["cases"]:
            body = d.WORK / "bodies" / f"{proto}-{case}.json"
            code, data = d.post(url, body.read_bytes())
            bad = f"HTTP {code}" if code != 200 else d.check_answer(d.numbers(json.loads(data)), want[case])
            if bad:
                raise RuntimeError(f"wrong answer for {case}: {bad}")
            d.run_wrk(url, body, 4, 2.0, srv.proc.pid)  # warm-up
    except Exception:
        srv.stop()
        raise
    return srv, url


def measure_turn(s: str, srv: d.Server, url: str, points: list[tuple[str, int]], rnd: int,
                 seconds: float, runs: dict) -> None:
    """One server's turn in a round: each point warmed up for 1 s at its
    concurrency, then measured (again where others took the core)."""
    for case, conc in points:
        body = d.WORK / "bodies" / f"{d.SERVERS[s]['proto']}-{case}.json"
        d.run_wrk(url, body, conc, 1.0, srv.proc.pid)
        r = d.quiet_run(url, body, conc, seconds, srv.proc.pid)
        runs[(case, conc)].setdefault(s, []).append(r)
        d.say(f"round {rnd + 1} {case} c={conc} {s:9s} {r['rps']:8.1f} req/s  "
              f"p99 {r['p99_us'] / 1e3:7.2f} ms  cpu {r['cpu_us_per_req']:7.0f} us/req")
        if not srv.alive():
            raise RuntimeError(f"{s} died during the run:\n{srv.tail()}")


def on_term(signum: int, frame: object) -> None:
    """A SIGTERM (a timeout, kill) unwinds through the finally that stops
    the server being measured instead of leaving it running."""
    raise SystemExit(128 + signum)


def spread(ratios: list[float]) -> str:
    return f"{statistics.median(ratios):.2f}× ({min(ratios):.2f}-{max(ratios):.2f})"


def report(w: str, points: list[tuple[str, int]], servers: list[str], runs: dict,
           a: argparse.Namespace, elapsed: float) -> str:
    bound = d.WORKLOADS[w]["bound_us"]
    out = [f"# Paired runs: {w}, {time.strftime('%Y-%m-%d %H:%M')}", "",
           f"{a.rounds} round(s) of {a.seconds:g} s per server and point, the servers started and "
           "measured in turn, one up at a time (order rotating each round), server on core "
           f"{d.SERVER_CORE}, wrk on core {d.LOAD_CORE}; max batch delay "
           f"{d.SETTINGS[w]['delay_us'] if a.delay_us is None else a.delay_us} µs where a server "
           f"has that knob; Berth build {d.berth_build()}; "
           f"{elapsed / 60:.1f} min. Medians over the rounds; *vs Berth* is the median "
           "of the per-round ratios (>1: Berth better: Berth's req/s ÷ the server's, the "
           "server's p99 ÷ Berth's) with their range."
           + (f" A p99 marked * is over the workload's {bound / 1e3:g} ms bound: that server's "
              "headline point in the full run is at a lower concurrency." if bound else ""), ""]
    for case, conc in points:
        out += [f"## {case}, c={conc}", "",
                "| server | req/s | p50 ms | p99 ms | CPU µs/req | vs Berth (req/s) | vs Berth (p99) "
                "| foreign CPU |",
                "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        mine = runs[(case, conc)]
        base = mine.get("berth", [])
        for s in servers:
            rs = mine.get(s, [])
            if not rs:
                out.append(f"| {s} | failed | | | | | | |")
                continue
            med = {k: statistics.median(r[k] for r in rs) for k in
                   ("rps", "p50_us", "p99_us", "cpu_us_per_req", "foreign_cpu_frac")}
            ratio = tail = ""
            if s != "berth" and len(base) == len(rs):
                ratio = spread([b["rps"] / max(r["rps"], 1e-9) for b, r in zip(base, rs)])
                tail = spread([r["p99_us"] / max(b["p99_us"], 1e-9) for b, r in zip(base, rs)])
            out.append(f"| {s} | {med['rps']:.1f} | {med['p50_us'] / 1e3:.2f} | "
                       f"{med['p99_us'] / 1e3:.2f}{'*' if bound and med['p99_us'] > bound else ''} | {med['cpu_us_per_req']:.0f} | {ratio} | {tail} | "
                       f"{med['foreign_cpu_frac']:.0%} |")
        out.append("")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--servers", default="berth,kserve,pytriton,mosec")
    ap.add_argument("--workload", default="W3", choices=sorted(d.WORKLOADS))
    ap.add_argument("--points", default=None,
                    help="CASE:CONCURRENCY,... (default for W3: short:16,long:1; else "
                    "the workload's first case at 16)")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--delay-us", type=int, default=None,
                    help="max batch delay for every server with that knob (default: the "
                    "workload's shared delay, driver.SETTINGS)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    servers = [s for s in a.servers.split(",") if s]
    if not servers or a.rounds < 1:
        ap.error("give at least one server and one round")
    unknown = [s for s in servers if s not in d.SERVERS]
    if unknown:
        ap.error(f"unknown server(s) {', '.join(unknown)}: choose from {', '.join(d.SERVERS)}")
    wl = d.WORKLOADS[a.workload]
    points = parse_points(a.points or ("short:16,long:1" if a.workload == "W3"
                                       else f"{wl['cases'][0]}:16"), wl)
    d.LOGS.mkdir(parents=True, exist_ok=True)
    (d.WORK / "run").mkdir(parents=True, exist_ok=True)
    want = d.expected_outputs(list(wl["cases"]))
    signal.signal(signal.SIGTERM, on_term)
    t0 = time.time()
    runs: dict = {p: {} for p in points}
    failed: set[str] = set()
    port = 18600
    for rnd in range(a.rounds):
        k = rnd % len(servers)
        for s in servers[k:] + servers[:k]:
            if s in failed:
                continue
            port = d.free_port(port + 10)
            try:
                srv, url = start(s, a.workload, port, want, a.delay_us)
            except Exception as e:  # noqa: BLE001
                d.say(f"{s}: FAILED to start, left out: {str(e)[:500]}")
                failed.add(s)
                continue
            try:
                measure_turn(s, srv, url, points, rnd, a.seconds, runs)
            except Exception as e:  # noqa: BLE001
                d.say(f"{s}: FAILED in round {rnd + 1}, left out: {str(e)[:500]}")
                failed.add(s)
            finally:
                srv.stop()
    text = report(a.workload, points, servers, runs, a, time.time() - t0)
    Path(a.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
