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
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "e2e"))

import llm_models  # noqa: E402

CONCURRENCY = (1, 8, 32)


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


def start_berth(folder: Path, work: Path, threads: int) -> tuple[subprocess.Popen[bytes], int]:
    repo = work / "repo"
    shutil.copytree(folder, repo / "m" / "1")
    (repo / "m" / "berth.yaml").write_text(
        f"runtime: llm\ninstances: 1\nparameters:\n  max_sequences: 32\n  threads: {threads}\n"
    )
    port = free_port()
    berth = shutil.which("berth", path=str(Path(sys.executable).parent)) or "berth"
    log = (work / "berth.log").open("wb")
    proc = subprocess.Popen(
        [berth, "serve", str(repo), "--host", "127.0.0.1", "--port", str(port),
         "--grpc-port", str(free_port())],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/v2/models/m/ready")
            if conn.getresponse().status == 200:
                return proc, port
        except OSError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"berth did not become ready; see {work / 'berth.log'}")


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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "llm.md")
    ap.add_argument("--threads", type=int, default=1,
                    help="PyTorch threads on both sides (1: a busy 2-core machine runs "
                    "2-thread PyTorch an order of magnitude slower)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="berth-llm-bench-"))
    folder = llm_models.build_llama(work / "model", hidden=256, layers=4, heads=4, context=512,
                                    vocab_size=512)
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
        "`bench/llm_bench.py`; no llama.cpp or vLLM server could be installed here to "
        "compare against (no GPU; llama.cpp builds from source for many minutes).",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
