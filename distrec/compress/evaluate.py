"""The compressor job's evaluation: each compressed table against its source and against the
baselines at the same bytes per row, and the recommender's rating RMSE with decompressed rows.

For every ratio and method (``dds``: the trained compressor, read back from its stored codes;
``pca``; ``scalar``):

- per table: bytes per row, compression ratio (``4·d`` bytes of float32 over the code's bytes;
  ``_ratio_with_side`` also counts the decoder weights / basis / ranges once), reconstruction
  MSE (per value) and mean cosine similarity;
- downstream: test RMSE of the biased MF, ``μ + b_u + b_i + p_u·q_i`` clipped to the rating
  scale, when the user vectors, the item vectors, or both are replaced by decompressed ones
  (biases are kept: they are one float per row), and the change from the original RMSE;
- new entities: the held-out users (never seen by the compressor) are folded into the MF with
  the items frozen (``distrec.models.foldin``), their folded vectors are compressed and
  decompressed with the same trained codecs, and their RMSE change is reported beside the
  training users' change (the users the compressor trained on, their exported vectors).

The evaluation runs on the driver and reads whole tables, as ``distrec.recommend`` does: one row
per entity, a small fraction of the interaction data that training streams.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from distrec.compress.baselines import PCACodec, ScalarCodec
from distrec.compress.codes import DECODER, compress, decompress, load_decoder, load_encoder, read_codes
from distrec.compress.config import CompressConfig
from distrec.compress.data import holdout_mask
from distrec.compress.worker import compressed_uri, table_uri
from distrec.config import ConfigError, load_config
from distrec.data.dataset import InteractionDataset, Interactions
from distrec.errors import DataError
from distrec.jobs import get_job
from distrec.models.foldin import fold_in_users
from distrec.models.mf import MFConfig
from distrec.storage import StoredDirectory, join
from distrec.storage.embeddings import EmbeddingTable, read_embeddings

__all__ = ["Codec", "reconstruction", "rating_rmse", "evaluate"]

METHODS = ("dds", "pca", "scalar")


@dataclass
class Codec:
    name: str
    bytes_per_row: int
    side_bytes: int
    encode: Callable[[np.ndarray], np.ndarray]
    decode: Callable[[np.ndarray], np.ndarray]

    def roundtrip(self, x: np.ndarray) -> np.ndarray:
        return self.decode(self.encode(x))


@dataclass
class Side:
    """One side of the MF: vectors [N, d] and biases [N], by dense index."""

    vector: np.ndarray
    bias: np.ndarray


def reconstruction(x: np.ndarray, x_hat: np.ndarray) -> dict[str, float]:
    """Mean squared error per value and mean cosine similarity of rows [N, d]."""
    x, x_hat = x.astype(np.float64), x_hat.astype(np.float64)
    norms = np.linalg.norm(x, axis=1) * np.linalg.norm(x_hat, axis=1)
    cosine = (x * x_hat).sum(1) / np.maximum(norms, 1e-12)
    return {"mse": float(np.mean((x - x_hat) ** 2)), "cosine": float(cosine.mean())}


def rating_rmse(ratings: Interactions, users: Side, items: Side, *, global_mean: float, clip: tuple[float, float]) -> float:
    """RMSE of the biased MF's clipped predictions on ``ratings``."""
    u, i = ratings.user, ratings.item
    pred = global_mean + users.bias[u] + items.bias[i] + np.einsum("nd,nd->n", users.vector[u], items.vector[i])
    err = np.clip(pred, *clip) - ratings.rating
    return float(np.sqrt(np.mean(err.astype(np.float64) ** 2))) if len(err) else float("nan")


def _codecs(cfg: CompressConfig, table: str, ratio: int, train: np.ndarray) -> list[Codec]:
    uri = compressed_uri(cfg, table, ratio)
    encoder, decoder = load_encoder(uri), load_decoder(uri)
    side = StoredDirectory(uri, verify="none").entry(DECODER).bytes
    width = encoder.code_size
    codecs = [
        Codec(
            "dds",
            width * np.dtype(encoder.cfg.code_dtype).itemsize,
            side,
            lambda x: compress(x, encoder),
            lambda c: decompress(c, decoder),
        ),
    ]
    pca = PCACodec(train, code_size=width, dtype=cfg.model.code_dtype)
    codecs.append(Codec("pca", pca.bytes_per_row, pca.side_bytes, pca.encode, pca.decode))
    scalar = ScalarCodec.for_ratio(train, ratio)
    if scalar is not None:
        codecs.append(Codec("scalar", scalar.bytes_per_row, scalar.side_bytes, scalar.encode, scalar.decode))
    return codecs


def _stored_reconstruction(cfg: CompressConfig, table: str, ratio: int, source: EmbeddingTable) -> np.ndarray:
    """The compressor's reconstruction of a table from the codes the job wrote."""
    uri = compressed_uri(cfg, table, ratio)
    codes = read_codes(uri)
    if not np.array_equal(codes.index, source.index):
        raise DataError(f"{uri}: its rows are not those of {table_uri(cfg, table)}")
    return decompress(codes.codes, load_decoder(uri))


def _side(table: EmbeddingTable, vector: np.ndarray | None = None) -> Side:
    if "bias" not in table.columns:
        raise DataError("the downstream evaluation needs a biased MF's tables (a `bias` column per row)")
    return Side(table.vector if vector is None else vector, table.columns["bias"])


def evaluate(cfg: CompressConfig) -> dict[str, Any]:
    """Every metric of the module docstring, flat (``dds@4x_user_cosine``, ``pca@8x_rmse_delta_both``, ...)."""
    sources = {t: read_embeddings(table_uri(cfg, t), verify="none") for t in cfg.source.tables}
    for t, table in sources.items():
        if not np.array_equal(table.index, np.arange(len(table.index))):
            raise DataError(f"{table_uri(cfg, t)}: rows are not the dense indices 0..{len(table.index) - 1}")
    held = {t: holdout_mask(table.index, cfg.holdout, t) for t, table in sources.items()}
    out: dict[str, Any] = {}
    recon: dict[tuple[str, int, str], np.ndarray] = {}
    codecs: dict[tuple[str, int], dict[str, Codec]] = {}
    for t, table in sources.items():
        train = table.vector[~held[t]]
        for ratio in cfg.ratios:
            codecs[t, ratio] = {c.name: c for c in _codecs(cfg, t, ratio, train)}
            for name, codec in codecs[t, ratio].items():
                x_hat = _stored_reconstruction(cfg, t, ratio, table) if name == "dds" else codec.roundtrip(table.vector)
                recon[t, ratio, name] = x_hat
                key = f"{name}@{ratio}x_{t}"
                raw_bytes = 4 * table.vector.shape[1]
                out[f"{key}_bytes_per_row"] = codec.bytes_per_row
                out[f"{key}_ratio"] = raw_bytes / codec.bytes_per_row
                out[f"{key}_ratio_with_side"] = (
                    raw_bytes * len(table.index) / (codec.bytes_per_row * len(table.index) + codec.side_bytes)
                )
                out.update({f"{key}_{m}": v for m, v in reconstruction(table.vector, x_hat).items()})
    if {"user", "item"} <= set(sources):
        out.update(_downstream(cfg, sources, held["user"], recon, codecs))
    return out


def _downstream(cfg, sources, held: np.ndarray, recon, codecs) -> dict[str, Any]:
    users, items = sources["user"], sources["item"]
    meta = users.meta
    dataset = InteractionDataset(meta["dataset"], verify="none")
    rating = dataset.meta["rating"]
    clip = (float(rating["min"]), float(rating["max"]))
    test = dataset.read(split=meta["split"], parts=["test"])
    mean = float(meta["global_mean"])

    def rmse(ratings: Interactions, u: Side, i: Side) -> float:
        return rating_rmse(ratings, u, i, global_mean=mean, clip=clip)

    base_u, base_i = _side(users), _side(items)
    out: dict[str, Any] = {"test_rmse": rmse(test, base_u, base_i)}
    new_rows = held[test.user]
    test_old, test_new = _subset(test, ~new_rows), _subset(test, new_rows)
    new_users = users.index[held]
    folded = None
    if len(new_users):
        mf = _mf_config(cfg)
        train = dataset.read(split=meta["split"], parts=["train"])
        vec, bias = fold_in_users(
            train, new_users, item_vector=items.vector, item_bias=base_i.bias, global_mean=mean, l2=mf.l2, bias_l2=mf.bias_l2
        )
        folded = Side(users.vector.copy(), users.columns["bias"].copy())
        folded.vector[new_users], folded.bias[new_users] = vec, bias
        out.update(
            new_users=int(len(new_users)),
            new_users_test_ratings=int(len(test_new)),
            new_users_exported_test_rmse=rmse(test_new, base_u, base_i),  # their MF-trained rows, for reference
            new_users_test_rmse=rmse(test_new, folded, base_i),
            train_users_test_rmse=rmse(test_old, base_u, base_i),
        )
    for ratio in cfg.ratios:
        for name in METHODS:
            if (("user", ratio, name) not in recon) or (("item", ratio, name) not in recon):
                continue
            key = f"{name}@{ratio}x"
            u_hat, i_hat = _side(users, recon["user", ratio, name]), _side(items, recon["item", ratio, name])
            for what, (u, i) in {"users": (u_hat, base_i), "items": (base_u, i_hat), "both": (u_hat, i_hat)}.items():
                out[f"{key}_rmse_{what}"] = rmse(test, u, i)
                out[f"{key}_rmse_delta_{what}"] = out[f"{key}_rmse_{what}"] - out["test_rmse"]
            if folded is not None:
                out[f"{key}_train_users_rmse_delta"] = rmse(test_old, u_hat, base_i) - out["train_users_test_rmse"]
                out[f"{key}_train_users_cosine"] = reconstruction(users.vector[~held], u_hat.vector[~held])["cosine"]
                new_hat = codecs["user", ratio][name].roundtrip(folded.vector[new_users])
                replaced = Side(folded.vector.copy(), folded.bias)
                replaced.vector[new_users] = new_hat
                out[f"{key}_new_users_rmse_delta"] = rmse(test_new, replaced, base_i) - out["new_users_test_rmse"]
                out[f"{key}_new_users_cosine"] = reconstruction(folded.vector[new_users], new_hat)["cosine"]
    return out


def _subset(data: Interactions, keep: np.ndarray) -> Interactions:
    return Interactions(data.user[keep], data.item[keep], data.rating[keep])


def _mf_config(cfg: CompressConfig) -> MFConfig:
    """The MF's regularisation, from the training run's saved config (the fold-in minimises the
    same objective)."""
    uri = join(cfg.source.run, "config.yaml")
    try:
        model = load_config(get_job("train").config, uri).model
    except ConfigError as e:
        raise DataError(f"{e}; folding new users into the MF needs the training run's config") from None
    if not isinstance(model, MFConfig):
        raise DataError(f"{uri}: new users can be folded into a biased MF only, not {model.name!r}")
    return model
