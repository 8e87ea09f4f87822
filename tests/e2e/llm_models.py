"""Tiny generative models the tests build themselves (never a hub download):
a random-weight causal LM from a config, with a byte-level BPE tokenizer
trained here on text this module writes, wrapped as a
``PreTrainedTokenizerFast`` with a chat template, saved together with
``save_pretrained``. Shared by the generative and OpenAI-route tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

_WORDS = (
    "the quick brown fox jumps over a lazy dog while berth serves models to many "
    "clients with tokens streaming one by one and every sequence keeps its own cache "
    "so that batching never changes what a request receives from the model server"
).split()


def corpus(lines: int = 400) -> list[str]:
    """Deterministic text: a few hundred lines of shuffled words and digits."""
    out = []
    for i in range(lines):
        words = [_WORDS[(i * 7 + k * 13) % len(_WORDS)] for k in range(6 + i % 9)]
        out.append(" ".join(words) + f" {i % 97}.")
    return out


def build_tokenizer(folder: Path, vocab_size: int = 320) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|bos|>", "<|eos|>", "<|pad|>", "<|user|>", "<|assistant|>", "<|system|>",
                "<|end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|bos|>",
        eos_token="<|eos|>",
        pad_token="<|pad|>",
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(folder)
    return fast


def build_llama(
    folder: Path,
    *,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 4,
    context: int = 256,
    seed: int = 0,
    vocab_size: int = 320,
    endless: bool = False,
) -> Path:
    """Saves a random-weight Llama and its tokenizer in ``folder``; returns it.

    The weights are drawn with a wide initializer so that the next-token
    distribution is peaked: greedy decoding then has clear winners.
    ``endless``: the model never emits ``<|eos|>`` or ``<|end|>`` (see
    :func:`_never_end`), so a generation runs to ``max_tokens``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    folder.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(folder, vocab_size)
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=context,
        initializer_range=0.2,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(cfg).eval()
    if endless:
        _never_end(model, [tok.eos_token_id, tok.convert_tokens_to_ids("<|end|>")])
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(folder)
    return folder


def _never_end(model: Any, ends: list[int]) -> None:
    """Makes the tokens ``ends`` lose every step by a wide margin: the last
    dimension of the residual stream holds a constant (its embedding column
    is 10 and no layer writes to it), so after the final norm it is always
    positive; the output row of every other token reads it with weight +50
    and the rows of ``ends`` with -50."""
    import torch

    d = model.config.hidden_size - 1
    with torch.no_grad():
        model.model.embed_tokens.weight[:, d] = 10.0
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight[d, :] = 0.0
            layer.mlp.down_proj.weight[d, :] = 0.0
        head = model.lm_head.weight
        head[:, d] = 50.0
        head[ends, d] = -50.0


def reference(folder: Path, prompt_ids: list[int], max_new_tokens: int) -> list[int]:
    """Greedy tokens from the model's own ``generate``, in this process."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True).eval()
    with torch.inference_mode():
        out = model.generate(
            torch.tensor([prompt_ids]),
            attention_mask=torch.ones(1, len(prompt_ids), dtype=torch.long),
            max_new_tokens=max_new_tokens,
            do_sample=False,
        )
    return [int(t) for t in out[0, len(prompt_ids):]]


# ------------------------------------------------------------------ GGUF

# HF Llama parameter names (after "model.layers.N.") and their GGUF names
# (after "blk.N."), the layout llama.cpp's llama architecture reads.
_GGUF_LAYER_NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
_GGUF_TOP_NAMES = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}


def _rope_rows(weight: Any, heads: int) -> Any:
    """Reorders a q/k projection's output rows for llama.cpp's rotary
    embedding: transformers rotates the two halves of each head's vector
    (dimension j with j + d/2), llama.cpp rotates neighbours (2j with
    2j + 1); so within each head, row j of the first half goes to 2j and
    row j of the second half to 2j + 1."""
    rows, cols = weight.shape
    half = rows // heads // 2
    return weight.reshape(heads, 2, half, cols).swapaxes(1, 2).reshape(rows, cols)


def _rope_theta(cfg: Any) -> float:
    params = getattr(cfg, "rope_parameters", None) or {}
    theta = params.get("rope_theta") if isinstance(params, dict) else None
    return float(theta or getattr(cfg, "rope_theta", None) or 10000.0)


def _gguf_vocab(writer: Any, folder: Path, chat_template: bool | str) -> None:
    """The byte-level BPE tokenizer as GGUF ``tokenizer.ggml.*`` keys
    (llama.cpp's "gpt2" BPE with GPT-2's pre-tokenizer split, which is what
    ``pre_tokenizers.ByteLevel`` applies), so llama.cpp tokenizes as the
    Hugging Face tokenizer does."""
    import json

    import gguf
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    doc = json.loads((folder / "tokenizer.json").read_text())
    by_id = {i: t for t, i in tok.get_vocab().items()}
    specials = {a["id"] for a in doc.get("added_tokens", []) if a.get("special")}
    tokens = [by_id[i] for i in range(len(by_id))]
    types = [int(gguf.TokenType.CONTROL if i in specials else gguf.TokenType.NORMAL)
             for i in range(len(tokens))]
    merges = [m if isinstance(m, str) else " ".join(m) for m in doc["model"]["merges"]]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(tok.bos_token_id)
    writer.add_eos_token_id(tok.eos_token_id)
    writer.add_pad_token_id(tok.pad_token_id)
    writer.add_add_bos_token(False)  # as the HF tokenizer: no post-processor adds one
    writer.add_add_eos_token(False)
    if chat_template:
        writer.add_chat_template(chat_template if isinstance(chat_template, str)
                                 else tok.chat_template)


def build_gguf(folder: Path, out: Path, *, chat_template: bool | str = True) -> Path:
    """Writes the Llama saved in ``folder`` (by :func:`build_llama`) as one
    GGUF file ``out`` (float32 tensors, the tokenizer and its chat template
    in the metadata: the tokenizer's, the one given, or none when
    ``chat_template`` is false) that llama.cpp loads; returns ``out``.
    Needs the ``gguf`` package."""
    import gguf
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)
    cfg = model.config
    heads, kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
    writer = gguf.GGUFWriter(str(out), "llama")
    writer.add_name(folder.name)
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(cfg.hidden_size // heads)
    writer.add_rope_freq_base(_rope_theta(cfg))
    writer.add_layer_norm_rms_eps(float(cfg.rms_norm_eps))
    writer.add_vocab_size(cfg.vocab_size)
    writer.add_file_type(int(gguf.LlamaFileType.ALL_F32))
    _gguf_vocab(writer, folder, chat_template)
    for name, tensor in model.state_dict().items():
        data = tensor.detach().to(torch.float32).numpy()
        if name in _GGUF_TOP_NAMES:
            writer.add_tensor(_GGUF_TOP_NAMES[name], data)
            continue
        _, _, layer, rest = name.split(".", 3)  # model.layers.N.rest
        if rest == "self_attn.q_proj.weight":
            data = _rope_rows(data, heads)
        elif rest == "self_attn.k_proj.weight":
            data = _rope_rows(data, kv_heads)
        writer.add_tensor(f"blk.{layer}.{_GGUF_LAYER_NAMES[rest]}", data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file(progress=False)
    writer.close()
    return out
