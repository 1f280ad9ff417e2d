"""Batched, context-sharing log-likelihood scoring equals a direct, unbatched computation."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from alignx.eval.benchmarks import choice_item, get_benchmark
from alignx.eval.loglik import EmptyContinuationError, EncodedRequest, LoglikelihoodScorer, encode_request
from alignx.eval.scoring import evaluate_choice
from alignx.eval.sources import read_documents


def direct_loglikelihood(model, tokenizer, context: str, continuation: str, max_length: int = 10_000) -> float:
    """The plain definition: one unpadded sequence, sum of the continuation tokens' log-probabilities."""
    req = encode_request(tokenizer, context, continuation)
    ids = list(req.context + req.continuation)[-(max_length + 1):]
    with torch.no_grad():
        logprobs = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), dim=-1)
    n = len(req.continuation)
    start = len(ids) - n
    return float(sum(logprobs[start - 1 + k, tok] for k, tok in enumerate(req.continuation)))


def test_encode_request_follows_lm_eval(tiny_tokenizer):
    tok = tiny_tokenizer
    req = encode_request(tok, "Mwanaume alifungua bomba la maji kwa hiyo", " choo kilijaa maji.")
    whole = tok.encode("Mwanaume alifungua bomba la maji kwa hiyo choo kilijaa maji.")
    ctx = tok.encode("Mwanaume alifungua bomba la maji kwa hiyo")
    assert ctx[0] == tok.bos_token_id  # the tokenizer's default special tokens
    assert list(req.context) == ctx and list(req.continuation) == whole[len(ctx):]
    # trailing spaces of the context move to the continuation
    assert encode_request(tok, "Answer: ", "B") == encode_request(tok, "Answer:", " B")
    # an empty context becomes the BOS token; the continuation is encoded without special tokens
    empty = encode_request(tok, "", " Der Hund schläft")
    assert empty.context == (tok.bos_token_id,)
    assert list(empty.continuation) == tok.encode(" Der Hund schläft", add_special_tokens=False)
    with pytest.raises(EmptyContinuationError):
        encode_request(tok, "abc", "")


def _requests(mirror, fixtures):
    """XCOPA (shared contexts, multi-token choices), XNLI (empty context), Belebele (one-token
    choices after a long context) and XWinograd (different contexts, shared continuation)."""
    reqs = []
    for name, lang, root, limit in [("xcopa", "sw", mirror, 12), ("xcopa", "zh", mirror, 12), ("xnli", "de", fixtures, None),
                                    ("belebele", "sw", fixtures, None), ("xwinograd", "zh", fixtures, None)]:
        spec = get_benchmark(name)
        for doc in read_documents(spec, lang, root, limit=limit):
            reqs += choice_item(spec, lang, doc).requests
    return reqs


@pytest.fixture(scope="module")
def requests_and_expected(mirror, eval_fixtures, tiny_model, tiny_tokenizer):
    reqs = _requests(mirror, eval_fixtures)
    return reqs, [direct_loglikelihood(tiny_model, tiny_tokenizer, c, x) for c, x in reqs]


@pytest.mark.parametrize("share_context,batch_size", [(True, 5), (True, 64), (False, 7), (False, 1)])
def test_batched_scores_equal_direct_computation(requests_and_expected, tiny_model, tiny_tokenizer, share_context, batch_size):
    reqs, expected = requests_and_expected
    scorer = LoglikelihoodScorer(tiny_model, tiny_tokenizer, batch_size=batch_size, share_context=share_context)
    got = scorer.score(reqs)
    assert len(got) == len(reqs)
    np.testing.assert_allclose([g for g, _ in got], expected, atol=1e-4, rtol=0)


def test_is_greedy_flag(tiny_model, tiny_tokenizer):
    ids = tiny_tokenizer.encode("Der Hund")
    with torch.no_grad():
        first = int(tiny_model(torch.tensor([ids])).logits[0, -1].argmax())
        second = int(tiny_model(torch.tensor([ids + [first]])).logits[0, -1].argmax())
    other = (first + 7) % len(tiny_tokenizer)
    reqs = [EncodedRequest(tuple(ids), (first, second)), EncodedRequest(tuple(ids), (first, other)),
            EncodedRequest(tuple(ids), (other,)), EncodedRequest(tuple(ids), (first,))]
    for share in (True, False):
        scorer = LoglikelihoodScorer(tiny_model, tiny_tokenizer, batch_size=4, share_context=share)
        assert [g for _, g in scorer.score_encoded(reqs)] == [True, False, False, True]


def test_acc_and_acc_norm_equal_unbatched_item_results(mirror, tiny_model, tiny_tokenizer):
    spec = get_benchmark("xcopa")
    docs = read_documents(spec, "sw", mirror, limit=30)
    metrics, items = evaluate_choice(spec, "sw", docs, LoglikelihoodScorer(tiny_model, tiny_tokenizer, batch_size=8))
    for doc, row in zip(docs, items):
        item = choice_item(spec, "sw", doc)
        lls = np.array([direct_loglikelihood(tiny_model, tiny_tokenizer, c, x) for c, x in item.requests])
        lengths = np.array([len(c) for c in item.choice_strings], dtype=float)
        assert row["acc"] == float(np.argmax(lls) == item.gold)
        assert row["acc_norm"] == float(np.argmax(lls / lengths) == item.gold)
        np.testing.assert_allclose(row["loglikelihoods"], lls, atol=1e-4, rtol=0)
    assert metrics["acc"] == pytest.approx(np.mean([r["acc"] for r in items]))
    assert 0.0 <= metrics["acc_norm"] <= 1.0


def test_too_long_requests_are_left_truncated(tiny_model, tiny_tokenizer):
    reqs = [("Der Hund schläft im Garten und die Katze sitzt auf dem Dach", " des Hauses."), ("Kurz", " ja")]
    scorer = LoglikelihoodScorer(tiny_model, tiny_tokenizer, batch_size=4, max_length=8)
    got = [g for g, _ in scorer.score(reqs)]
    expected = [direct_loglikelihood(tiny_model, tiny_tokenizer, c, x, max_length=8) for c, x in reqs]
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


class _IgnoresCustomMasks(torch.nn.Module):
    """A model that drops 4D attention masks (as some architectures would): packing must not be used."""

    def __init__(self, lm):
        super().__init__()
        self.lm, self.config = lm, lm.config

    def forward(self, input_ids, attention_mask=None, **kwargs):
        if attention_mask is not None and attention_mask.dim() == 4:
            attention_mask = None
        return self.lm(input_ids=input_ids, attention_mask=attention_mask, **kwargs)


def test_packing_self_check_falls_back_for_models_ignoring_4d_masks(requests_and_expected, tiny_model, tiny_tokenizer, caplog):
    reqs, expected = requests_and_expected
    scorer = LoglikelihoodScorer(_IgnoresCustomMasks(tiny_model), tiny_tokenizer, batch_size=8, share_context=True)
    with caplog.at_level("WARNING"):
        got = scorer.score(reqs)
    assert "does not honour custom 4D attention masks" in caplog.text and not scorer.share_context
    np.testing.assert_allclose([g for g, _ in got], expected, atol=1e-4, rtol=0)
