"""The machine's GPUs for the engine document's ``gpus`` list (docs/gpus.md):
given with ``--gpus`` / ``BERTH_GPUS`` or the app config, else found with
``nvidia-smi``, else none; and the per-GPU budget of
``--gpu-memory-budget``."""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import Any

from ..errors import ConfigError

#: Bytes per unit, as the engine reads sizes (case ignored).
_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_SIZE = re.compile(r"^\s*(\d{1,20})(?:\.(\d{1,9}))?\s*([A-Za-z]*)\s*$")
_MAX_INDEX = 1023
#: Seconds nvidia-smi may take before Berth carries on without GPUs.
NVIDIA_SMI_TIMEOUT_S = 15.0


def parse_bytes(text: str) -> int:
    """``"16GiB"``, ``"1.5 GB"``, ``"512"`` as bytes (the engine's units)."""
    m = _SIZE.match(text)
    if m is None or m.group(3).lower() not in _UNITS:
        raise ValueError(
            f"{text!r} is not a size: write a number with an optional unit "
            "(B, KB, MB, GB, TB, KiB, MiB, GiB, TiB), e.g. 16GiB"
        )
    whole, frac, unit = m.groups()
    value = (int(whole) + (int(frac) / 10 ** len(frac) if frac else 0)) * _UNITS[unit.lower()]
    return int(value + 0.5)


def _index(text: str) -> int:
    if not text.strip().isdigit() or int(text) > _MAX_INDEX:
        raise ValueError(f"{text!r} is not a GPU index (0..{_MAX_INDEX})")
    return int(text)


def parse_gpus(text: str) -> list[dict[str, Any]]:
    """``"0:80GiB,1:80GiB"`` (index and memory), ``"0,1"`` (memory unknown)
    or ``"none"`` as the document's ``gpus`` list."""
    if text.strip().lower() == "none":
        return []
    gpus: list[dict[str, Any]] = []
    for item in text.split(","):
        index, sep, memory = item.strip().partition(":")
        gpu: dict[str, Any] = {"index": _index(index)}
        if sep:
            gpu["memory"] = parse_bytes(memory)
        if any(g["index"] == gpu["index"] for g in gpus):
            raise ValueError(f"GPU {gpu['index']} is listed twice")
        gpus.append(gpu)
    if not gpus:
        raise ValueError("expected GPUs such as 0:80GiB,1:80GiB, or none")
    return gpus


def parse_budget(text: str) -> dict[int | None, str | int]:
    """``"70GiB"`` or ``"90%"`` (every GPU), or ``"0:70GiB,1:90%"`` (per
    GPU): GPU index (None: every one) -> bytes, or a percentage string."""
    out: dict[int | None, str | int] = {}
    for item in text.split(","):
        index, sep, value = item.strip().rpartition(":")
        key = _index(index) if sep else None
        value = value.strip()
        if value.endswith("%"):
            number = value[:-1].strip()
            try:
                pct = float(number)
            except ValueError:
                pct = -1.0
            if not 0 < pct <= 100:
                raise ValueError(f"{value!r}: a percentage is from 0 (excluded) to 100")
            out[key] = value
        else:
            size = parse_bytes(value)
            if size < 1:
                raise ValueError(f"{value!r}: a budget is at least 1 byte")
            out[key] = size
        if None in out and len(out) > 1:
            raise ValueError("give one budget for every GPU (70GiB) or one per GPU (0:70GiB,1:30GiB)")
    return out


def parse_devices(text: str) -> str | list[int]:
    """A model's ``devices``: auto, cpu, all, or GPU indices ``0,1``."""
    word = text.strip().lower()
    if word in ("auto", "cpu", "all"):
        return word
    indices = [_index(x) for x in text.split(",")]
    if len(set(indices)) != len(indices):
        raise ValueError(f"{text!r} lists a GPU twice")
    return indices


def parse_nvidia_smi(text: str) -> list[dict[str, Any]]:
    """The lines of ``nvidia-smi --query-gpu=index,memory.total
    --format=csv,noheader,nounits`` (memory in MiB) as ``gpus``."""
    gpus = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 2 or not parts[0].isdigit():
            continue
        gpu: dict[str, Any] = {"index": int(parts[0])}
        if parts[1].isdigit():
            gpu["memory"] = int(parts[1]) * 2**20
        gpus.append(gpu)
    return gpus


def detect_gpus() -> list[dict[str, Any]]:
    """The machine's GPUs from nvidia-smi; none when it is absent or fails."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        done = subprocess.run(
            [smi, "--query-gpu=index,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=NVIDIA_SMI_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return []
    return parse_nvidia_smi(done.stdout) if done.returncode == 0 else []


def apply_budget(gpus: list[dict[str, Any]], budget: dict[int | None, str | int]) -> None:
    """Sets each GPU's ``budget`` from a parsed ``--gpu-memory-budget``."""
    if not gpus:
        raise ConfigError(
            "--gpu-memory-budget: the server knows no GPU (nvidia-smi found none); "
            "give them with --gpus or BERTH_GPUS, e.g. 0:80GiB"
        )
    known = {g.get("index") for g in gpus}
    for index in budget:
        if index is not None and index not in known:
            raise ConfigError(f"--gpu-memory-budget: GPU {index} is not one of the server's GPUs")
    for gpu in gpus:
        value = budget.get(None, budget.get(gpu.get("index")))
        if value is None:
            continue
        if isinstance(value, str):  # a percentage of the GPU's memory
            memory = gpu.get("memory")
            if not isinstance(memory, int) or memory <= 0:
                raise ConfigError(
                    f"--gpu-memory-budget: {value} of GPU {gpu.get('index')}, whose memory is "
                    "unknown; give it (--gpus 0:80GiB) or a size (70GiB)"
                )
            value = max(1, int(memory * float(value[:-1]) / 100))
        gpu["budget"] = value


def gpus_for_document(doc: dict[str, Any], options: dict[str, Any]) -> None:
    """Fills ``doc["gpus"]``: the option (flag or variable) over the app
    config over nvidia-smi; then the budget option."""
    if options.get("gpus") is not None:
        doc["gpus"] = [dict(g) for g in options["gpus"]]
    elif "gpus" not in doc:
        found = detect_gpus()
        if found:  # none: the document stays as it was without GPUs
            doc["gpus"] = found
    if options.get("gpu_memory_budget") is not None:
        gpus = doc.setdefault("gpus", [])
        if not isinstance(gpus, list) or not all(isinstance(g, dict) for g in gpus):
            raise ConfigError("gpus: expected a list of {index, memory} mappings")
        apply_budget(gpus, options["gpu_memory_budget"])
