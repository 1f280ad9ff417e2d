"""The two auxiliary losses against plain re-computations of DESIGN.md's formulas, and where gradients go."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from alignx.data.collate import collate
from alignx.data.instructions import TrainExample, encode_examples, translation_instruction
from alignx.model.alignx_model import AlignXModel
from alignx.model.losses import LanguageMatchingHead, contrastive_loss, language_matching_loss, lm_loss, span_mean
from tests.train.tiny import tiny_causal_lm


@torch.no_grad()
def reference_contrastive(hx, hy, tau):
    """0.5 * mean_i -log softmax_j(cos(hx_i, hy_j)/tau)[i], with explicit loops."""
    n = hx.shape[0]
    total = 0.0
    for i in range(n):
        sims = [float(torch.dot(hx[i], hy[j]) / (hx[i].norm() * hy[j].norm())) / tau for j in range(n)]
        log_denominator = math.log(sum(math.exp(s) for s in sims))
        total += -(sims[i] - log_denominator)
    return 0.5 * total / n


@torch.no_grad()
def reference_language_matching(head, vectors, langs):
    """Full [2B, 2B, 2d] concatenation, the SwiGLU MLP as written, cross-entropy per ordered pair."""
    n = vectors.shape[0]
    pairs = torch.cat([vectors.unsqueeze(1).expand(n, n, -1), vectors.unsqueeze(0).expand(n, n, -1)], dim=-1)
    logits = head.down.weight @ (F.silu(pairs @ head.gate.weight.T) * (pairs @ head.up.weight.T)).unsqueeze(-1)
    logits = logits.squeeze(-1)
    total = 0.0
    for i in range(n):
        for j in range(n):
            target = int(langs[i] == langs[j])
            total += -float(torch.log_softmax(logits[i, j], dim=-1)[target])
    return total / (n * n)


@pytest.mark.parametrize("batch", [2, 5, 9])
def test_contrastive_loss_equals_reference(batch):
    gen = torch.Generator().manual_seed(batch)
    hx, hy = torch.randn(batch, 16, generator=gen, dtype=torch.float64), torch.randn(batch, 16, generator=gen, dtype=torch.float64)
    got = float(contrastive_loss(hx, hy, tau=0.1))
    assert got == pytest.approx(reference_contrastive(hx, hy, 0.1), abs=1e-5)


def test_contrastive_loss_is_zero_below_two_examples():
    hx = torch.randn(1, 8, requires_grad=True)
    loss = contrastive_loss(hx, torch.randn(1, 8), 0.1)
    assert float(loss.detach()) == 0.0
    loss.backward()  # still part of the graph: a batch with one usable example does not crash the step


@pytest.mark.parametrize("batch,width", [(3, 8), (6, 16)])
def test_language_matching_loss_equals_full_concat_reference(batch, width):
    torch.manual_seed(batch)
    head = LanguageMatchingHead(12, width).double()
    vectors = torch.randn(2 * batch, 12, dtype=torch.float64)
    langs = torch.tensor([0, 1, 2, 1, 0, 3, 2, 0, 1, 1, 0, 2][: 2 * batch])
    got = float(language_matching_loss(head, vectors, langs).detach())
    assert got == pytest.approx(reference_language_matching(head, vectors, langs), abs=1e-5)


def test_span_mean_shift_uses_the_predicting_states():
    hidden = torch.arange(2 * 6 * 1, dtype=torch.float32).reshape(2, 6, 1)
    spans = torch.tensor([[2, 4], [1, 6]])
    assert span_mean(hidden, spans).flatten().tolist() == [2.5, 6 + 3.0]
    assert span_mean(hidden, spans, shift=1).flatten().tolist() == [1.5, 6 + 2.0]


def test_lm_loss_is_mean_over_target_tokens_and_zero_without_targets():
    logits = torch.randn(2, 5, 7)
    labels = torch.tensor([[1, 2, 3, -100, -100], [4, 5, 6, 1, 2]])
    per_token = [F.cross_entropy(logits[b, t - 1], labels[b, t]) for b in range(2) for t in range(1, 5) if labels[b, t] >= 0]
    assert float(lm_loss(logits, labels)) == pytest.approx(float(torch.stack(per_token).mean()), abs=1e-6)
    assert float(lm_loss(logits, torch.full_like(labels, -100))) == 0.0


def _batch(tokenizer, padding_side="left"):
    rows = [("Ich bin müde.", "I am tired."), ("Это мой дом.", "This is my house."),
            ("Il pleut.", "It is raining."), ("我很忙。", "I am busy.")]
    langs = [("de", 2), ("ru", 3), ("fr", 1), ("zh", 4)]
    enc = encode_examples(tokenizer, [(translation_instruction(l, "en"), x, y) for (l, _), (x, y) in zip(langs, rows)], 256)
    return collate([TrainExample(e, i, 0) for e, (_, i) in zip(enc, langs)], tokenizer.pad_token_id, padding_side)


def test_model_losses_equal_reference_on_real_batch(sp_tokenizer):
    lm = tiny_causal_lm("llama", sp_tokenizer, layers=3)
    model = AlignXModel(lm, align_layer=2, tau=0.1, lambda_ctr=0.3, lambda_lam=0.4, lam_width=8).double()
    batch = _batch(sp_tokenizer)
    parts = model(batch)
    hs = lm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True).hidden_states
    rows = range(batch["input_ids"].shape[0])
    src, tgt = batch["src_span"].tolist(), batch["tgt_span"].tolist()
    hx = torch.stack([hs[2][b, src[b][0] : src[b][1]].mean(0) for b in rows])
    hy = torch.stack([hs[2][b, tgt[b][0] : tgt[b][1]].mean(0) for b in rows])
    ex = torch.stack([hs[-1][b, src[b][0] - 1 : src[b][1] - 1].mean(0) for b in rows])
    ey = torch.stack([hs[-1][b, tgt[b][0] - 1 : tgt[b][1] - 1].mean(0) for b in rows])
    langs = torch.cat([batch["src_lang"], batch["tgt_lang"]])
    assert parts.ctr == pytest.approx(reference_contrastive(hx, hy, 0.1), abs=1e-5)
    assert parts.lam == pytest.approx(reference_language_matching(model.lam_head, torch.cat([ex, ey]), langs), abs=1e-5)
    assert float(parts.loss.detach()) == pytest.approx(parts.lm + 0.3 * parts.ctr + 0.4 * parts.lam, abs=1e-5)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_contrastive_gradient_reaches_layers_up_to_align_layer_only(sp_tokenizer, arch):
    lm = tiny_causal_lm(arch, sp_tokenizer, layers=4)
    model = AlignXModel(lm, align_layer=2, lambda_ctr=1.0, lambda_lam=0.0)
    batch = _batch(sp_tokenizer)
    batch["labels"][:] = -100  # L_lm contributes nothing: the loss is lambda_ctr * L_ctr alone
    model(batch).loss.backward()
    layers = lm.get_decoder().layers

    def grad_norm(module):
        return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)

    assert grad_norm(lm.get_input_embeddings()) > 0
    assert grad_norm(layers[0]) > 0 and grad_norm(layers[1]) > 0
    assert grad_norm(layers[2]) == 0 and grad_norm(layers[3]) == 0
    assert grad_norm(model.lam_head) == 0


def test_examples_without_target_span_are_left_out_of_auxiliary_losses(sp_tokenizer):
    lm = tiny_causal_lm("llama", sp_tokenizer, layers=2)
    model = AlignXModel(lm, align_layer=1, lam_width=8)
    batch = _batch(sp_tokenizer)
    full = model(batch)
    batch["span_ok"][1:] = False  # one usable example: no contrastive loss, L_lam over 2 vectors only
    one = model(batch)
    assert full.usable == 4 and one.usable == 1
    assert one.ctr == 0.0 and full.ctr > 0
    assert one.lm == pytest.approx(full.lm)


def test_align_layer_out_of_range_is_refused(sp_tokenizer):
    lm = tiny_causal_lm("llama", sp_tokenizer, layers=2)
    for bad in (0, 3):
        with pytest.raises(ValueError, match=r"align_layer=\d is out of range.*1\.\.2"):
            AlignXModel(lm, align_layer=bad)


@pytest.mark.parametrize("arm, usable", [("alignx", True), ("alignx", False), ("control", True), ("control", False)])
def test_every_trainable_parameter_gets_a_gradient_each_step(sp_tokenizer, arm, usable):
    """Distributed data parallel waits for a gradient of every trainable parameter, on every rank."""
    lm = tiny_causal_lm("llama", sp_tokenizer, layers=2)
    lambdas = {"lambda_ctr": 0.3, "lambda_lam": 0.4} if arm == "alignx" else {"lambda_ctr": 0.0, "lambda_lam": 0.0}
    model = AlignXModel(lm, align_layer=1, lam_width=8, **lambdas)
    batch = _batch(sp_tokenizer)
    if not usable:
        batch["span_ok"][:] = False  # a micro-batch whose pairs were all cut by max_length
    model(batch).loss.backward()
    missing = [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []
    head_trainable = any(p.requires_grad for p in model.lam_head.parameters())
    assert head_trainable is (arm == "alignx")  # the control's head is a frozen probe


@pytest.mark.parametrize("model_type,extra", [("llama", {"tie_word_embeddings": True}),
                                              ("gemma3_text", {"head_dim": 16, "final_logit_softcapping": 5.0})])
def test_chunked_lm_loss_equals_the_whole_one_in_value_and_gradient(model_type, extra):
    """train.loss_chunk_tokens: logits of a few positions at a time (recomputed in backward) give the loss
    and the gradients of the whole [B, T, V] logits, masked positions and soft-capping included."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from alignx.model.alignx_model import CausalLMObjective

    config = AutoConfig.for_model(model_type, vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                  num_attention_heads=2, num_key_value_heads=1, **extra)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 300, (3, 11), generator=g)
    labels = ids.clone()
    labels[:, :4] = -100  # a masked prompt
    labels[0, -2:] = -100  # padding
    mask = torch.ones_like(ids)
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels, "lm_denominator": torch.tensor(7.0)}
    results = []
    for chunk in (None, 5):
        torch.manual_seed(0)
        lm = AutoModelForCausalLM.from_config(config)
        loss = CausalLMObjective(lm, loss_chunk_tokens=chunk)(batch).loss
        loss.backward()
        results.append((float(loss), {n: p.grad.clone() for n, p in lm.named_parameters() if p.grad is not None}))
    (whole, grads_whole), (chunked, grads_chunked) = results
    assert chunked == pytest.approx(whole, rel=1e-5)
    assert grads_whole.keys() == grads_chunked.keys()
    for name, grad in grads_whole.items():
        torch.testing.assert_close(grads_chunked[name], grad, atol=1e-6, rtol=1e-4, msg=name)


def test_chunked_lm_loss_keeps_the_stage1_losses(sp_tokenizer):
    """AlignX with a chunked next-token loss: L_lm, L_ctr and L_lam as without chunking."""
    lm = tiny_causal_lm("llama", sp_tokenizer, layers=2)
    ids = torch.randint(3, len(sp_tokenizer), (4, 12), generator=torch.Generator().manual_seed(1))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone(),
             "span_ok": torch.tensor([True, True, True, False]), "src_span": torch.tensor([[1, 4]] * 4),
             "tgt_span": torch.tensor([[6, 10]] * 4), "src_lang": torch.tensor([0, 1, 0, 1]),
             "tgt_lang": torch.tensor([1, 0, 1, 0])}
    parts = []
    for chunk in (None, 8):
        torch.manual_seed(0)
        parts.append(AlignXModel(lm, 1, lam_width=8, loss_chunk_tokens=chunk)(batch).as_dict())
    assert parts[1] == pytest.approx(parts[0], rel=1e-5)
