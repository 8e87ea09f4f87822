"""The worker process: ``python -m berth.worker`` (started by ``berthd``).

It speaks the worker protocol (``docs/worker-protocol.md``) on file
descriptor 3: waits for ``LOAD``, loads the model through its runtime, answers
``READY`` (or ``LOAD_FAILED`` and exits 1), then answers each ``INFER`` with
``RESULT`` or ``ERROR`` until ``SHUTDOWN`` or end of file (exit 0).

Signals: SIGTERM exits 0 at once when idle and after the current batch when
busy; SIGINT is ignored (a Ctrl-C in the terminal reaches the whole process
group, and the engine, which owns shutdown, stops its workers itself).

Threads: before NumPy or a framework is imported, the worker sets
``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``, ``MKL_NUM_THREADS``,
``VECLIB_MAXIMUM_THREADS`` and ``NUMEXPR_NUM_THREADS`` to the usable CPUs
divided by the model's ``instances`` (at least 1), each only when it is not
set already.

Logs go to stderr, tagged with ``BERTH_WORKER_ID``; ``BERTH_LOG_LEVEL`` and
``BERTH_LOG_FORMAT`` (``text`` or ``json``) choose level and format. The
engine starts workers with ``BERTH_LOG_FORMAT=json`` and its own level, reads
their stdout and stderr line by line and re-renders these records in its log
(docs/logging.md).
"""

from __future__ import annotations

import gc
import json
import logging
import mmap
import os
import select
import signal
import socket
import struct
import sys
import time
from collections.abc import Mapping, Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any

from .errors import InvalidInput, InvalidOutput, ProtocolError

if TYPE_CHECKING:
    from .runtimes import Runtime

__all__ = ["main"]

PROTOCOL_VERSION = 3
CHANNEL_FD = 3

HEADER = struct.Struct("<IHHQ")
LOAD, READY, LOAD_FAILED, INFER, RESULT, ERROR, SHUTDOWN, RESPONSE, CANCEL = range(1, 10)
_ENGINE_TYPES = frozenset({LOAD, INFER, SHUTDOWN, CANCEL})
_TYPE_NAMES = {
    1: "LOAD",
    2: "READY",
    3: "LOAD_FAILED",
    4: "INFER",
    5: "RESULT",
    6: "ERROR",
    7: "SHUTDOWN",
    8: "RESPONSE",
    9: "CANCEL",
}

# RESULT/ERROR flag (protocol 3): the model kept an input array that views the
# shared memory region; the engine must not write inputs there any more.
FLAG_KEPT_INPUTS = 1
_SMALL_SEND = 1 << 16  # below this, join and send once; above, scatter-gather
# INFER payloads of these sizes are received into one kept buffer (Channel.recv)
_KEEP_MIN = 1 << 16
_KEEP_MAX = 1 << 28
_IOV_MAX = 1024
_THREAD_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)

log = logging.getLogger("berth.worker")

Buffer = Any  # bytes, bytearray, memoryview or a NumPy uint8 array


class Channel:
    """Frames over the engine's socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._head = bytearray(HEADER.size)
        self._head_view = memoryview(self._head)
        self._kept: bytearray | None = None  # INFER payloads land here (_payload_buffer)

    def recv(self) -> tuple[int, int, bytearray | memoryview] | None:
        """The next frame as ``(type, id, payload)``; ``None`` at end of file
        between frames. Decoded arrays may view the payload. A large INFER
        payload is a memoryview of a buffer kept from frame to frame (see
        `_payload_buffer`); any other is a fresh bytearray."""
        if not self._recv_exact(self._head_view, eof_ok=True):
            return None
        length, ftype, flags, frame_id = HEADER.unpack(self._head)
        if ftype not in _ENGINE_TYPES:
            raise ProtocolError(f"frame type {ftype} is not one the engine sends")
        if flags != 0:
            raise ProtocolError(f"{_TYPE_NAMES[ftype]} frame with flags {flags:#x} (must be 0)")
        if ftype == INFER and _KEEP_MIN <= length <= _KEEP_MAX:
            payload: bytearray | memoryview = self._payload_buffer(length)
        else:
            payload = bytearray(length)
        if length:
            self._recv_exact(memoryview(payload), eof_ok=False)
        return ftype, frame_id, payload

    def _payload_buffer(self, length: int) -> memoryview:
        """``length`` bytes of the kept buffer when nothing views it any more
        (the arrays of the previous batch are gone), else of a new one, which
        is kept instead. Reusing the pages saves allocating, zeroing and
        faulting them in for every batch. Whether something still views the
        buffer is asked of the buffer itself: a bytearray with exports refuses
        to change size (BufferError), so a model that keeps an input array
        keeps its batch's buffer to itself."""
        kept = self._kept
        if kept is not None and len(kept) >= length:
            try:
                del kept[-1]  # shrinks in place: no copy; fails while viewed
            except BufferError:
                pass
            else:
                kept.append(0)
                return memoryview(kept)[:length]
        kept = self._kept = bytearray(length)
        return memoryview(kept)[:length]

    def recv_load(self) -> tuple[tuple[int, int, bytearray | memoryview] | None, int | None]:
        """The first frame (``LOAD``), as `recv`, and the descriptor the
        engine attached to it (its shared memory region, protocol 3), or
        ``None``. The caller owns the descriptor."""
        fds: list[int] = []
        got = 0
        while got < HEADER.size:
            data, anc, _flags, _addr = self.sock.recvmsg(
                HEADER.size - got, socket.CMSG_SPACE(struct.calcsize("i"))
            )
            for level, kind, blob in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds.extend(struct.unpack(f"{len(blob) // 4}i", blob[: len(blob) // 4 * 4]))
            if not data:
                for fd in fds:
                    os.close(fd)
                if got == 0:
                    return None, None
                raise ProtocolError("the engine closed the channel in the middle of a frame")
            self._head[got : got + len(data)] = data
            got += len(data)
        for fd in fds[1:]:
            os.close(fd)
        length, ftype, flags, frame_id = HEADER.unpack(self._head)
        if ftype not in _ENGINE_TYPES or flags != 0:
            for fd in fds[:1]:
                os.close(fd)
            raise ProtocolError(f"first frame has type {ftype} and flags {flags:#x}")
        payload = bytearray(length)
        if length:
            self._recv_exact(memoryview(payload), eof_ok=False)
        return (ftype, frame_id, payload), (fds[0] if fds else None)

    def pending(self) -> bool:
        """Whether a frame (or end of file) is waiting, without blocking."""
        readable, _, _ = select.select([self.sock], [], [], 0)
        return bool(readable)

    def _recv_exact(self, view: memoryview, *, eof_ok: bool) -> bool:
        got, size = 0, len(view)
        recv_into = self.sock.recv_into
        while got < size:
            n = recv_into(view[got:])
            if n == 0:
                if got == 0 and eof_ok:
                    return False
                raise ProtocolError("the engine closed the channel in the middle of a frame")
            got += n
        return True

    def send(self, ftype: int, frame_id: int, parts: Sequence[Buffer], total: int,
             flags: int = 0) -> None:
        """Sends one frame whose payload is ``parts`` (``total`` bytes)."""
        header = HEADER.pack(total, ftype, flags, frame_id)
        if total < _SMALL_SEND:
            self.sock.sendall(b"".join([header, *parts]))
            return
        views = [memoryview(header)]
        views.extend(v for v in (memoryview(p).cast("B") for p in parts) if v.nbytes)
        i = 0
        while i < len(views):
            sent = self.sock.sendmsg(views[i : i + _IOV_MAX])
            while sent:
                n = views[i].nbytes
                if sent >= n:
                    sent -= n
                    i += 1
                else:
                    views[i] = views[i][sent:]
                    sent = 0

    def send_json(self, ftype: int, frame_id: int, doc: Mapping[str, Any], flags: int = 0) -> None:
        data = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
        self.send(ftype, frame_id, [data], len(data), flags)


class _State:
    busy = False
    stop_requested = False


def _install_signals(state: _State) -> None:
    def on_term(signum: int, frame: FrameType | None) -> None:
        state.stop_requested = True
        if not state.busy:
            raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class _JsonFormatter(logging.Formatter):
    def __init__(self, worker_id: str) -> None:
        super().__init__()
        self.worker_id = worker_id

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "worker": self.worker_id,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


def _setup_logging(worker_id: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("BERTH_LOG_FORMAT", "text").lower() == "json":
        handler.setFormatter(_JsonFormatter(worker_id))
    else:
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s %(levelname)s worker {worker_id}: %(message)s")
        )
    root = logging.getLogger()
    root.addHandler(handler)
    level = os.environ.get("BERTH_LOG_LEVEL", "info").upper()
    root.setLevel(level if level in ("DEBUG", "INFO", "WARNING", "ERROR") else "INFO")


def _set_thread_defaults(entry: Mapping[str, Any]) -> None:
    instances = entry.get("instances", 1)
    if not isinstance(instances, int) or isinstance(instances, bool) or instances < 1:
        instances = 1
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    threads = str(max(1, cpus // instances))
    for var in _THREAD_VARS:
        os.environ.setdefault(var, threads)


#: The thread pools the template found (a threadpoolctl controller, made
#: once there instead of in each forked worker), or None.
_pools: Any = None


def _apply_thread_limits() -> None:
    """In a worker forked from the template (berth.zygote), NumPy and the
    preloaded frameworks were imported with one thread: give their pools the
    counts the thread variables now say (as a freshly started worker's
    libraries read them when imported)."""
    controller = _pools
    if controller is None:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:
            log.debug("threadpoolctl is not installed: BLAS keeps the template's one thread")
            return
        controller = ThreadpoolController()
    for var, api in (("OPENBLAS_NUM_THREADS", "blas"), ("OMP_NUM_THREADS", "openmp")):
        try:
            controller.limit(limits=max(1, int(os.environ.get(var, "1"))), user_api=api)
        except (ValueError, OSError) as e:
            log.debug("cannot set %s thread pools from %s: %s", api, var, e)


def _set_device(entry: Mapping[str, Any]) -> None:
    """The GPU the engine placed this instance on (docs/gpus.md): it is in
    the environment already when the engine spawned this process; a worker
    forked from another one gets it from LOAD, before any framework starts
    CUDA."""
    device = entry.get("cuda_visible_devices")
    if isinstance(device, str):
        os.environ["CUDA_VISIBLE_DEVICES"] = device


_MAX_ERROR_CHARS = 8192


def _error_text(exc: BaseException) -> str:
    text = str(exc)
    if len(text) > _MAX_ERROR_CHARS:
        text = text[:_MAX_ERROR_CHARS] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _load(entry: Mapping[str, Any]) -> tuple[Runtime, dict[str, Any]]:
    from .runtimes import get_runtime

    runtime_name = entry.get("runtime")
    if not isinstance(runtime_name, str):
        raise ProtocolError("LOAD entry has no runtime")
    if not isinstance(entry.get("path"), str):
        raise ProtocolError("LOAD entry has no path")
    runtime = get_runtime(runtime_name)
    runtime.load(entry)
    inputs, outputs = runtime.signature()
    ready = {
        "protocol": PROTOCOL_VERSION,
        "platform": runtime.platform,
        "inputs": [s.to_dict() for s in inputs],
        "outputs": [s.to_dict() for s in outputs],
        "max_batch_size": runtime.suggested_max_batch_size(),
    }
    if runtime.decoupled:
        ready["decoupled"] = True
        concurrency = _concurrency(runtime)
        if concurrency > 1:
            ready["max_concurrency"] = concurrency
    return runtime, ready


class _Shm:
    """The worker's shared memory region (protocol 3): the engine writes
    inputs into bytes ``0..split``, this worker writes outputs into
    ``split..size``."""

    def __init__(self, region: mmap.mmap, split: int, threshold: int) -> None:
        from .tensors import ShmArea

        self.region = region
        self.whole = memoryview(region)
        self.outputs = ShmArea(self.whole, split, len(region), threshold)
        self.inputs = ShmArea(self.whole, 0, split, threshold)
        self.kept = False  # a model kept an input array: inputs come inline

    def alive(self) -> bool:
        """Whether an array decoded from the input area is still alive."""
        return any(lease() is not None for lease in self.inputs.leases)

    def settle(self, parts: list[Any]) -> int:
        """Called with the batch's answer ready (``parts``, the outputs' pieces,
        changed in place) and every other reference to its arrays dropped.
        When an input array (or a view of one) is still alive, pieces that may
        view the region are copied first; if one is alive after that, the
        model kept it, and the answer's flags ask the engine to stop writing
        inputs into the region (so the array stays as it was)."""
        try:
            if self.kept or not self.alive():
                return 0
            parts[:] = [p if isinstance(p, bytes) else memoryview(p).tobytes() for p in parts]
            if not self.alive():
                return 0
            gc.collect()  # a failed batch's traceback may sit in a cycle
            if not self.alive():
                return 0
        finally:
            self.inputs.leases.clear()
        self.kept = True
        log.warning(
            "the model kept an input array after predict returned; inputs no longer "
            "travel through shared memory for this worker (keep a copy, np.array(x), "
            "to avoid this)"
        )
        return FLAG_KEPT_INPUTS


def _map_shm(entry: Mapping[str, Any], fd: int | None) -> _Shm | None:
    """Maps the region LOAD offered (``shared_memory``) through the
    descriptor that came with it; ``None`` when either is missing or they
    disagree. The descriptor is closed either way."""
    if fd is None:
        return None
    offer = entry.get("shared_memory")
    try:
        if not isinstance(offer, dict):
            return None
        size, split, threshold = offer.get("size"), offer.get("split"), offer.get("threshold")
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (size, split, threshold)):
            return None
        assert isinstance(size, int) and isinstance(split, int) and isinstance(threshold, int)
        if not 0 < split < size <= os.fstat(fd).st_size:
            return None
        return _Shm(mmap.mmap(fd, size), split, threshold)
    except OSError as e:
        log.warning("cannot map the shared memory region (%s); tensors go through the socket", e)
        return None
    finally:
        os.close(fd)


def _concurrency(runtime: Runtime) -> int:
    """How many requests a decoupled runtime runs at once: its
    ``max_concurrency`` when it has the step interface (``start``, ``step``,
    ``cancel``, ``active``), else 1."""
    n = getattr(runtime, "max_concurrency", 1)
    steps = all(callable(getattr(runtime, a, None)) for a in ("start", "step", "cancel", "active"))
    return n if steps and isinstance(n, int) and n > 1 else 1


def _stream(channel: Channel, runtime: Runtime, frame_id: int, payload: bytearray,
            state: _State) -> bool:
    """Runs one request of a decoupled model: each response goes out as a
    RESPONSE frame as soon as it is produced, then RESULT (no tensors) or
    ERROR ends the request. Between responses a CANCEL for this request
    (the client left) or SHUTDOWN stops the iteration. Returns False when
    the engine closed the channel or asked for SHUTDOWN."""
    from .tensors import decode_tensor_set, encode_tensor_set_parts

    keep_serving = True
    sent = 0
    responses = None
    try:
        inputs, params = decode_tensor_set(payload)
        responses = runtime.predict_stream(inputs, params)
        for outputs in responses:
            if not isinstance(outputs, Mapping):
                raise InvalidOutput(
                    f"predict yielded a {type(outputs).__name__}; yield dicts mapping "
                    "output names to numpy arrays"
                )
            parts, total = encode_tensor_set_parts(outputs)
            channel.send(RESPONSE, frame_id, parts, total)
            sent += 1
            parts = outputs = None  # type: ignore[assignment]
            stop = False
            while channel.pending():
                frame = channel.recv()
                if frame is None or frame[0] == SHUTDOWN:
                    keep_serving, stop = False, True
                    break
                if frame[0] == CANCEL and frame[1] == frame_id:
                    log.info("request %d cancelled after %d responses", frame_id, sent)
                    stop = True
                    break
                if frame[0] != CANCEL:  # a CANCEL for a finished request: ignore
                    raise ProtocolError(
                        f"unexpected {_TYPE_NAMES[frame[0]]} frame during a decoupled request"
                    )
            if stop:
                break
    except InvalidInput as e:
        message = str(e)[:_MAX_ERROR_CHARS] or "invalid input"
        channel.send_json(ERROR, frame_id, {"error": message, "kind": "input"})
        return keep_serving
    except ProtocolError:
        raise
    except Exception as e:
        log.exception("request %d failed after %d responses", frame_id, sent)
        channel.send_json(ERROR, frame_id, {"error": _error_text(e), "kind": "model"})
        return keep_serving
    finally:
        close = getattr(responses, "close", None)
        if close is not None:
            close()  # runs the generator's finally blocks now
    parts, total = encode_tensor_set_parts({})
    channel.send(RESULT, frame_id, parts, total)
    return keep_serving


def _send_end(channel: Channel, frame_id: int) -> None:
    from .tensors import encode_tensor_set_parts

    parts, total = encode_tensor_set_parts({})
    channel.send(RESULT, frame_id, parts, total)


def _admit(channel: Channel, runtime: Any, frame_id: int, payload: bytearray) -> bool:
    """Starts one INFER of a concurrent runtime (True), or answers its
    ERROR (False)."""
    from .tensors import decode_tensor_set

    try:
        inputs, params = decode_tensor_set(payload)
        runtime.start(frame_id, inputs, params)
        return True
    except InvalidInput as e:
        message = str(e)[:_MAX_ERROR_CHARS] or "invalid input"
        channel.send_json(ERROR, frame_id, {"error": message, "kind": "input"})
    except ProtocolError:
        raise
    except Exception as e:
        log.exception("request %d could not start", frame_id)
        channel.send_json(ERROR, frame_id, {"error": _error_text(e), "kind": "model"})
    return False


def _serve_concurrent(channel: Channel, runtime: Any, state: _State) -> int:
    """Serves a decoupled runtime that runs several requests at once
    (protocol 2, READY's ``max_concurrency``): frames are read between
    steps (blocking only when nothing runs); each INFER joins the running
    set, each step's responses go out at once, and a request ends with
    RESULT (no tensors) or ERROR. CANCEL drops that request before the
    next step; SHUTDOWN or end of file ends every running request."""
    from .tensors import encode_tensor_set_parts

    running: set[int] = set()
    while True:
        while not running or channel.pending():
            state.busy = bool(running)
            frame = channel.recv()
            if frame is None or frame[0] == SHUTDOWN:
                for rid in sorted(running):
                    runtime.cancel(rid)
                    _send_end(channel, rid)
                log.info("shutdown" if frame is not None else "the engine closed the channel")
                return 0
            ftype, frame_id, payload = frame
            frame = None
            if ftype == CANCEL:
                if frame_id in running:  # else: it ended before the frame came
                    runtime.cancel(frame_id)
                    running.discard(frame_id)
                    log.info("request %d cancelled", frame_id)
                    _send_end(channel, frame_id)
                continue
            if ftype != INFER:
                raise ProtocolError(f"unexpected {_TYPE_NAMES[ftype]} frame while serving")
            if _admit(channel, runtime, frame_id, payload):
                running.add(frame_id)
            payload = None  # type: ignore[assignment]
        state.busy = True
        try:
            events = runtime.step()
        except Exception as e:
            log.exception("a generation step failed; ending its %d requests", len(running))
            for rid in sorted(running):
                runtime.cancel(rid)
                channel.send_json(ERROR, rid, {"error": _error_text(e), "kind": "model"})
            running.clear()
            events = []
        for rid, outputs, ended in events:
            if outputs is not None:
                parts, total = encode_tensor_set_parts(outputs)
                channel.send(RESPONSE, rid, parts, total)
            if ended:
                running.discard(rid)
                _send_end(channel, rid)
        state.busy = bool(running)
        if state.stop_requested and not running:
            log.info("SIGTERM: exiting after the running requests")
            return 0


def _serve(channel: Channel, runtime: Runtime, state: _State,
           entry: Mapping[str, Any] | None = None, shm: _Shm | None = None) -> int:
    if runtime.decoupled and _concurrency(runtime) > 1:
        return _serve_concurrent(channel, runtime, state)
    from .sequences import SequenceStore
    from .tensors import decode_tensor_set, encode_tensor_set_parts

    sequences = SequenceStore(entry or {})

    debug = log.isEnabledFor(logging.DEBUG)
    predict = runtime.predict
    while True:
        frame = channel.recv()
        if frame is None:
            log.info("the engine closed the channel; exiting")
            return 0
        ftype, frame_id, payload = frame
        frame = None
        if ftype == SHUTDOWN:
            log.info("shutdown")
            return 0
        if ftype == CANCEL:
            continue  # the request it names is over already
        if ftype != INFER:
            raise ProtocolError(f"unexpected {_TYPE_NAMES[ftype]} frame while serving")
        state.busy = True
        if runtime.decoupled:
            try:
                keep = _stream(channel, runtime, frame_id, payload, state)
            finally:
                state.busy = False
            payload = None  # type: ignore[assignment]
            if not keep or state.stop_requested:
                return 0
            continue
        started = time.perf_counter() if debug else 0.0
        error: dict[str, str] | None = None
        parts: list[Any] = []
        total = 0
        try:
            inputs, params = decode_tensor_set(payload, shm.inputs if shm else None)
            seqs = None
            if params and ("berth_sequences" in params or "berth_sequence_drop" in params):
                params = dict(params)
                seqs = sequences.take(inputs, params)
            runtime.sequences = seqs
            try:
                outputs = predict(inputs, params)
            finally:
                sequences.finish(seqs)
            if not isinstance(outputs, Mapping):
                raise InvalidOutput(
                    f"predict returned a {type(outputs).__name__}; return a dict mapping "
                    "output names to numpy arrays"
                )
            if shm is not None:
                shm.outputs.reset()
            parts, total = encode_tensor_set_parts(
                outputs, shm=shm.outputs if shm is not None else None
            )
        except InvalidInput as e:
            error = {"error": str(e)[:_MAX_ERROR_CHARS] or "invalid input", "kind": "input"}
        except InvalidOutput as e:
            log.error("batch %d: %s", frame_id, e)
            error = {"error": _error_text(e), "kind": "model"}
        except Exception as e:
            log.exception("batch %d failed", frame_id)
            error = {"error": _error_text(e), "kind": "model"}
        # Drop the batch (its arrays view the payload or the region) before
        # the answer goes: the engine may reuse both once it has it.
        inputs = outputs = payload = None  # type: ignore[assignment]
        try:
            flags = shm.settle(parts) if shm is not None else 0
            if error is None:
                channel.send(RESULT, frame_id, parts, total, flags)
                if debug:
                    log.debug("batch %d: %.3f ms", frame_id, (time.perf_counter() - started) * 1e3)
            else:
                channel.send_json(ERROR, frame_id, error, flags)
        finally:
            state.busy = False
        parts = []
        if state.stop_requested:
            log.info("SIGTERM: exiting after the current batch")
            return 0


def main() -> int:
    """Runs the worker; returns the exit status."""
    worker_id = os.environ.get("BERTH_WORKER_ID", "-")
    _setup_logging(worker_id)
    state = _State()
    _install_signals(state)
    try:
        sock = socket.socket(fileno=CHANNEL_FD)
    except OSError as e:
        log.error(
            "file descriptor %d is not a socket (%s): berth.worker is started by berthd, "
            "see docs/worker-protocol.md",
            CHANNEL_FD,
            e,
        )
        return 2
    channel = Channel(sock)
    try:
        frame, shm_fd = channel.recv_load()
        if frame is None or frame[0] == SHUTDOWN:
            if shm_fd is not None:
                os.close(shm_fd)
            return 0
        ftype, _, payload = frame
        if ftype != LOAD:
            raise ProtocolError(f"expected LOAD first, got {_TYPE_NAMES[ftype]}")
        try:
            entry = json.loads(payload)
        except ValueError as e:
            entry = None
            error = f"LOAD payload is not JSON: {e}"
        else:
            error = "LOAD payload must be a JSON object"
        if not isinstance(entry, dict):
            if shm_fd is not None:
                os.close(shm_fd)
            raise ProtocolError(error)
        _set_thread_defaults(entry)
        _set_device(entry)
        if os.environ.get("BERTH_FORKED") == "1":
            _apply_thread_limits()
        # After the thread settings: mapping imports NumPy (berth.tensors).
        shm = _map_shm(entry, shm_fd)
        started = time.monotonic()
        try:
            runtime, ready = _load(entry)
        except Exception as e:
            log.exception("loading %s failed", entry.get("path"))
            channel.send_json(LOAD_FAILED, 0, {"error": _error_text(e)})
            return 1
        if shm is not None and not runtime.decoupled:
            ready["shared_memory"] = True
        else:
            shm = None
        channel.send_json(READY, 0, ready)
        log.info(
            "ready: %s version %s (%s) loaded in %.2f s",
            entry.get("name"),
            entry.get("version", "1"),
            ready["platform"],
            time.monotonic() - started,
        )
        return _serve(channel, runtime, state, entry, shm)
    except ProtocolError as e:
        log.error("worker protocol error: %s", e)
        return 1
    except (BrokenPipeError, ConnectionResetError):
        log.info("the engine closed the channel; exiting")
        return 0


if __name__ == "__main__":
    sys.exit(main())
