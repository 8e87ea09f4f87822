"""Generative serving: tokens per second and time to first token at
concurrency 1, 8 and 32, Berth (generate_stream, runtime llm) against the
model's own ``generate`` called in process (the in-process limit).

Not part of ``make test``. Run from the repository root with the package
installed (``make install``):

    .venv/bin/python bench/llm_bench.py [--tokens 64] [--rounds 2] [--out bench/results/llm.md]

The model is a random-weight Llama built here (4 layers, 256 wide, a BPE
tokenizer trained on generated text; tests/e2e/llm_models.py), never a
download. Every request is greedy (temperature 0) with ``max_tokens`` =
``--tokens``; tokens are counted from what each side actually generated (a
sequence may meet its end-of-sequence token early).

- in-process: ``model.generate`` on a left-padded batch of c prompts (c = 1:
  one prompt at a time); time to first token is one ``generate`` call with
  ``max_new_tokens=1`` on the same batch.
- Berth: c client threads, each sending ``--rounds`` streamed requests one
  after the other over HTTP/1.1 to ``/v2/models/m/generate_stream``; one
  worker with ``max_sequences: 32``; time to first token is the first
  event's arrival after the request was sent (median over requests).

With ``--gguf`` (needs llama-cpp-python with its ``[server]`` extra and the
``gguf`` package) the same weights are also written as a GGUF file
(tests/e2e/llm_models.py's converter) and three servers answer the same
streamed ``/v1/completions`` requests (the OpenAI route, one client code for
all): llama.cpp's own server (``python -m llama_cpp.server``), Berth's
``llama_cpp`` backend on that file, and Berth's transformers backend on the
folder. Tokens are counted by re-tokenizing each completion's text with the
model's tokenizer (the same count for every server); time to first token is
the first chunk with text.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "e2e"))

import llm_models  # noqa: E402

CONCURRENCY = (1, 8, 32)
GGUF_HEADING = "## The same weights as GGUF: llama.cpp's server against Berth"


def prompts(n: int) -> list[str]:
    return [f"request {k} asks the model server for tokens one by one" for k in range(n)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -------------------------------------------------------------- in process


def inprocess(folder: Path, c: int, tokens: int, rounds: int, threads: int) -> dict[str, float]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(threads)
    tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True).eval()
    batch = tok(prompts(c), return_tensors="pt", padding=True)
    kw = {"do_sample": False, "pad_token_id": tok.pad_token_id}
    with torch.inference_mode():
        model.generate(**batch, max_new_tokens=4, **kw)  # warm up
        ttft = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            model.generate(**batch, max_new_tokens=1, **kw)
            ttft.append(time.perf_counter() - t0)
        made, t0 = 0, time.perf_counter()
        for _ in range(rounds):
            out = model.generate(**batch, max_new_tokens=tokens, **kw)
            new = out[:, batch["input_ids"].shape[1]:]
            for row in new.tolist():
                made += row.index(tok.eos_token_id) if tok.eos_token_id in row else len(row)
        took = time.perf_counter() - t0
    return {"tokens_s": made / took, "ttft_ms": statistics.median(ttft) * 1e3, "tokens": made}


# ------------------------------------------------------------------- Berth


def start_berth(folder: Path, work: Path, threads: int, gguf: Path | None = None,
                label: str = "berth") -> tuple[subprocess.Popen[bytes], int]:
    """Berth serving model ``m``: the transformers folder (one worker,
    ``max_sequences: 32``), or the GGUF file (one worker, llama_cpp)."""
    repo = work / f"repo-{label}"
    if gguf is None:
        shutil.copytree(folder, repo / "m" / "1")
        extra = "  max_sequences: 32\n"
    else:
        (repo / "m" / "1").mkdir(parents=True)
        shutil.copy(gguf, repo / "m" / "1" / "model.gguf")
        extra = "  context: 512\n"
    (repo / "m" / "berth.yaml").write_text(
        f"runtime: llm\ninstances: 1\nparameters:\n{extra}  threads: {threads}\n"
    )
    port = free_port()
    berth = shutil.which("berth", path=str(Path(sys.executable).parent)) or "berth"
    log = (work / f"{label}.log").open("wb")
    proc = subprocess.Popen(
        [berth, "serve", str(repo), "--host", "127.0.0.1", "--port", str(port),
         "--grpc-port", str(free_port())],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    wait_ready(proc, port, "/v2/models/m/ready", work / f"{label}.log")
    return proc, port


def wait_ready(proc: subprocess.Popen[bytes], port: int, path: str, log: Path) -> None:
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"the server did not become ready; see {log}")


def one_stream(port: int, prompt: str, tokens: int) -> tuple[float, int]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    body = json.dumps({"text_input": prompt, "max_tokens": tokens, "temperature": 0})
    t0 = time.perf_counter()
    conn.request("POST", "/v2/models/m/generate_stream", body=body,
                 headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    first, made = None, 0
    for line in resp:
        if line.startswith(b"data: "):
            if first is None:
                first = time.perf_counter() - t0
            ev = json.loads(line[6:])
            if "error" in ev:
                raise RuntimeError(ev["error"])
            made = ev["completion_tokens"]
    conn.close()
    return first or 0.0, made


def berth_point(port: int, c: int, tokens: int, rounds: int) -> dict[str, float]:
    texts = prompts(c)
    one_stream(port, texts[0], 4)  # warm up
    ttft: list[float] = []
    made = [0]
    lock = threading.Lock()

    def client(k: int) -> None:
        for _ in range(rounds):
            first, n = one_stream(port, texts[k], tokens)
            with lock:
                ttft.append(first)
                made[0] += n

    threads = [threading.Thread(target=client, args=(k,)) for k in range(c)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.perf_counter() - t0
    return {"tokens_s": made[0] / took, "ttft_ms": statistics.median(ttft) * 1e3,
            "tokens": made[0]}


# ------------------------------------------ the OpenAI route: llama.cpp's server


def start_llama_cpp_server(gguf: Path, work: Path,
                           threads: int) -> tuple[subprocess.Popen[bytes], int]:
    """llama-cpp-python's own OpenAI-compatible server on the GGUF file."""
    port = free_port()
    log = (work / "llama_cpp_server.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1",
         "--port", str(port), "--n_ctx", "512", "--n_threads", str(threads),
         "--n_threads_batch", str(threads),
         # queue concurrent requests as Berth does (its default: a new request
         # ends the one streaming)
         "--interrupt_requests", "False"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    wait_ready(proc, port, "/v1/models", work / "llama_cpp_server.log")
    return proc, port


def openai_stream(port: int, model: str, prompt: str, tokens: int,
                  extra: dict[str, Any]) -> tuple[float, str]:
    """One streamed /v1/completions request: (time to the first chunk with
    text, the whole text)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    body = json.dumps({"model": model, "prompt": prompt, "max_tokens": tokens,
                       "temperature": 0, "stream": True, **extra})
    t0 = time.perf_counter()
    conn.request("POST", "/v1/completions", body=body,
                 headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    if resp.status != 200:
        raise RuntimeError(f"HTTP {resp.status}: {resp.read()[:300]!r}")
    first, parts = None, []
    for line in resp:
        if not line.startswith(b"data: ") or line.startswith(b"data: [DONE]"):
            continue
        doc = json.loads(line[6:])
        if "error" in doc:
            raise RuntimeError(doc["error"])
        for choice in doc.get("choices") or []:
            if choice.get("text"):
                if first is None:
                    first = time.perf_counter() - t0
                parts.append(choice["text"])
    conn.close()
    return first or 0.0, "".join(parts)


def openai_point(port: int, model: str, c: int, tokens: int, rounds: int,
                 count: Callable[[str], int], extra: dict[str, Any],
                 seen: dict[str, str]) -> dict[str, float]:
    texts = prompts(c)
    openai_stream(port, model, texts[0], 4, extra)  # warm up
    ttft: list[float] = []
    made = [0]
    lock = threading.Lock()

    def client(k: int) -> None:
        for _ in range(rounds):
            first, out = openai_stream(port, model, texts[k], tokens, extra)
            with lock:
                ttft.append(first)
                made[0] += count(out)
                seen[texts[k]] = out

    threads = [threading.Thread(target=client, args=(k,)) for k in range(c)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.perf_counter() - t0
    return {"tokens_s": made[0] / took, "ttft_ms": statistics.median(ttft) * 1e3,
            "tokens": made[0]}


def bare(text: str) -> str:
    """A completion's ASCII characters. A random-weight model emits byte
    tokens that are not UTF-8, and characters whose bytes span two tokens:
    Berth (as transformers' decode) sends U+FFFD for the first and holds the
    second back until the character is whole; llama-cpp-python's server
    decodes each token alone and drops both. Their ASCII is the same for
    the same tokens, and so is its count."""
    return "".join(ch for ch in text if ord(ch) < 128)


def gguf_section(folder: Path, work: Path, args: argparse.Namespace) -> list[str]:
    """The three servers on the OpenAI route; returns the markdown section."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)

    def count(text: str) -> int:
        text = bare(text)
        return len(tok(text, add_special_tokens=False)["input_ids"]) if text else 0

    gguf = llm_models.build_gguf(folder, work / "model.gguf")
    # llama.cpp's server samples with top-k 40, min-p 0.05 and a repetition
    # penalty unless told: turned off as in Berth's llama_cpp backend
    plain = {"top_k": 0, "min_p": 0.0, "repeat_penalty": 1.0}
    servers = [
        ("llama.cpp server", lambda: start_llama_cpp_server(gguf, work, args.threads), "model"),
        ("Berth llama_cpp", lambda: start_berth(folder, work, args.threads, gguf, "berth-gguf"),
         "m"),
        ("Berth transformers",
         lambda: start_berth(folder, work, args.threads, None, "berth-hf"), "m"),
    ]
    results: dict[str, dict[int, dict[str, float]]] = {}
    texts: dict[str, dict[str, str]] = {}
    for name, start, model in servers:
        proc, port = start()
        if name == "llama.cpp server":  # its model id is the path it was given
            model = str(gguf)
        try:
            for c in args.gguf_concurrency:
                extra = plain if name == "llama.cpp server" else {}
                r = openai_point(port, model, c, args.tokens, args.rounds, count, extra,
                                 texts.setdefault(name, {}))
                results.setdefault(name, {})[c] = r
                print(f"{name} c={c}: {r['tokens_s']:.0f} tok/s ttft {r['ttft_ms']:.1f} ms",
                      flush=True)
        finally:
            os.killpg(proc.pid, 15)
            proc.wait(60)
    load = os.getloadavg()
    names = [n for n, _, _ in servers]
    peer, ours = texts["llama.cpp server"], texts["Berth llama_cpp"]
    same = sum(bare(ours.get(k, "")) == bare(v) for k, v in peer.items())
    starts = sum(bare(v).startswith(bare(ours.get(k, ""))) for k, v in peer.items())
    print(f"llama.cpp server and Berth llama_cpp: the same text for {same} of {len(peer)} "
          f"prompts; Berth's text starts the server's for {starts}", flush=True)
    lines = [
        GGUF_HEADING,
        "",
        f"The model above written as one GGUF file (float32; `build_gguf` in "
        "tests/e2e/llm_models.py), served by llama-cpp-python's own OpenAI-compatible server "
        "(`python -m llama_cpp.server`, one model, requests one at a time), by Berth's "
        "`llama_cpp` backend on that file (one worker, requests one at a time), and by "
        "Berth's transformers backend on the folder (one worker, `max_sequences: 32`, "
        f"continuous batching). Each: c clients, {args.rounds} streamed `/v1/completions` "
        f"requests each, greedy, max_tokens {args.tokens}; {args.threads} thread(s) per "
        "server; tokens counted by re-tokenizing each completion with the model's "
        "tokenizer, its ASCII characters only (bytes that are not UTF-8, and characters "
        "whose bytes span two tokens, which a random model emits, Berth sends as U+FFFD or "
        "whole, llama-cpp-python's server drops); TTFT to the first chunk with text "
        "(median). Load average "
        f"{load[0]:.1f} at the end.",
        "",
        "| concurrency | " + " | ".join(f"{n} tokens/s | {n} TTFT" for n in names) + " |",
        "| --- | " + " | ".join("--- | ---" for _ in names) + " |",
    ]
    for c in args.gguf_concurrency:
        cells = []
        for n in names:
            r = results[n][c]
            cells.append(f"{r['tokens_s']:.0f} | {r['ttft_ms']:.1f} ms")
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"The llama.cpp server and Berth's `llama_cpp` backend gave the same completion "
        f"(its ASCII characters) for {same} of the {len(peer)} prompts (greedy; the "
        "server's top-k, min-p and repetition penalty turned off, as Berth's backend has "
        f"them), and for {starts} Berth's text is the start of the server's: "
        "llama-cpp-python's completion loop checks `max_tokens` only after a token that "
        "completes a character, so where the random model emits partial UTF-8 it generates "
        "a few tokens more (65 to 69 for 64 by its own usage count, checked in process); Berth stops at `max_tokens` "
        "exactly. Both run one request at a time (the server with "
        "`--interrupt_requests False`: by default a new request ends the one streaming); "
        "Berth's transformers backend batches the running requests in each step. "
        "llama.cpp (both its server and Berth's backend on it) stops at the tokens it treats "
        "as the end of a generation, which include `<|end|>` by its text; transformers stops "
        "only at `<|eos|>`: the three may generate different numbers of tokens for the same "
        "prompt, which is why tokens are counted, not assumed.",
        "",
    ]
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "llm.md")
    ap.add_argument("--threads", type=int, default=1,
                    help="PyTorch threads on both sides (1: a busy 2-core machine runs "
                    "2-thread PyTorch an order of magnitude slower)")
    ap.add_argument("--gguf", action="store_true",
                    help="also compare llama.cpp's server, Berth's llama_cpp backend and Berth's "
                    "transformers backend on the OpenAI route (needs llama-cpp-python[server])")
    ap.add_argument("--gguf-concurrency", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--skip-base", action="store_true",
                    help="with --gguf: keep the existing table in --out, add the GGUF section")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="berth-llm-bench-"))
    folder = llm_models.build_llama(work / "model", hidden=256, layers=4, heads=4, context=512,
                                    vocab_size=512)
    if args.skip_base and args.out.exists():
        lines = args.out.read_text().split("\n")
        cut = next((i for i, line in enumerate(lines) if line.startswith(GGUF_HEADING)), None)
        lines = lines[:cut] if cut is not None else lines
    else:
        lines = base_table(folder, work, args)
    if args.gguf:
        if lines and lines[-1] != "":
            lines.append("")
        lines += gguf_section(folder, work, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


def base_table(folder: Path, work: Path, args: argparse.Namespace) -> list[str]:
    """Berth's generate_stream against the in-process generate loop."""
    rows = []
    proc, port = start_berth(folder, work, args.threads)
    try:
        for c in CONCURRENCY:
            b = berth_point(port, c, args.tokens, args.rounds)
            i = inprocess(folder, c, args.tokens, args.rounds, args.threads)
            rows.append((c, b, i))
            print(f"c={c}: berth {b['tokens_s']:.0f} tok/s ttft {b['ttft_ms']:.1f} ms | "
                  f"in-process {i['tokens_s']:.0f} tok/s ttft {i['ttft_ms']:.1f} ms", flush=True)
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(60)
    load = os.getloadavg()
    lines = [
        "# Generative serving: Berth vs the in-process generate loop",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs visible, load average "
        f"{load[0]:.1f} at the end (other work shared the machine). Model: random-weight "
        "Llama, 4 layers, hidden 256, 4 heads, BPE vocabulary of 512 built by "
        "tests/e2e/llm_models.py; greedy, max_tokens "
        f"{args.tokens}, {args.rounds} requests per client; CPU, float32, "
        f"{args.threads} PyTorch thread(s) on both sides.",
        "",
        "| concurrency | Berth tokens/s | Berth TTFT (median) | in-process tokens/s | "
        "in-process TTFT | Berth / in-process |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for c, b, i in rows:
        lines.append(
            f"| {c} | {b['tokens_s']:.0f} | {b['ttft_ms']:.1f} ms | {i['tokens_s']:.0f} | "
            f"{i['ttft_ms']:.1f} ms | {b['tokens_s'] / i['tokens_s']:.2f} |"
        )
    lines += [
        "",
        "In-process: `model.generate` on one left-padded batch of all c prompts (static "
        "batching: the whole batch waits for its longest sequence); its TTFT is one "
        "`generate(max_new_tokens=1)` on that batch. Berth: c streaming clients over "
        "HTTP/1.1, one worker with `max_sequences: 32` (continuous batching); TTFT is "
        "from sending the request to its first server-sent event. Produced by "
        "`bench/llm_bench.py`; llama.cpp's server on the same weights: the next section "
        "(`--gguf`); no vLLM server here (no GPU).",
        "",
    ]
    return lines


if __name__ == "__main__":
    sys.exit(main())
