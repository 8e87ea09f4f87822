#!/usr/bin/env python3
"""The engine's file-level call graph, from its object files.

Reads `nm` of every object of libberth_core (a meson build folder's
engine/libberth_core.a.p/*.o): file A depends on file B when A references a
function or object that B defines. Prints the strongly connected components
with more than one file (files that reach each other through calls), the
largest first. docs/architecture.md uses it to say which clusters remain.

    python3 engine/tools/file_graph.py build/dev
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def symbols(obj: Path) -> tuple[set[str], set[str]]:
    out = subprocess.run(["nm", "--defined-only", "-g", str(obj)], capture_output=True,
                         text=True, check=True).stdout
    defined = {line.split()[-1] for line in out.splitlines() if line.strip()}
    out = subprocess.run(["nm", "-u", str(obj)], capture_output=True, text=True,
                         check=True).stdout
    used = {line.split()[-1] for line in out.splitlines() if line.strip()}
    return defined, used


def file_name(obj: Path) -> str:
    name = obj.name.removesuffix(".c.o")
    return name.removeprefix("src_") + ".c"


def graph(build: Path) -> dict[str, set[str]]:
    objs = sorted((build / "engine" / "libberth_core.a.p").glob("*.c.o"))
    objs = [o for o in objs if ".pb-c" not in o.name and "ui_assets" not in o.name]
    defs: dict[str, str] = {}
    uses: dict[str, set[str]] = {}
    for o in objs:
        d, u = symbols(o)
        f = file_name(o)
        for s in d:
            defs[s] = f
        uses[f] = u
    return {f: {defs[s] for s in u if s in defs and defs[s] != f} for f, u in uses.items()}


def sccs(g: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(g.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(g):
        if v not in index:
            visit(v)
    return sorted((c for c in out if len(c) > 1), key=len, reverse=True)


def main(argv: list[str]) -> int:
    build = Path(argv[1] if len(argv) > 1 else "build/dev")
    g = graph(build)
    comps = sccs(g)
    print(f"{len(g)} files; {len(comps)} cycles of files")
    for c in comps:
        print(f"  {len(c)} files: {' '.join(c)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
