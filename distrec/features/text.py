"""A frozen text encoder: any Hugging Face model, mean-pooled, computed once and cached.

    cfg = TextEncoderConfig(model="/models/all-MiniLM-L6-v2")      # a local path or a hub name
    vectors = cached_text_embeddings(texts, cfg)                      # float32 [N, hidden]

The model is loaded with ``local_files_only`` unless ``allow_download`` is set, so nothing is
fetched at run time by accident. Token vectors of the last layer are averaged over the
attention mask (the sentence-transformers pooling of all-MiniLM-L6-v2) and, by default,
L2-normalised. The encoder is never trained: the vectors are features of the items.

The vectors are cached as safetensors (never pickle) under ``cache_dir``, keyed by the model's
identity, the settings and the texts, so a dataset's titles are encoded once, not per run or
per worker.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from distrec.config import Positive
from distrec.console import progress_bar
from distrec.errors import UserError
from distrec.storage import filesystem, join

__all__ = ["TextEncoderConfig", "encode_texts", "cached_text_embeddings", "cache_key"]

log = logging.getLogger(__name__)


@dataclass
class TextEncoderConfig:
    model: str | None = None  # a local directory or a hub name; None = no text features
    allow_download: bool = False  # fetch `model` from the hub if it is not on this machine
    max_length: Positive[int] = 64  # tokens per text
    batch_size: Positive[int] = 64
    normalize: bool = True  # L2-normalise the pooled vectors
    cache_dir: str | None = "runs/cache/text"  # any URI; None = encode every time


def _load(cfg: TextEncoderConfig):
    from transformers import AutoModel, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(cfg.model, local_files_only=not cfg.allow_download)
        model = AutoModel.from_pretrained(cfg.model, local_files_only=not cfg.allow_download)
    except OSError as e:
        hint = "" if cfg.allow_download else " It is not on this machine and text.allow_download is false."
        raise UserError(
            f"text.model={cfg.model!r}: the text encoder could not be loaded.{hint} Give the path of a "
            f"downloaded Hugging Face model directory, or set text.allow_download=true. ({str(e).splitlines()[0]})"
        ) from None
    return tokenizer, model.eval()


def encode_texts(texts: Sequence[str], cfg: TextEncoderConfig) -> np.ndarray:
    """Mean-pooled last-layer vectors float32 [N, hidden] of ``texts`` (no cache)."""
    if cfg.model is None:
        raise ValueError("encode_texts needs text.model")
    tokenizer, model = _load(cfg)
    out = []
    with torch.no_grad(), progress_bar(total=len(texts), desc="text encoder", unit="texts") as bar:
        for start in range(0, len(texts), cfg.batch_size):
            batch = tokenizer(
                list(texts[start : start + cfg.batch_size]),
                padding=True,
                truncation=True,
                max_length=cfg.max_length,
                return_tensors="pt",
            )
            hidden = model(**batch).last_hidden_state  # [B, T, H]
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # [B, T, 1]
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # [B, H]
            if cfg.normalize:
                pooled = torch.nn.functional.normalize(pooled, dim=1)
            out.append(pooled.float().numpy())
            bar.update(len(batch["input_ids"]))
    hidden_size = int(model.config.hidden_size)
    return np.concatenate(out) if out else np.zeros((0, hidden_size), np.float32)


def _model_identity(name: str) -> str:
    """The model's name, and for a local directory its files' names, sizes and mtimes."""
    if not os.path.isdir(name):
        return name
    files = sorted(
        (
            os.path.relpath(os.path.join(d, f), name),
            os.path.getsize(os.path.join(d, f)),
            int(os.path.getmtime(os.path.join(d, f))),
        )
        for d, _, fs in os.walk(name)
        for f in fs
    )
    return json.dumps([os.path.abspath(name), files])


def cache_key(texts: Sequence[str], cfg: TextEncoderConfig) -> str:
    """What the vectors depend on: the model, the settings that change them, the texts."""
    h = hashlib.sha256()
    h.update(json.dumps([_model_identity(str(cfg.model)), cfg.max_length, cfg.normalize]).encode())
    for text in texts:
        h.update(text.encode())
        h.update(b"\0")
    return h.hexdigest()[:24]


def cached_text_embeddings(texts: Sequence[str], cfg: TextEncoderConfig) -> np.ndarray:
    """``encode_texts``, read from ``cfg.cache_dir`` when this model already encoded these texts."""
    from safetensors.numpy import load, save

    if cfg.cache_dir is None:
        return encode_texts(texts, cfg)
    uri = join(cfg.cache_dir, f"text-{cache_key(texts, cfg)}.safetensors")
    fs, path = filesystem(uri)
    if fs.exists(path):
        vectors = load(fs.cat_file(path))["vectors"]
        if vectors.shape[0] == len(texts):
            log.info("text embeddings from the cache %s", uri)
            return vectors
    vectors = encode_texts(texts, cfg)
    fs.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with fs.open(tmp, "wb") as f:  # written aside, then moved: a reader never sees half a file
        f.write(save({"vectors": vectors}, metadata={"model": str(cfg.model)}))
    fs.mv(tmp, path)
    return vectors
