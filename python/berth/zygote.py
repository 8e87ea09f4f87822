"""The worker template: ``python -m berth.zygote --preload RUNTIMES``
(started by ``berthd`` when ``workers.template`` is on, the default).

It imports once what every worker needs (NumPy, ``berth.worker``, the
runtime modules of the configured frameworks that are safe to fork), then
forks a worker each time the engine asks, so that a worker starts without
paying for those imports again (docs/worker-protocol.md, "Worker template").

Descriptor 3 is an ``AF_UNIX`` ``SOCK_SEQPACKET`` socket to the engine, one
message per packet. The engine sends ``b"F"``, a little-endian ``u64``
request id, then the child's whole environment as NUL-terminated
``NAME=value`` strings, with three descriptors (the worker's channel, stdout
and stderr) as ``SCM_RIGHTS``. The template answers JSON objects:
``{"op": "ready", ...}`` once after its imports, ``{"op": "forked", "id": N,
"pid": P}`` or ``{"op": "failed", "id": N, "error": "..."}`` per request, and
``{"op": "exited", "pid": P, "code": C, "signal": S}`` when it reaps a child.
End of file on the socket: the template exits.

Threads: ``fork`` copies only the calling thread, so the template never
forks while it runs another thread: it imports with every thread-pool
variable at 1 (OpenBLAS then starts no threads), checks
``/proc/self/task`` before each fork, and refuses (the engine then starts
that worker directly) when more than one thread runs. Frameworks that start
threads when imported (PyTorch, TensorFlow) are never imported here. The
child applies the worker's thread counts itself (``berth.worker``).
"""

from __future__ import annotations

import argparse
import ctypes
import importlib
import json
import logging
import os
import re
import select
import signal
import socket
import struct
import sys
import time
from typing import Any

__all__ = ["main"]

CONTROL_FD = 3
#: Runtime modules that import no thread-starting framework and are safe to
#: import before fork (tests/unit/test_zygote.py checks it); the rest are
#: imported by each worker: onnxruntime, PyTorch, TensorFlow (and so
#: transformers and MLflow) start a thread when imported.
FORK_SAFE = {
    "sklearn": ("berth.runtimes.sklearn",),
    "xgboost": ("berth.runtimes.xgboost", "xgboost"),
    "lightgbm": ("berth.runtimes.lightgbm", "lightgbm"),
    "python": ("berth.runtimes.python",),
}
_THREAD_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)
_MAX_MESSAGE = 1 << 20

log = logging.getLogger("berth.zygote")


def _threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 1


def _preload(runtimes: list[str]) -> list[str]:
    """Imports what workers need; returns the modules imported."""
    done = []
    modules = ["numpy", "threadpoolctl", "berth.tensors", "berth.runtimes", "berth.sequences"]
    for name in runtimes:
        modules.extend(FORK_SAFE.get(name, ()))
    for module in dict.fromkeys(modules):
        try:
            importlib.import_module(module)
        except Exception as e:  # noqa: BLE001 - the worker reports it properly
            log.debug("template: not preloading %s (%s)", module, e)
            continue
        if _threads() > 1:
            log.warning(
                "template: importing %s started a thread; the template stops preloading "
                "and workers start directly",
                module,
            )
            break
        done.append(module)
    return done


#: Module names a scikit-learn pickle holds (protocol 2+ writes them as
#: plain strings); only these packages' modules are imported from it.
_PICKLED_MODULE = re.compile(rb"(?<![A-Za-z0-9_.])((?:sklearn|scipy)(?:\.[A-Za-z_][A-Za-z0-9_]*)+)")
_WARM_BYTES = 8 << 20
_WARM_MODULES = 64


def _warm(paths: list[str]) -> list[str]:
    """Imports the scikit-learn modules that the models' pickles name, as
    unpickling would in the worker (without unpickling: nothing from the
    file runs here). Only modules of installed sklearn and scipy count.
    A file that Berth's own reader serves (runtimes/sklearn_lite.py) needs
    none: its worker never imports scikit-learn, so neither does the
    template (that reader resolves only its own classes and NumPy's)."""
    from importlib.util import find_spec

    from .runtimes import sklearn_lite
    from .runtimes.detect import resolve_model_path

    names: dict[str, None] = {}
    for path in paths:
        try:
            file = resolve_model_path(path, "sklearn")
            if sklearn_lite.read(str(file))[0] is not None:
                continue
            with open(file, "rb") as f:
                data = f.read(_WARM_BYTES)
        except Exception as e:  # noqa: BLE001 - the worker reports a bad path
            log.debug("template: not warming from %s (%s)", path, e)
            continue
        for m in _PICKLED_MODULE.finditer(data):
            names[m.group(1).decode()] = None
    done = []
    for name in list(names)[:_WARM_MODULES]:
        try:
            if name in sys.modules or find_spec(name) is None:
                continue
            importlib.import_module(name)
        except Exception:  # noqa: BLE001, S112 - a class name, not a module
            continue
        if _threads() > 1:
            break
        done.append(name)
    return done


def _send(ctl: socket.socket, doc: dict[str, Any]) -> None:
    ctl.send(json.dumps(doc, separators=(",", ":")).encode())


def _overwrite(start: int, end: int, data: bytes) -> bool:
    size = end - start
    if start <= 0 or len(data) > size:
        return False
    ctypes.memmove(start, data + b"\0" * (size - len(data)), size)
    return True


def _retitle(env: list[bytes]) -> None:
    """Writes the worker's command line and environment over the template's
    original ones (kept by the kernel as the process's argument and
    environment areas), so that ``ps``, ``/proc/<pid>/cmdline`` and
    ``/proc/<pid>/environ`` show the worker (``BERTH_WORKER_ID`` and all) as
    they do for a worker started directly. The engine gives the template a
    padding variable so that the worker's environment fits."""
    try:
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        arg_start, arg_end, env_start, env_end = (int(fields[i]) for i in (45, 46, 47, 48))
    except (OSError, ValueError, IndexError):
        return
    argv0 = (sys.orig_argv[0] if sys.orig_argv else sys.executable).encode()
    _overwrite(arg_start, arg_end, b"\0".join([argv0, b"-m", b"berth.worker"]) + b"\0")
    _overwrite(env_start, env_end, b"".join(e + b"\0" for e in env))


def _child(fds: list[int], env: list[bytes], ctl: socket.socket, wake: int) -> None:
    """Runs in the forked child: becomes a worker; never returns."""
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        ctl.close()
        os.close(wake)
        os.dup2(fds[0], 3)
        os.dup2(fds[1], 1)
        os.dup2(fds[2], 2)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.closerange(4, 1 << 16)
        os.environb.clear()
        for item in env:
            name, sep, value = item.partition(b"=")
            if sep and name:
                os.environb[name] = value
        os.environ["BERTH_FORKED"] = "1"
        _retitle(env + [b"BERTH_FORKED=1"])
        if "numpy" in sys.modules:  # its global generator: one state per worker
            sys.modules["numpy"].random.seed()
        root = logging.getLogger()
        for handler in list(root.handlers):
            root.removeHandler(handler)
        from . import worker

        code = worker.main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:  # noqa: BLE001 - report and exit, never return to the template
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        try:
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _fork(msg: bytes, fds: list[int], ctl: socket.socket, wake: int) -> None:
    req = struct.unpack_from("<Q", msg, 1)[0] if len(msg) >= 9 else 0
    try:
        if msg[:1] != b"F" or len(msg) < 9 or len(fds) != 3:
            raise ValueError("malformed fork request")
        threads = _threads()
        if threads > 1:
            raise RuntimeError(f"the template runs {threads} threads; it cannot fork safely")
        env = [e for e in msg[9:].split(b"\0") if e]
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(fds, env, ctl, wake)
        _send(ctl, {"op": "forked", "id": req, "pid": pid})
    except Exception as e:  # noqa: BLE001 - the engine starts that worker directly
        _send(ctl, {"op": "failed", "id": req, "error": f"{type(e).__name__}: {e}"})
    finally:
        for fd in fds:
            os.close(fd)


def _reap(ctl: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        if os.WIFSIGNALED(status):
            code, sig = 0, os.WTERMSIG(status)
        else:
            code, sig = os.waitstatus_to_exitcode(status), 0
        _send(ctl, {"op": "exited", "pid": pid, "code": code, "signal": sig})


def serve(ctl: socket.socket) -> int:
    """Answers fork requests until the engine closes the socket."""
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    while True:
        readable, _, _ = select.select([ctl, wake_r], [], [])
        if wake_r in readable:
            try:
                while os.read(wake_r, 512):
                    pass
            except BlockingIOError:
                pass
            _reap(ctl)
        if ctl in readable:
            msg, fds, _, _ = socket.recv_fds(ctl, _MAX_MESSAGE, 3)
            if not msg and not fds:
                return 0
            _fork(msg, list(fds), ctl, wake_r)
        _reap(ctl)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m berth.zygote", description=__doc__)
    ap.add_argument("--preload", default="", help="runtimes of the served models, comma-separated")
    ap.add_argument("--warm", action="append", default=[], metavar="PATH",
                    help="a scikit-learn model whose pickled module names to import")
    ns = ap.parse_args(argv)
    from .worker import _setup_logging

    _setup_logging("template")
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        fd = os.dup(CONTROL_FD)
        os.close(CONTROL_FD)
        ctl = socket.socket(fileno=fd)
    except OSError as e:
        log.error("descriptor %d is not the engine's socket (%s): berthd starts the template",
                  CONTROL_FD, e)
        return 2
    for var in _THREAD_VARS:
        os.environ[var] = "1"
    started = time.monotonic()
    done = _preload([r for r in ns.preload.split(",") if r])
    if "berth.runtimes.sklearn" in done and ns.warm and _threads() == 1:
        done += _warm(ns.warm)
    try:  # inspect the loaded thread pools once, for every child
        from threadpoolctl import ThreadpoolController

        from . import worker

        worker._pools = ThreadpoolController()
    except Exception as e:  # noqa: BLE001 - each child then inspects them itself
        log.debug("template: no thread pool controller (%s)", e)
    _send(ctl, {"op": "ready", "threads": _threads(), "preloaded": done,
                "seconds": round(time.monotonic() - started, 3)})
    try:
        return serve(ctl)
    except (BrokenPipeError, ConnectionResetError):
        return 0


if __name__ == "__main__":
    sys.exit(main())
