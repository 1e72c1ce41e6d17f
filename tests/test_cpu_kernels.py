"""The CPU step's cheaper pieces compute the same functions: dropout with a 16-bit mask (engine/dropout.py) and
eager attention with the mask in the autocast dtype (engine/precision.py)."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tuneforge.engine.dropout import cpu_dropout, fast_dropout
from tuneforge.engine.precision import BERT_EAGER_FAMILIES, CPU_BF16_ATTENTION, cpu_bf16_attention


@pytest.mark.parametrize("p", [0.1, 0.5])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fast_dropout_keeps_each_element_with_probability_1_minus_p_and_scales_it(p, dtype):
    n = 400_000
    x = torch.rand(n, dtype=torch.float32).add_(0.5).to(dtype).requires_grad_()
    y = fast_dropout(x, p)
    dropped = y == 0
    sd = (p * (1 - p) / n) ** 0.5
    assert abs(float(dropped.float().mean()) - p) < 5 * sd
    kept = ~dropped
    torch.testing.assert_close(y[kept], (x[kept] / (1 - p)).to(dtype))
    y.sum().backward()  # the gradient is the same mask: 0 where dropped, 1 / (1 - p) where kept
    assert bool((x.grad[dropped] == 0).all())
    torch.testing.assert_close(x.grad[kept].float(), torch.full((int(kept.sum()),), 1 / (1 - p)),
                               rtol=1e-2 if dtype == torch.bfloat16 else 1e-6, atol=0)


def test_fast_dropout_masks_are_independent_across_elements_and_seeded():
    torch.manual_seed(3)
    a = fast_dropout(torch.ones(64, 1000), 0.5) == 0
    torch.manual_seed(3)
    b = fast_dropout(torch.ones(64, 1000), 0.5) == 0
    c = fast_dropout(torch.ones(64, 1000), 0.5) == 0
    assert torch.equal(a, b) and not torch.equal(a, c)
    # the four elements cut from one 64-bit draw, and neighbouring rows, are uncorrelated
    flat = a.flatten().float()
    for lag in (1, 2, 3, 4, 1000):
        assert abs(float(np.corrcoef(flat[:-lag], flat[lag:])[0, 1])) < 0.02


def test_cpu_dropout_mode_takes_training_dropout_only():
    x = torch.ones(10_000)
    with cpu_dropout("cpu"):
        assert torch.equal(F.dropout(x, 0.3, training=False), x)
        assert torch.equal(F.dropout(x, 0.0, training=True), x)
        z = x.clone()
        assert F.dropout(z, 0.3, True, True) is z  # in place: PyTorch's own, which returns its input
        torch.manual_seed(0)
        mine = F.dropout(x, 0.3, training=True)
        torch.manual_seed(0)
        module = torch.nn.Dropout(0.3).train()(x)
    torch.manual_seed(0)
    native = F.dropout(x, 0.3, training=True)
    torch.manual_seed(0)
    assert torch.equal(mine, fast_dropout(x, 0.3)) and torch.equal(module, mine)
    assert not torch.equal(native, mine)
    assert cpu_dropout("cuda").__class__.__name__ == "nullcontext"


def _dropout_model_task_batch(tiny_bert):
    """tiny BERT with dropout 0.3 (hidden states and attention) in training mode, the classification task, a
    two-row batch with padding."""
    from transformers import AutoModelForSequenceClassification

    from tuneforge.tasks import get_task

    model = AutoModelForSequenceClassification.from_pretrained(
        tiny_bert, hidden_dropout_prob=0.3, attention_probs_dropout_prob=0.3, attn_implementation="eager").train()
    task = get_task("classification")
    batch = {"input_ids": torch.tensor([[2, 5, 6, 7, 8, 3], [2, 9, 10, 3, 0, 0]]),
             "attention_mask": torch.tensor([[1] * 6, [1, 1, 1, 1, 0, 0]]), "labels": torch.tensor([0, 1])}
    return model, task, batch


def test_the_training_step_uses_it_on_the_cpu(tiny_bert):
    """forward_backward's loss under a seed equals the one computed with the 16-bit mask by hand, not PyTorch's
    own dropout: the step really takes the cheaper mask (the hidden states' and attention's dropouts)."""
    from conftest import cpu_accelerator

    from tuneforge.engine.step import forward_backward

    model, task, batch = _dropout_model_task_batch(tiny_bert)

    def loss(ctx):
        torch.manual_seed(1)
        with ctx:
            return float(task.loss(model, batch)) / 2

    torch.manual_seed(1)
    stepped = float(forward_backward(cpu_accelerator(), model, task, [batch]))
    assert stepped == pytest.approx(loss(cpu_dropout("cpu")), rel=1e-6)
    assert stepped != pytest.approx(loss(cpu_dropout("cuda")), rel=1e-4)  # PyTorch's dropout: another mask


def test_bert_eager_families_still_share_berts_eager_attention():
    """BERT_EAGER_FAMILIES get BERT's eager function: true for the installed transformers, line for line."""
    import importlib

    from transformers.models.bert import modeling_bert

    reference = inspect.getsource(modeling_bert.eager_attention_forward)
    for family in sorted(BERT_EAGER_FAMILIES):
        module = importlib.import_module(f"transformers.models.{family}")
        assert inspect.getsource(module.eager_attention_forward) == reference, family


def _logits(model, ids, mask, bf16):
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        return model(input_ids=ids, attention_mask=mask).logits.float()


@pytest.mark.parametrize("bf16", [False, True])
def test_bf16_mask_attention_masks_padding_and_matches_eager(tiny_bert, bf16):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert, attn_implementation="sdpa").eval()
    padded = torch.tensor([[2, 5, 6, 7, 3, 0, 0], [2, 8, 9, 10, 11, 12, 3]])
    mask = (padded != 0).long()
    model.set_attn_implementation("eager")
    eager = _logits(model, padded, mask, bf16)
    model.set_attn_implementation("sdpa")
    assert "bf16 mask" in cpu_bf16_attention(model)
    assert model.config._attn_implementation == CPU_BF16_ATTENTION
    ours = _logits(model, padded, mask, bf16)
    alone = _logits(model, padded[:1, :5], mask[:1, :5], bf16)  # the padded row without its padding
    tol = {"atol": 2e-2, "rtol": 2e-2} if bf16 else {"atol": 1e-6, "rtol": 1e-5}
    torch.testing.assert_close(ours, eager, **tol)
    torch.testing.assert_close(ours[:1], alone, **tol)
    assert cpu_bf16_attention(model) is None  # already switched: nothing to do


def test_the_attention_mask_is_made_in_the_autocast_dtype(tiny_bert):
    from transformers import AttentionInterface, AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert, attn_implementation="sdpa").eval()
    cpu_bf16_attention(model)
    seen = []

    def spy(module, query, key, value, attention_mask, **kwargs):
        seen.append((query.dtype, None if attention_mask is None else attention_mask.dtype))
        from transformers.models.bert.modeling_bert import eager_attention_forward
        return eager_attention_forward(module, query, key, value, attention_mask, **kwargs)

    AttentionInterface.register(CPU_BF16_ATTENTION, spy)
    try:
        ids = torch.tensor([[2, 5, 6, 3, 0]])
        _logits(model, ids, (ids != 0).long(), True)
        _logits(model, ids, (ids != 0).long(), False)
    finally:
        from transformers.models.bert.modeling_bert import eager_attention_forward
        AttentionInterface.register(CPU_BF16_ATTENTION, eager_attention_forward)
    layers = model.config.num_hidden_layers
    assert seen == [(torch.bfloat16, torch.bfloat16)] * layers + [(torch.float32, torch.float32)] * layers


def test_other_families_get_plain_eager(tiny_gpt2_lm):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_gpt2_lm, attn_implementation="sdpa")
    assert "eager instead of SDPA" in cpu_bf16_attention(model)
    assert model.config._attn_implementation == "eager"


def test_an_encoder_decoder_with_berts_attention_generates_as_with_eager(tiny_bart):
    """BART takes the bf16 mask too: causal decoder masks, cross-attention and cached decoding."""
    from transformers import AutoModelForSeq2SeqLM

    model = AutoModelForSeq2SeqLM.from_pretrained(tiny_bart, attn_implementation="sdpa").eval()
    ids = torch.tensor([[0, 5, 6, 7, 8, 2, 1, 1], [0, 9, 10, 11, 12, 13, 14, 2]])
    mask = (ids != 1).long()
    labels = torch.tensor([[0, 7, 8, 9, 2], [0, 10, 11, 2, 1]])

    def run():
        with torch.no_grad():
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            return float(loss), model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False)

    model.set_attn_implementation("eager")
    loss, generated = run()
    assert "bf16 mask" in cpu_bf16_attention(model.set_attn_implementation("sdpa") or model)
    ours_loss, ours = run()
    assert ours_loss == pytest.approx(loss, rel=1e-5)
    assert torch.equal(ours, generated)


def test_gradient_checkpointing_keeps_pytorchs_dropout_so_the_recompute_draws_the_same_masks(tiny_bert):
    """The backward's recomputation runs outside the step's mode: with the 16-bit mask in the forward only, the
    recomputed masks would differ and the gradients with them. Under checkpointing the step keeps PyTorch's
    dropout, and its gradients equal those of the same step without checkpointing."""
    from conftest import cpu_accelerator

    from tuneforge.engine.step import forward_backward

    model, task, batch = _dropout_model_task_batch(tiny_bert)

    def grads(checkpointing):
        if checkpointing:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.activation_checkpointing_disable()
        model.zero_grad(set_to_none=True)
        torch.manual_seed(7)
        forward_backward(cpu_accelerator(), model, task, [batch])
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain, checkpointed = grads(False), grads(True)
    for name, grad in plain.items():
        if "embeddings" not in name:  # the first layer onwards: every recomputed dropout
            assert not torch.equal(grad, checkpointed[name]), name  # plain: the 16-bit mask; checkpointed: torch's
    torch.manual_seed(7)
    model.activation_checkpointing_disable()
    model.zero_grad(set_to_none=True)
    task.loss(model, batch).div(2).backward()  # PyTorch's dropout, no checkpointing: the same gradients
    for name, p in model.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(checkpointed[name], p.grad, atol=1e-6, rtol=1e-5)
