"""The frozen text encoder on a tiny randomly initialised BERT written by the test (no network)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from distrec.errors import UserError
from distrec.features.text import TextEncoderConfig, cached_text_embeddings, encode_texts
from tests.helpers import tiny_text_encoder

TEXTS = ["Synthetic item 1", "drama film from 1994 and a comedy", "", "the horror"]


@pytest.fixture(scope="module")
def encoder(tmp_path_factory) -> str:
    return tiny_text_encoder(str(tmp_path_factory.mktemp("bert") / "tiny-bert"))


def test_mean_pooling_ignores_padding(encoder):
    from transformers import AutoModel, AutoTokenizer

    cfg = TextEncoderConfig(model=encoder, normalize=False, batch_size=4)
    vectors = encode_texts(TEXTS, cfg)  # padded to the longest text in one batch
    assert vectors.shape == (4, 16) and vectors.dtype == np.float32
    tokenizer, model = AutoTokenizer.from_pretrained(encoder), AutoModel.from_pretrained(encoder).eval()
    for text, got in zip(TEXTS, vectors):
        with torch.no_grad():
            alone = model(**tokenizer([text], return_tensors="pt")).last_hidden_state[0].mean(0)  # no padding at all
        np.testing.assert_allclose(got, alone.numpy(), rtol=1e-4, atol=1e-5)
    unit = encode_texts(TEXTS, TextEncoderConfig(model=encoder))
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, rtol=1e-5)


def test_cached_once_then_read_from_the_cache(encoder, tmp_path):
    from safetensors.numpy import save

    cfg = TextEncoderConfig(model=encoder, cache_dir=str(tmp_path / "cache"))
    first = cached_text_embeddings(TEXTS, cfg)
    (entry,) = (tmp_path / "cache").glob("text-*.safetensors")
    other = cached_text_embeddings(TEXTS[:2], cfg)  # other texts: another entry
    np.testing.assert_allclose(other, first[:2], rtol=1e-5, atol=1e-6)
    assert len(list((tmp_path / "cache").glob("text-*.safetensors"))) == 2
    planted = np.full_like(first, 7.0)  # what only the cache can answer
    entry.write_bytes(save({"vectors": planted}))
    np.testing.assert_array_equal(cached_text_embeddings(TEXTS, cfg), planted)
    changed = TextEncoderConfig(model=encoder, cache_dir=str(tmp_path / "cache"), max_length=3)  # other settings: encoded again
    assert not np.array_equal(cached_text_embeddings(TEXTS, changed), planted)


def test_nothing_downloaded_unless_allowed(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(UserError, match="text.allow_download is false"):
        encode_texts(["x"], TextEncoderConfig(model="no-such-org/no-such-model"))
