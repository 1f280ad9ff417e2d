"""Alignment metrics: retrieval and cosine gap per layer, pooling over spans, both encodings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alignx.eval.alignment import (
    encode_alone,
    encode_in_prompt,
    evaluate_alignment,
    parallel_file,
    pooled_states,
    read_parallel,
    retrieval_scores,
)


def test_identical_representations_retrieve_perfectly():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 200, 16)).astype(np.float32)
    scores = retrieval_scores(x, x.copy())
    assert scores.x2en_top1.shape == (3, 200)
    assert scores.x2en_top1.mean() == 1.0 and scores.en2x_top1.mean() == 1.0
    assert (scores.cos_gap > 0.5).all()


def test_random_representations_are_near_chance():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 300, 32)).astype(np.float32)
    e = rng.normal(size=(2, 300, 32)).astype(np.float32)
    scores = retrieval_scores(x, e)
    assert scores.x2en_top1.mean() < 0.03 and scores.en2x_top1.mean() < 0.03  # chance is 1/300
    assert abs(float(scores.cos_gap.mean())) < 0.02
    by_layer = scores.by_layer()
    assert set(by_layer) == {"x2en_top1", "en2x_top1", "cos_gap"} and len(by_layer["cos_gap"]) == 2


def test_cos_gap_is_pair_minus_mean_of_other_pairs():
    x = np.array([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]], dtype=np.float32)
    e = np.array([[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]], dtype=np.float32)
    s = 1 / np.sqrt(2)
    sim = np.array([[1, 1, 0], [0, 0, 1], [s, s, s]])
    expected = [sim[i, i] - (sim[i].sum() - sim[i, i]) / 2 for i in range(3)]
    np.testing.assert_allclose(retrieval_scores(x, e).cos_gap[0], expected, atol=1e-6)


def test_pooling_in_batches_equals_one_sentence_at_a_time(mirror, tiny_model, tiny_tokenizer):
    texts = read_parallel("flores", ["en", "de"], mirror, limit=6)["de"]
    ids, spans = encode_alone(tiny_tokenizer, texts)
    assert all(s == 1 and e == len(i) for (s, e), i in zip(spans, ids))  # BOS left out of the mean
    batched = pooled_states(tiny_model, ids, spans, batch_size=4)
    assert batched.shape == (tiny_model.config.num_hidden_layers + 1, 6, tiny_model.config.hidden_size)
    for k, (seq, (s, e)) in enumerate(zip(ids, spans)):
        with torch.no_grad():
            hidden = tiny_model(torch.tensor([seq]), output_hidden_states=True).hidden_states
        alone = np.stack([h[0, s:e].mean(0).numpy() for h in hidden])
        np.testing.assert_allclose(batched[:, k], alone, atol=1e-5)


def test_prompt_encoding_pools_over_the_sentence_span(tiny_tokenizer):
    texts = ["Der Hund schläft.", "那人打开水龙头。"]
    ids, spans = encode_in_prompt(tiny_tokenizer, texts, "de", "en", 512)
    for seq, (s, e), text in zip(ids, spans, texts):
        assert tiny_tokenizer.decode(seq[s:e]) == text
        assert "Translate the following sentence from German to English." in tiny_tokenizer.decode(seq[:s])


def test_alignment_on_flores_both_encodings(mirror, tiny_model, tiny_tokenizer):
    texts = read_parallel("flores", ["en", "de", "zh"], mirror, limit=12)
    for encoding in ("alone", "prompt"):
        result = evaluate_alignment(tiny_model, tiny_tokenizer, texts, "en", encoding, batch_size=8)
        assert sorted(result) == ["de", "zh"]
        assert result["de"].x2en_top1.shape == (tiny_model.config.num_hidden_layers + 1, 12)
        assert set(np.unique(result["de"].x2en_top1)) <= {0, 1}


def test_parallel_sets_paths_and_errors(mirror, tmp_path):
    assert parallel_file("ntrex", "en") == "ntrex128/newstest2019-src.eng.txt"
    assert parallel_file("ntrex", "zh") == "ntrex128/newstest2019-ref.zho_Hans.txt"
    assert len(read_parallel("ntrex", ["en", "sw"], mirror, limit=5)["sw"]) == 5
    (tmp_path / "flores200").mkdir()
    (tmp_path / "flores200" / "eng_Latn.devtest-head500").write_text("a\nb\nc\n")
    (tmp_path / "flores200" / "deu_Latn.devtest-head500").write_text("a\nb\n")
    with pytest.raises(ValueError, match="not line-aligned .*deu_Latn.devtest-head500: 2"):
        read_parallel("flores", ["en", "de"], tmp_path)
    with pytest.raises(FileNotFoundError, match="zho_Hans.devtest-head500"):
        read_parallel("flores", ["en", "zh"], tmp_path)
