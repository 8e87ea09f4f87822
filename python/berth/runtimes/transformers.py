"""Hugging Face transformers models saved in a folder (``save_pretrained``:
``config.json``, weights, tokenizer files), served by task on PyTorch.

Never downloads: the worker sets ``HF_HUB_OFFLINE=1`` and loads with
``local_files_only=True``. Platform ``transformers_<task>``.

Task: ``parameters.task``, else ``sentence-embeddings`` for a
sentence-transformers folder (``modules.json`` /
``config_sentence_transformers.json``), else from ``config.json``'s
``architectures``: ``*ForSequenceClassification`` is
``text-classification``, ``*ForTokenClassification`` is
``token-classification``, anything else ``feature-extraction``.

Every task takes ``text`` BYTES ``[-1]`` (UTF-8, one text per row), tokenized
with the folder's tokenizer, padded to the longest text of the batch and
truncated to ``parameters.max_length`` (default: sentence-transformers'
``max_seq_length``, else the tokenizer's limit, at most 512). Outputs:

=====================  ====================================================
text-classification    ``label`` BYTES [-1] (top class, from id2label),
                       ``score`` FP32 [-1] (its probability), ``scores``
                       FP32 [-1, classes] (softmax; sigmoid for
                       multi_label_classification models)
token-classification   per text, its tokens without special tokens, padded
                       to the batch's longest: ``tokens`` BYTES [-1, -1],
                       ``labels`` BYTES [-1, -1], ``scores`` FP32 [-1, -1],
                       ``offsets`` INT64 [-1, -1, 2] (character start, end
                       in the text); padding is ``b""``, 0 and -1
feature-extraction     ``last_hidden_state`` FP32 [-1, -1, hidden] and
                       ``attention_mask`` INT64 [-1, -1] (1 for real tokens)
sentence-embeddings    ``embedding`` FP32 [-1, dim]: pooled (the folder's
                       ``1_Pooling`` mode, else ``parameters.pooling``:
                       mean, cls or max) and L2-normalised (a Normalize
                       module, else ``parameters.normalize``, default true)
=====================  ====================================================

Device and threads as for PyTorch (``parameters.device``, ``threads``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
)

from ..decode import texts
from ..errors import ConfigError, ModelLoadError
from ..model import TensorSpec
from . import Runtime, int_parameter, pick_input
from ._torch import choose_device, set_threads
from .detect import is_sentence_transformers, resolve_model_path

log = logging.getLogger(__name__)

__all__ = ["TASKS", "TransformersRuntime", "detect_task"]

TASKS = ("text-classification", "token-classification", "feature-extraction", "sentence-embeddings")
_MODEL_CLASSES = {
    "text-classification": AutoModelForSequenceClassification,
    "token-classification": AutoModelForTokenClassification,
    "feature-extraction": AutoModel,
    "sentence-embeddings": AutoModel,
}
_POOLING = ("mean", "cls", "max")
_DEFAULT_MAX_LENGTH = 512


def _read_json(path: Path) -> Any:
    try:
        with path.open("rb") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _modules(folder: Path) -> list[dict[str, Any]]:
    doc = _read_json(folder / "modules.json")
    return [m for m in doc if isinstance(m, dict)] if isinstance(doc, list) else []


def _module_path(folder: Path, kind: str) -> Path | None:
    """The folder of a sentence-transformers module (``Transformer``,
    ``Pooling``, ``Normalize``), or ``None`` when the model has none."""
    for module in _modules(folder):
        if str(module.get("type", "")).endswith(f".{kind}"):
            return folder / str(module.get("path", ""))
    return None


_SUPPORTED_MODULES = ("Transformer", "Pooling", "Normalize")


def _check_modules(folder: Path) -> None:
    """Refuses sentence-transformers pipelines with modules Berth does not
    run (a Dense projection, say): their embeddings would be wrong."""
    for module in _modules(folder):
        kind = str(module.get("type", "")).rsplit(".", 1)[-1]
        if kind not in _SUPPORTED_MODULES:
            raise ModelLoadError(
                f"{folder}/modules.json: module {module.get('type')!r} is not one Berth runs "
                f"({', '.join(_SUPPORTED_MODULES)}); export the model to ONNX or serve it "
                "with a berth.Model that calls sentence-transformers"
            )


def detect_task(folder: Path, config: Any) -> str:
    """The task a model folder is served for when ``parameters.task`` is unset."""
    if is_sentence_transformers(folder):
        return "sentence-embeddings"
    for arch in getattr(config, "architectures", None) or []:
        if arch.endswith("ForSequenceClassification"):
            return "text-classification"
        if arch.endswith("ForTokenClassification"):
            return "token-classification"
    return "feature-extraction"


class TransformersRuntime(Runtime):
    name = "transformers"
    platform = "transformers"

    def load(self, entry: Mapping[str, Any]) -> None:
        folder = resolve_model_path(entry["path"], self.name)
        if not folder.is_dir():
            raise ModelLoadError(
                f"{folder}: the transformers runtime serves a model folder saved with "
                "save_pretrained (config.json, weights, tokenizer files)"
            )
        params = entry.get("parameters") or {}
        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
        set_threads(entry)
        self.device = choose_device(entry)

        model_dir = _module_path(folder, "Transformer") or folder
        try:
            config = AutoConfig.from_pretrained(model_dir, local_files_only=True)
        except Exception as e:
            raise ModelLoadError(f"{model_dir}: cannot read config.json ({e})") from e
        task = params.get("task") or detect_task(folder, config)
        if task not in TASKS:
            raise ConfigError(f"parameters.task: {task!r} is not one of {', '.join(TASKS)}")
        self.task = task
        self.platform = f"transformers_{task.replace('-', '_')}"
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
            model = _MODEL_CLASSES[task].from_pretrained(model_dir, local_files_only=True)
        except Exception as e:
            raise ModelLoadError(
                f"{model_dir}: cannot load the {task} model or its tokenizer "
                f"({type(e).__name__}: {e}); the folder must hold what save_pretrained wrote "
                "(config.json, model.safetensors, tokenizer files)"
            ) from e
        self.model = model.to(self.device).eval()
        self.config = model.config
        self.max_length = self._max_length(folder, params)
        if task == "token-classification" and not getattr(self.tokenizer, "is_fast", False):
            raise ModelLoadError(
                f"{model_dir}: token-classification needs a fast tokenizer (tokenizer.json) "
                "for character offsets"
            )
        if task == "sentence-embeddings":
            _check_modules(folder)
            self.pooling, self.normalize = self._pooling(folder, params)
        self.inputs = [TensorSpec("text", "BYTES", [-1])]
        self.outputs = self._output_specs()

    def _max_length(self, folder: Path, params: Mapping[str, Any]) -> int:
        explicit = int_parameter({"parameters": params}, "max_length")
        if explicit:
            return explicit
        st = _read_json(folder / "sentence_bert_config.json")
        if isinstance(st, dict) and isinstance(st.get("max_seq_length"), int):
            return int(st["max_seq_length"])
        limits = [_DEFAULT_MAX_LENGTH, self.tokenizer.model_max_length]
        positions = getattr(self.config, "max_position_embeddings", None)
        if isinstance(positions, int):
            limits.append(positions)
        return int(min(limits))

    def _pooling(self, folder: Path, params: Mapping[str, Any]) -> tuple[str, bool]:
        mode = params.get("pooling")
        pooling_dir = _module_path(folder, "Pooling")
        if mode is None and pooling_dir is not None:
            cfg = _read_json(pooling_dir / "config.json") or {}
            keys = {
                "pooling_mode_cls_token": "cls",
                "pooling_mode_mean_tokens": "mean",
                "pooling_mode_max_tokens": "max",
            }
            on = sorted(k for k, v in cfg.items() if k.startswith("pooling_mode") and v is True)
            if len(on) != 1 or on[0] not in keys:
                raise ModelLoadError(
                    f"{pooling_dir}/config.json: pooling {on or 'none'} is not one Berth "
                    f"implements (exactly one of {', '.join(_POOLING)}); set parameters.pooling "
                    "to override"
                )
            mode = keys[on[0]]
        mode = mode or "mean"
        if mode not in _POOLING:
            raise ConfigError(f"parameters.pooling: {mode!r} is not one of {', '.join(_POOLING)}")
        normalize = params.get("normalize")
        if normalize is None:
            st = is_sentence_transformers(folder)
            normalize = _module_path(folder, "Normalize") is not None if st else True
        if not isinstance(normalize, bool):
            raise ConfigError(f"parameters.normalize: expected true or false, got {normalize!r}")
        return mode, normalize

    def _output_specs(self) -> list[TensorSpec]:
        hidden = int(getattr(self.config, "hidden_size", -1) or -1)
        if self.task == "text-classification":
            k = int(self.config.num_labels)
            return [
                TensorSpec("label", "BYTES", [-1]),
                TensorSpec("score", "FP32", [-1]),
                TensorSpec("scores", "FP32", [-1, k]),
            ]
        if self.task == "token-classification":
            return [
                TensorSpec("tokens", "BYTES", [-1, -1]),
                TensorSpec("labels", "BYTES", [-1, -1]),
                TensorSpec("scores", "FP32", [-1, -1]),
                TensorSpec("offsets", "INT64", [-1, -1, 2]),
            ]
        if self.task == "feature-extraction":
            return [
                TensorSpec("last_hidden_state", "FP32", [-1, -1, hidden]),
                TensorSpec("attention_mask", "INT64", [-1, -1]),
            ]
        return [TensorSpec("embedding", "FP32", [-1, hidden])]

    # ------------------------------------------------------------- serving

    def _encode(self, batch: list[str]) -> tuple[dict[str, torch.Tensor], Any]:
        offsets = self.task == "token-classification"
        enc = self.tokenizer(
            batch,
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
            return_offsets_mapping=offsets,
            return_special_tokens_mask=offsets,
        )
        extra = {k: enc.pop(k) for k in ("offset_mapping", "special_tokens_mask") if k in enc}
        return {k: v.to(self.device) for k, v in enc.items()}, extra

    def predict(
        self, inputs: dict[str, np.ndarray], parameters: Mapping[str, Any] | None = None
    ) -> dict[str, np.ndarray]:
        batch = texts(pick_input(inputs, "text"), "text")
        if not batch:
            return self._empty()
        enc, extra = self._encode(batch)
        with torch.inference_mode():
            out = self.model(**enc)
        if self.task == "text-classification":
            return self._classify(out.logits)
        if self.task == "token-classification":
            return self._tokens(out.logits, enc, extra)
        hidden = out.last_hidden_state
        mask = enc["attention_mask"]
        if self.task == "feature-extraction":
            return {
                "last_hidden_state": hidden.float().cpu().numpy(),
                "attention_mask": mask.to(torch.int64).cpu().numpy(),
            }
        return {"embedding": self._pool(hidden, mask).cpu().numpy()}

    def _label(self, index: int) -> bytes:
        id2label = getattr(self.config, "id2label", None) or {}
        return str(id2label.get(index, f"LABEL_{index}")).encode()

    def _classify(self, logits: torch.Tensor) -> dict[str, np.ndarray]:
        logits = logits.float()
        if getattr(self.config, "problem_type", None) == "multi_label_classification":
            probs = torch.sigmoid(logits)
        else:
            probs = torch.softmax(logits, dim=-1)
        score, index = probs.max(dim=-1)
        labels = np.empty(len(index), dtype=object)
        labels[:] = [self._label(int(i)) for i in index.tolist()]
        return {
            "label": labels,
            "score": score.cpu().numpy(),
            "scores": probs.cpu().numpy(),
        }

    def _tokens(
        self, logits: torch.Tensor, enc: Mapping[str, torch.Tensor], extra: Mapping[str, Any]
    ) -> dict[str, np.ndarray]:
        probs = torch.softmax(logits.float(), dim=-1).cpu()
        score, index = probs.max(dim=-1)
        keep = (enc["attention_mask"].cpu() == 1) & (extra["special_tokens_mask"] == 0)
        ids = enc["input_ids"].cpu()
        rows = [torch.nonzero(keep[i]).flatten().tolist() for i in range(len(ids))]
        width = max((len(r) for r in rows), default=0)
        n = len(rows)
        tokens = np.full((n, width), b"", dtype=object)
        labels = np.full((n, width), b"", dtype=object)
        scores = np.zeros((n, width), dtype=np.float32)
        offsets = np.full((n, width, 2), -1, dtype=np.int64)
        for i, positions in enumerate(rows):
            names = self.tokenizer.convert_ids_to_tokens(ids[i, positions].tolist())
            for j, (pos, tok) in enumerate(zip(positions, names, strict=True)):
                tokens[i, j] = str(tok).encode()
                labels[i, j] = self._label(int(index[i, pos]))
                scores[i, j] = float(score[i, pos])
                offsets[i, j] = extra["offset_mapping"][i, pos].tolist()
        return {"tokens": tokens, "labels": labels, "scores": scores, "offsets": offsets}

    def _pool(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        hidden = hidden.float()
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        elif self.pooling == "max":
            masked = hidden.masked_fill(mask.unsqueeze(-1) == 0, -1e9)
            pooled = masked.max(dim=1).values
        else:
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
        if self.normalize:
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return pooled

    def _empty(self) -> dict[str, np.ndarray]:
        out = {}
        for spec in self.outputs:
            shape = [0] + [max(d, 0) for d in spec.shape[1:]]
            dtype = (
                object
                if spec.datatype == "BYTES"
                else (np.int64 if spec.datatype == "INT64" else np.float32)
            )
            out[spec.name] = np.zeros(shape, dtype=dtype)
        return out
