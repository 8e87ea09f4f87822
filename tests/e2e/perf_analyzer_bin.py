"""Where Triton's ``perf_analyzer`` comes from on a Debian 12 machine.

The registry's ``perf-analyzer`` wheels (2.58 and later) and the
``tritonclient`` wheels from 2.52 on carry a binary built against glibc 2.38;
Debian 12 has 2.36, so pip refuses those wheels (or the binary fails to
start). ``tritonclient`` 2.51.0 is the newest release whose wheel ships a
``perf_analyzer`` that runs here, but installing it would pull the project's
NumPy back below 2. So this script takes only the binary out of that wheel
(``pip download --no-deps``) and puts it next to the virtual environment's
Python. At run time it needs ``libb64.so.0d`` (Debian's ``libb64-0d``) and
``libcudart.so.12`` even on a CPU-only machine (the ``nvidia-cuda-runtime-cu12``
package of the ``test`` extra; ``runtime_env`` points ``LD_LIBRARY_PATH``
at it).

    python tests/e2e/perf_analyzer_bin.py install   # the Makefile's venv step
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL = "tritonclient==2.51.0"
MEMBER = "tritonclient-2.51.0.data/data/bin/perf_analyzer"


def bin_dir() -> Path:
    return Path(sys.executable).parent


def find() -> str | None:
    """The perf_analyzer to use: next to this Python, else on PATH."""
    here = bin_dir() / "perf_analyzer"
    if here.is_file() and os.access(here, os.X_OK):
        return str(here)
    return shutil.which("perf_analyzer")


def cuda_runtime_dir() -> str | None:
    """The folder of libcudart.so.12 from nvidia-cuda-runtime-cu12."""
    try:
        import nvidia.cuda_runtime as cr  # type: ignore[import-not-found]
    except ImportError:
        return None
    for base in list(getattr(cr, "__path__", [])):
        lib = Path(base) / "lib"
        if (lib / "libcudart.so.12").exists():
            return str(lib)
    return None


def runtime_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """An environment in which perf_analyzer finds its libraries."""
    out = dict(os.environ if env is None else env)
    lib = cuda_runtime_dir()
    if lib:
        out["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (lib, out.get("LD_LIBRARY_PATH", "")) if p)
    return out


def missing_libraries(binary: str) -> list[str]:
    """Shared libraries ``ldd`` cannot resolve for binary (empty when fine)."""
    try:
        res = subprocess.run(["ldd", binary], capture_output=True, text=True, env=runtime_env(), timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.split()[0] for line in res.stdout.splitlines() if "not found" in line]


def install() -> int:
    target = bin_dir() / "perf_analyzer"
    if target.exists():
        print(f"perf_analyzer already at {target}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.check_call(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "-d", tmp, WHEEL]
        )
        wheel = next(Path(tmp).glob("tritonclient-*.whl"))
        with zipfile.ZipFile(wheel) as z, z.open(MEMBER) as src, open(str(target) + ".tmp", "wb") as dst:
            shutil.copyfileobj(src, dst)
    os.chmod(str(target) + ".tmp", 0o755)
    os.replace(str(target) + ".tmp", target)
    print(f"installed perf_analyzer at {target}")
    return 0


if __name__ == "__main__":
    if sys.argv[1:] != ["install"]:
        print(__doc__)
        sys.exit(2)
    sys.exit(install())
