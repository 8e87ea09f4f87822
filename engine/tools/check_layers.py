#!/usr/bin/env python3
"""Checks the engine's layering rule: a folder of engine/src includes only
headers of its own folder or of the folders listed before it in LAYERS.

Every folder is on the include path, so `#include "rest.h"` names a header by
its file name alone; this script finds which folder holds it. Headers that no
folder holds (system headers, generated protobuf headers, the public
include/berth/ headers) are not checked.

KNOWN lists the back-edges that main still has, each with the work that
removes it (docs/architecture.md). A new back-edge fails the check; so does
a listed one that has gone (delete it from KNOWN then), so the list only
shrinks. Exit status 0 when the rule holds, 1 otherwise.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

# Lowest first. A folder may include from itself and from folders before it.
LAYERS = ["common", "codec", "http", "worker", "sched", "core", "pipeline", "backend", "obs", "frontend", "gateway"]

# (file, header) pairs that break the rule today.
KNOWN: set[tuple[str, str]] = {
    # The model, job, batch and worker structures live in engine.h; the
    # scheduler, batcher and supervisor work on them (the natural cluster
    # until sched/ and worker/ get their own job and worker-pool types).
    ("sched/batcher.c", "core/engine.h"),
    ("sched/scheduler.c", "core/engine.h"),
    ("worker/supervisor_int.h", "core/engine.h"),
}

INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def main(argv: list[str]) -> int:
    src = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parents[1] / "src"
    rank = {name: i for i, name in enumerate(LAYERS)}
    where: dict[str, str] = {}
    for layer in LAYERS:
        for header in (src / layer).glob("*.h"):
            where[header.name] = layer
    found: set[tuple[str, str]] = set()
    for layer in LAYERS:
        for path in sorted((src / layer).glob("*.[ch]")):
            for name in INCLUDE.findall(path.read_text()):
                target = where.get(Path(name).name)
                if target is not None and rank[target] > rank[layer]:
                    found.add((f"{layer}/{path.name}", f"{target}/{Path(name).name}"))
    strays = [p.name for p in src.glob("*.[ch]") if p.name != "main.c"]
    new = sorted(found - KNOWN)
    gone = sorted(KNOWN - found)
    for f, h in new:
        print(f"layering: {f} includes {h}, a higher layer (order: {' < '.join(LAYERS)})")
    for f, h in gone:
        print(f"layering: {f} no longer includes {h}: remove it from KNOWN in {Path(__file__).name}")
    for name in strays:
        print(f"layering: engine/src/{name} belongs in one of the layer folders")
    if not (new or gone or strays):
        print(f"layering: {len(LAYERS)} layers hold; {len(KNOWN)} known back-edges left")
    return 1 if new or gone or strays else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
