"""The text path end to end: tokenizer and text encoder in Triton, then a neural query through OpenSearch."""

from __future__ import annotations

import numpy as np
import open_clip
import pytest
import torch

from tests.captions import CAPTIONS
from tests.triton_calls import embed_texts, tokenize

pytestmark = pytest.mark.integration

def tokenizer_corpus() -> list[str]:
    """A few hundred strings that stress the BPE: unicode, punctuation, empty and over-long text."""
    rng = np.random.default_rng(7)
    base = [
        "", " ", "a", "A Photo Of A DOG", "hello, world!", "what's up?? (nothing...)", "naïve café crème brûlée",
        "東京タワーの夜景", "Ωμέγα λέξη", "emoji 😀🚗🐕 test", "tab\tand\nnewline", "&lt;html&gt; &amp; entities",
        "don't can't won't", "e-mail: someone@example.com", "1234567890", "3.14159 ≈ π", "🚀" * 40,
        " ".join(["word"] * 200), "supercalifragilisticexpialidocious" * 10, "MiXeD CaSe WoRdS", "   spaces   ",
        "ﬁ ligature and ﬀ", "Ｆｕｌｌｗｉｄｔｈ", "ß and ẞ", "zero\u200bwidth", "RTL עברית שלום", "\u0000 nul",
    ]
    alphabet = list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123456789 .,;:!?'\"-()éüñ中文🙂")
    randoms = ["".join(rng.choice(alphabet, size=int(rng.integers(0, 120)))) for _ in range(250)]
    return base + CAPTIONS + randoms


def test_tokenizer_ids_equal_open_clip(triton, clip_facts, settings):
    corpus = tokenizer_corpus()
    reference = open_clip.get_tokenizer(clip_facts.open_clip_ref(settings.clip_dir))(corpus).numpy()
    got = tokenize(triton, corpus)
    mismatched = [corpus[i] for i in np.flatnonzero((got != reference).any(axis=1))]
    assert got.shape == (len(corpus), clip_facts.context_length)
    assert not mismatched, f"{len(mismatched)} strings tokenized differently, e.g. {mismatched[:3]!r}"


def test_text_encoder_matches_pytorch(triton, clip_facts, settings):
    from export.mobileclip import load_clip

    model, source = load_clip(clip_facts.variant, settings.models.clip_weights)
    assert source == clip_facts.weights  # the same weights the ONNX was exported from
    texts = [*CAPTIONS, "", "emoji 😀", "x" * 500]
    with torch.no_grad():
        tokens = open_clip.get_tokenizer(clip_facts.open_clip_ref(settings.clip_dir))(texts)
        expected = model.encode_text(tokens, normalize=True).numpy()
    got = embed_texts(triton, texts)
    diff = float(np.abs(got - expected).max())
    print(f"\ntext encoder via Triton vs PyTorch ({clip_facts.variant}): max abs diff {diff:.2e}")
    assert diff <= 1e-4
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-3)
