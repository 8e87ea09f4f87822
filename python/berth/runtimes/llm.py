"""Generative language models (runtime ``llm``): Hugging Face causal LMs on
PyTorch, with continuous batching; GGUF files through llama-cpp-python and
vLLM's engine as optional backends. docs/generative.md is the user's page.

A decoupled model: each request streams its completion as responses. Inputs
(the contract the OpenAI routes rely on; all but one of the first two are
optional):

==============  =====  =====  ===============================================
text_input      BYTES  [1]    the prompt (completions)
messages        BYTES  [1]    a JSON array of chat messages; the tokenizer's
                              chat template makes the prompt
max_tokens      INT32  [1]    tokens to generate at most (default
                              ``parameters.default_max_tokens``, 16)
temperature     FP32   [1]    0 is greedy (default 1)
top_p           FP32   [1]    nucleus sampling (default 1)
seed            INT64  [1]    choice i samples with seed + i
stop            BYTES  [-1]   up to 4 stop strings (never emitted)
n               INT32  [1]    choices (default 1, at most ``parameters.max_n``)
stream          BOOL   [1]    accepted and ignored: responses always stream
==============  =====  =====  ===============================================

Each response: ``text_output`` BYTES [1] (new text), ``index`` INT32 [1]
(the choice), ``finish_reason`` BYTES [1] (``""``, then ``stop`` or
``length`` on the choice's last response), ``prompt_tokens`` and
``completion_tokens`` INT32 [1] (running counts of that choice).

Parameters: ``max_sequences`` (requests generating at once, default 8: the
worker's READY offers it as ``max_concurrency``, and the engine queues the
rest), ``batch_decode`` (default true: one forward pass per step for all
running sequences, their KV caches left-padded and masked; false: each
sequence alone, the arithmetic of a lone request), ``max_n`` (default 4),
``default_max_tokens`` (16), ``backend``
(``transformers``, ``llama_cpp`` or ``vllm``; a ``.gguf`` file means
``llama_cpp``), ``device`` and ``threads`` as for PyTorch; ``context``
(llama_cpp only: llama.cpp's context, default 2048).
"""

from __future__ import annotations

import inspect
import itertools
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, InvalidInput, MissingExtraError, ModelLoadError
from ..model import TensorSpec
from . import Runtime, default_threads, int_parameter

log = logging.getLogger(__name__)

__all__ = ["LLMRuntime", "is_causal_lm_config"]

_CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel")
_BACKENDS = ("transformers", "llama_cpp", "vllm")


def is_causal_lm_config(doc: Mapping[str, Any]) -> bool:
    """Whether a ``config.json`` describes a causal (generative) LM."""
    archs = doc.get("architectures") or []
    return isinstance(archs, list) and any(
        isinstance(a, str) and a.endswith(_CAUSAL_SUFFIXES) for a in archs
    )


INPUTS = [
    TensorSpec("text_input", "BYTES", [1], optional=True),
    TensorSpec("messages", "BYTES", [1], optional=True),
    TensorSpec("max_tokens", "INT32", [1], optional=True),
    TensorSpec("temperature", "FP32", [1], optional=True),
    TensorSpec("top_p", "FP32", [1], optional=True),
    TensorSpec("seed", "INT64", [1], optional=True),
    TensorSpec("stop", "BYTES", [-1], optional=True),
    TensorSpec("n", "INT32", [1], optional=True),
    TensorSpec("stream", "BOOL", [1], optional=True),
]
OUTPUTS = [
    TensorSpec("text_output", "BYTES", [1]),
    TensorSpec("index", "INT32", [1]),
    TensorSpec("finish_reason", "BYTES", [1]),
    TensorSpec("prompt_tokens", "INT32", [1]),
    TensorSpec("completion_tokens", "INT32", [1]),
]


class LLMRuntime(Runtime):
    name = "llm"
    platform = "llm_transformers"
    decoupled = True

    def __init__(self) -> None:
        super().__init__()
        self.max_concurrency = 1
        self._live: Any = None  # the last decoding step's (sequences, cache, mask)
        self._ids = itertools.count(-1, -1)  # request ids for predict_stream

    # ---------------------------------------------------------------- load

    def load(self, entry: Mapping[str, Any]) -> None:
        from .detect import resolve_model_path

        params = entry.get("parameters") or {}
        path = resolve_model_path(entry["path"], self.name)
        backend = params.get("backend") or (
            "llama_cpp" if path.suffix.lower() == ".gguf" else "transformers"
        )
        if backend not in _BACKENDS:
            raise ConfigError(
                f"parameters.backend: {backend!r} is not one of {', '.join(_BACKENDS)}"
            )
        self.max_sequences = int_parameter(entry, "max_sequences") or 8
        self.max_n = int_parameter(entry, "max_n") or 4
        self.default_max_tokens = int_parameter(entry, "default_max_tokens") or 16
        self.inputs, self.outputs = list(INPUTS), list(OUTPUTS)
        if backend == "transformers":
            self._load_transformers(entry, path)
        elif backend == "llama_cpp":
            threads = int_parameter(entry, "threads") or default_threads()
            self._backend = _LlamaCppBackend(path, params, threads)
            self.platform = "llm_llama_cpp"
        else:
            self._backend = _VllmBackend(path, params)
            self.platform = "llm_vllm"

    def _load_transformers(self, entry: Mapping[str, Any], folder: Path) -> None:
        import torch
        import transformers
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from ._generate import ContinuousBatcher
        from ._torch import choose_device, set_threads

        if not folder.is_dir():
            raise ModelLoadError(
                f"{folder}: the llm runtime serves a causal LM folder saved with "
                "save_pretrained (config.json, weights, tokenizer files) or a .gguf file"
            )
        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
        set_threads(entry)
        self.device = choose_device(entry)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)
        except Exception as e:
            raise ModelLoadError(
                f"{folder}: cannot load the causal LM or its tokenizer "
                f"({type(e).__name__}: {e}); the folder must hold what save_pretrained wrote "
                "(config.json, model.safetensors, tokenizer files)"
            ) from e
        self.model = model.to(self.device).eval()
        self._torch = torch
        # transformers 5 renamed the forward's past_key_values to cache.
        forward = inspect.signature(type(model).forward).parameters
        self._cache_kw = "cache" if "cache" in forward else "past_key_values"
        cfg = model.config
        self.context = int(
            getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", 0) or 2048
        )
        eos = getattr(model.generation_config, "eos_token_id", None)
        if eos is None:
            eos = self.tokenizer.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        batched = (entry.get("parameters") or {}).get("batch_decode", True)
        if not isinstance(batched, bool):
            raise ConfigError(f"parameters.batch_decode: expected true or false, got {batched!r}")
        stepper = self._step_batched if batched else self._step
        self.batcher = ContinuousBatcher(stepper, self._decode, eos_ids, self.max_sequences)
        self.max_concurrency = self.max_sequences

    # -------------------------------------------------------------- serving

    def _decode(self, ids: list[int]) -> str:
        return str(self.tokenizer.decode(ids, skip_special_tokens=True))

    def _step(self, seqs: list[Any]) -> list[Any]:
        """Next-token logits of each sequence, each computed alone on its own
        KV cache (the same arithmetic as the request run by itself)."""
        torch = self._torch
        rows = []
        with torch.inference_mode():
            for seq in seqs:
                if seq.state is None:
                    ids = seq.prompt_ids
                else:
                    ids = seq.generated[-1:]
                x = torch.tensor([ids], dtype=torch.long, device=self.device)
                state = _cache(seq.state) if isinstance(seq.state, list) else seq.state
                kw = {self._cache_kw: state} if state is not None else {}
                out = self.model(input_ids=x, use_cache=True, **kw)
                seq.state = out.past_key_values
                rows.append(out.logits[0, -1].float().cpu())
        return rows

    def _step_batched(self, seqs: list[Any]) -> list[Any]:
        """Next-token logits with one forward pass for every sequence past
        its prompt: their KV caches are left-padded to the longest and
        stacked, with an attention mask that hides the padding and each
        sequence's own positions; the new caches are split back. A new
        sequence's prompt runs alone first (prefill)."""
        fresh = [s for s in seqs if s.state is None]
        warm = [s for s in seqs if s.state is not None]
        rows: dict[int, Any] = {}
        alone = [warm.pop()] if len(warm) == 1 else []
        if len(fresh) == 1:
            alone.append(fresh.pop())
        for seq in alone:
            rows[id(seq)] = self._step([seq])[0]
            seq.state = _layers(seq.state)
        if fresh:
            for seq, row in zip(fresh, self._prefill_batch(fresh), strict=True):
                rows[id(seq)] = row
        if warm:
            for seq, row in zip(warm, self._forward_batch(warm), strict=True):
                rows[id(seq)] = row
        return [rows[id(s)] for s in seqs]

    def _prefill_batch(self, seqs: list[Any]) -> list[Any]:
        """The prompts of several new sequences in one forward pass (left
        padded and masked); each keeps its own slice of the KV cache."""
        torch = self._torch
        lens = [len(s.prompt_ids) for s in seqs]
        width = max(lens)
        pad = self.tokenizer.pad_token_id or 0
        ids = torch.full((len(seqs), width), pad, dtype=torch.long, device=self.device)
        mask = torch.zeros(len(seqs), width, dtype=torch.long, device=self.device)
        pos = torch.zeros(len(seqs), width, dtype=torch.long, device=self.device)
        for i, (seq, n) in enumerate(zip(seqs, lens, strict=True)):
            ids[i, width - n :] = torch.tensor(seq.prompt_ids, dtype=torch.long)
            mask[i, width - n :] = 1
            pos[i, width - n :] = torch.arange(n)
        with torch.inference_mode():
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True)
        return self._split(seqs, lens, width, out)

    def _split(self, seqs: list[Any], lens: list[int], width: int, out: Any) -> list[Any]:
        """Gives each sequence its rows of a batched forward's KV cache (its
        real columns, without the left padding) and returns its logits."""
        new = _layers(out.past_key_values)
        for i, (seq, n) in enumerate(zip(seqs, lens, strict=True)):
            start = width - n  # its first real column; the pass's new ones follow
            seq.state = [(k[i : i + 1, :, start:], v[i : i + 1, :, start:]) for k, v in new]
        return [out.logits[i, -1].float().cpu() for i in range(len(seqs))]

    def _forward_batch(self, seqs: list[Any]) -> list[Any]:
        """One decoding step for sequences past their prompt. While the same
        sequences run, the step's KV cache and mask carry over to the next
        (no copy); when one joins or leaves, they are rebuilt from each
        sequence's slice."""
        torch = self._torch
        key = tuple((s.rid, s.index) for s in seqs)
        lens = [s.state[0][0].shape[-2] for s in seqs]
        live = self._live
        if live is not None and live[0] == key:
            cache = live[1]
            ones = torch.ones(len(seqs), 1, dtype=torch.long, device=self.device)
            mask = torch.cat([live[2], ones], dim=1)
            width = mask.shape[1] - 1
        else:
            cache, mask, width = self._stack(seqs, lens)
        ids = torch.tensor([[s.generated[-1]] for s in seqs], dtype=torch.long, device=self.device)
        pos = torch.tensor([[n] for n in lens], dtype=torch.long, device=self.device)
        with torch.inference_mode():
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos,
                             use_cache=True, **{self._cache_kw: cache})
        self._live = (key, out.past_key_values, mask)
        return self._split(seqs, lens, width, out)

    def _stack(self, seqs: list[Any], lens: list[int]) -> tuple[Any, Any, int]:
        """The sequences' KV caches left-padded to the longest and stacked,
        and the attention mask (padding hidden) for one more token."""
        torch = self._torch
        width = max(lens)
        pairs = []
        for layer in range(len(seqs[0].state)):
            ks, vs = [], []
            for seq, n in zip(seqs, lens, strict=True):
                k, v = seq.state[layer]
                if n < width:
                    pad = (0, 0, width - n, 0)  # left, on the sequence axis
                    k, v = torch.nn.functional.pad(k, pad), torch.nn.functional.pad(v, pad)
                ks.append(k)
                vs.append(v)
            pairs.append((torch.cat(ks), torch.cat(vs)))
        mask = torch.zeros(len(seqs), width + 1, dtype=torch.long, device=self.device)
        for i, n in enumerate(lens):
            mask[i, width - n :] = 1
        return _cache(pairs), mask, width

    def prompt_ids(self, req: Any) -> list[int]:
        """The prompt's token ids: the text, or the chat template applied to
        the messages."""
        tok = self.tokenizer
        if req.messages is not None:
            if not getattr(tok, "chat_template", None):
                raise InvalidInput(
                    "this model's tokenizer has no chat template: send 'text_input' instead "
                    "of 'messages'"
                )
            try:
                text = tok.apply_chat_template(
                    req.messages, tokenize=False, add_generation_prompt=True
                )
            except Exception as e:
                raise InvalidInput(f"the chat template refused the messages: {e}") from None
            return list(tok(text, add_special_tokens=False)["input_ids"])
        return list(tok(req.prompt)["input_ids"])

    def _admit(self, inputs: Mapping[str, np.ndarray]) -> tuple[Any, list[int], int]:
        from ._generate import parse_request

        req = parse_request(inputs, self.max_n)
        ids = self.prompt_ids(req)
        return req, ids, self.check_room(ids, req.max_tokens, self.context)

    def check_room(self, ids: list[int], asked: int | None, context: int) -> int:
        """The tokens a request may generate: its ``max_tokens`` (or the
        default, cut to the room left); an input error when the prompt is
        empty or the prompt plus the asked ``max_tokens`` exceed the
        context."""
        if not ids:
            raise InvalidInput("the prompt is empty after tokenization")
        room = context - len(ids)
        if room < 1:
            raise InvalidInput(f"the prompt has {len(ids)} tokens; this model's context is {context}")
        max_tokens = asked if asked is not None else self.default_max_tokens
        if asked is not None and max_tokens > room:
            raise InvalidInput(
                f"max_tokens {max_tokens} plus the prompt's {len(ids)} tokens exceed this "
                f"model's context of {context} tokens"
            )
        return min(max_tokens, room)

    # The worker's concurrent interface (worker.py, _serve_concurrent).

    def start(self, rid: int, inputs: Mapping[str, np.ndarray], params: Any = None) -> None:
        """Admits a request; it generates from the next :meth:`step`."""
        if hasattr(self, "_backend"):
            raise InvalidInput("this backend runs one request at a time")
        req, ids, max_tokens = self._admit(inputs)
        self.batcher.start(rid, req, ids, max_tokens)

    def step(self) -> list[Any]:
        return self.batcher.step()

    def cancel(self, rid: int) -> bool:
        return self.batcher.cancel(rid)

    def active(self) -> int:
        return self.batcher.active()

    def predict(
        self, inputs: dict[str, np.ndarray], parameters: Mapping[str, Any] | None = None
    ) -> dict[str, np.ndarray]:
        raise InvalidInput("a generative model streams its answer: use generate_stream")

    def predict_stream(
        self, inputs: dict[str, np.ndarray], parameters: Mapping[str, Any] | None = None
    ) -> Iterator[dict[str, np.ndarray]]:
        if hasattr(self, "_backend"):
            from ._generate import parse_request

            yield from self._backend.generate(parse_request(inputs, self.max_n), self)
            return
        req, ids, max_tokens = self._admit(inputs)
        yield from self.batcher.run_one(next(self._ids), req, ids, max_tokens)


def _cache(pairs: list[tuple[Any, Any]]) -> Any:
    """A transformers DynamicCache holding (keys, values) per layer."""
    from transformers import DynamicCache

    cache = DynamicCache()
    for layer, (k, v) in enumerate(pairs):
        cache.update(k, v, layer)
    return cache


def _layers(cache: Any) -> list[tuple[Any, Any]]:
    """A KV cache as (keys, values) per layer, whatever its class."""
    if isinstance(cache, list):
        return cache
    layers = getattr(cache, "layers", None)
    if layers is not None:  # transformers 5
        return [(layer.keys, layer.values) for layer in layers]
    return [(k, v) for k, v in zip(cache.key_cache, cache.value_cache, strict=True)]


# ------------------------------------------------------------ other backends


class _LlamaCppBackend:
    """A GGUF file through llama-cpp-python (``pip install 'berth[gguf]'``):
    one request at a time, with llama.cpp's tokenizer and sampler. Berth
    applies the chat template stored in the file, counts the tokens, ends at
    llama.cpp's end-of-generation tokens, and holds back stop strings and
    half-decoded characters exactly as for the transformers backend."""

    def __init__(self, path: Path, params: Mapping[str, Any], threads: int | None) -> None:
        try:
            import llama_cpp
        except ImportError as e:
            raise MissingExtraError(
                "llama-cpp-python", "gguf", f"cannot import llama_cpp: {e}"
            ) from e
        if not path.is_file():
            raise ModelLoadError(f"{path}: the llama_cpp backend serves one .gguf file")
        ctx = params.get("context", 2048)
        if isinstance(ctx, bool) or not isinstance(ctx, int) or ctx < 16:
            raise ConfigError(f"parameters.context: expected an integer >= 16, got {ctx!r}")
        try:
            self.llm = llama_cpp.Llama(model_path=str(path), n_ctx=ctx, n_threads=threads,
                                       n_threads_batch=threads, verbose=False)
        except (ValueError, RuntimeError, OSError) as e:
            raise ModelLoadError(f"{path}: llama.cpp cannot load this GGUF file: {e}") from e
        self._llama_cpp = llama_cpp
        self._vocab = llama_cpp.llama_model_get_vocab(self.llm.model)
        # the context a request fits in: llama.cpp's, within what the model was trained for
        trained = int(llama_cpp.llama_model_n_ctx_train(self.llm.model))
        self.context = min(self.llm.n_ctx(), trained) if trained > 0 else self.llm.n_ctx()
        self.template = self.llm.metadata.get("tokenizer.chat_template")

    def _token_text(self, token: int) -> str:
        if token < 0:
            return ""
        return self.llm.detokenize([token], special=True).decode("utf-8", errors="replace")

    def prompt_ids(self, req: Any) -> list[int]:
        """The prompt's tokens: the text (with BOS when the file asks for
        it), or the messages through the file's chat template."""
        if req.messages is None:
            return list(self.llm.tokenize(req.prompt.encode("utf-8"), add_bos=True, special=True))
        if not self.template:
            raise InvalidInput(
                "this GGUF file has no chat template (tokenizer.chat_template): send "
                "'text_input' instead of 'messages'"
            )
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        try:
            env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
            # the helpers Hugging Face chat templates call
            env.globals["raise_exception"] = _template_refusal
            env.globals["strftime_now"] = _strftime_now
            text = env.from_string(self.template).render(
                messages=req.messages, add_generation_prompt=True,
                bos_token=self._token_text(self.llm.token_bos()),
                eos_token=self._token_text(self.llm.token_eos()),
            )
        except InvalidInput:
            raise
        except Exception as e:
            raise InvalidInput(f"the chat template refused the messages: {e}") from None
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def generate(self, req: Any, runtime: LLMRuntime) -> Iterator[dict[str, np.ndarray]]:
        import os

        from ._generate import StopScanner, _out

        if req.n != 1:
            raise InvalidInput("the llama_cpp backend generates one choice per request (n=1)")
        ids = self.prompt_ids(req)
        max_tokens = runtime.check_room(ids, req.max_tokens, self.context)
        seed = req.seed if req.seed is not None else int.from_bytes(os.urandom(4), "little")
        self.llm.set_seed(seed & 0xFFFF_FFFF)
        # llama.cpp's sampler: greedy at temperature 0, else top-p then temperature
        # (its top-k, min-p and repetition penalty off, as in the transformers backend)
        tokens = self.llm.generate(ids, temp=req.temperature, top_p=req.top_p, top_k=0,
                                   min_p=0.0, typical_p=1.0, repeat_penalty=1.0)
        scanner = StopScanner(req.stop)
        generated: list[int] = []
        text = ""
        try:
            for token in tokens:
                finish = ""
                if self._llama_cpp.llama_vocab_is_eog(self._vocab, token):
                    finish = "stop"
                    delta, _ = scanner.feed(text, final=True)
                else:
                    generated.append(token)
                    text = self.llm.detokenize(generated).decode("utf-8", errors="replace")
                    final = len(generated) >= max_tokens
                    delta, hit = scanner.feed(text, final=final)
                    finish = "stop" if hit else "length" if final else ""
                if delta or finish:
                    yield _out(delta, 0, finish, len(ids), len(generated))
                if finish:
                    return
        finally:
            tokens.close()


def _template_refusal(message: str) -> None:
    raise InvalidInput(f"the chat template refused the messages: {message}")


def _strftime_now(fmt: str) -> str:
    import datetime

    return datetime.datetime.now().strftime(fmt)


class _VllmBackend:
    """vLLM's offline engine on a GPU (``parameters.backend: vllm``): one
    request at a time here, each streamed as a single response (vLLM does
    its own continuous batching inside; untested without a GPU)."""

    def __init__(self, path: Path, params: Mapping[str, Any]) -> None:
        try:
            import torch
            import vllm
        except ImportError as e:
            raise MissingExtraError("vLLM", "vllm", f"cannot import vllm: {e}") from e
        if not torch.cuda.is_available():
            raise ModelLoadError("the vllm backend needs a CUDA GPU; none is visible")
        self.vllm = vllm
        self.llm = vllm.LLM(model=str(path))

    def generate(self, req: Any, runtime: LLMRuntime) -> Iterator[dict[str, np.ndarray]]:
        from ._generate import _out

        sp = self.vllm.SamplingParams(
            n=req.n,
            max_tokens=req.max_tokens or runtime.default_max_tokens,
            temperature=req.temperature,
            top_p=req.top_p,
            seed=req.seed,
            stop=req.stop or None,
        )
        if req.messages is not None:
            results = self.llm.chat(req.messages, sp)
        else:
            results = self.llm.generate([req.prompt], sp)
        for result in results:
            prompt = len(result.prompt_token_ids or [])
            for i, c in enumerate(result.outputs):
                finish = "length" if c.finish_reason == "length" else "stop"
                yield _out(c.text, i, finish, prompt, len(c.token_ids))
