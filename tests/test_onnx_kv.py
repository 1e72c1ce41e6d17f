"""KV-cache decoding of the generative ONNX exports: the cache graphs decode exactly like PyTorch's greedy
`generate`, like the whole-prefix loop and like the old graph without a cache; padded batches; reloading."""

from __future__ import annotations

import importlib.util
from types import SimpleNamespace

import pytest
import torch

pytestmark = pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in ("onnx", "onnxruntime", "onnxscript")),
                                reason="needs the onnx extra (pip install 'tuneforge[onnx]')")

LENGTHS = [3, 7, 5]  # prompt lengths of the batch: every row but the longest is padded


def _prompts(vocab: int, pad: int, side: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    width = max(LENGTHS)
    ids, mask = torch.full((len(LENGTHS), width), pad), torch.zeros((len(LENGTHS), width), dtype=torch.long)
    for i, n in enumerate(LENGTHS):
        cols = slice(width - n, width) if side == "left" else slice(0, n)
        ids[i, cols] = torch.randint(4, vocab, (n,), generator=g)
        mask[i, cols] = 1
    return ids, mask


def _contextual(model):
    """The fixture model with its matrices redrawn at std 0.4: at the fixtures' std 0.02 a random GPT-2 repeats
    one token whatever the context, which a cache or position bug would not change."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.4)
    return model.eval()


def _generation(model, ids, mask, start: int, new_tokens: int = 12, first: int = 2):
    """Greedy settings whose EOS is a token row r generates at step k >= `first` (and not before) and no other
    row generates, so that row r finishes early (pad after it) and the others run to max_new_tokens; returns
    (settings, r, k). `start`: where the generated tokens begin in generate's output."""
    import copy

    def settings(eos):  # the model's own generation config (BART's forced EOS included), greedy
        g = copy.deepcopy(model.generation_config)
        g.update(max_new_tokens=new_tokens, do_sample=False, num_beams=1, eos_token_id=eos, pad_token_id=0)
        return g

    with torch.no_grad():
        free = model.generate(input_ids=ids, attention_mask=mask, generation_config=settings(None))
    free = free[:, start:].tolist()
    r, k = next(((r, k) for r in range(len(free)) for k in range(first, new_tokens - 1)
                 if free[r][k] not in free[r][:k] and all(free[r][k] not in row for row in free[:r] + free[r + 1:])),
                (None, None))
    assert k is not None, free
    return settings(free[r][k]), r, k


def _exported(cls, model, folder, kv_cache: bool, generation):
    ids = torch.randint(1, model.config.vocab_size, (2, 9), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[0, 6:] = 0
    folder.mkdir()
    files = cls.export(model, ids, mask, folder, False, kv_cache=kv_cache)
    assert files == (["model.onnx"] if cls.__name__ == "OnnxCausalLM" else ["encoder.onnx", "decoder.onnx"])
    return cls(folder, model.config, generation)


@pytest.fixture(scope="module", params=["tiny_gpt2_lm", "tiny_llama"])
def causal(request, tmp_path_factory):
    from transformers import AutoModelForCausalLM

    from tuneforge.deploy.onnx import OnnxCausalLM

    model = _contextual(AutoModelForCausalLM.from_pretrained(request.getfixturevalue(request.param)))
    ids, mask = _prompts(model.config.vocab_size, 0, "left")
    gen, r, k = _generation(model, ids, mask, ids.shape[1])
    folder = tmp_path_factory.mktemp("kv") / request.param
    return SimpleNamespace(name=request.param, model=model, gen=gen, r=r, k=k, ids=ids, mask=mask, folder=folder,
                           onnx=_exported(OnnxCausalLM, model, folder, True, gen))


def test_causal_lm_cache_graph_inputs_and_outputs(causal):
    session = causal.onnx.session
    layers = causal.model.config.num_hidden_layers
    names = [f"past_key_values.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask", "position_ids", *names]
    assert [o.name for o in session.get_outputs()] == ["logits", *(n.replace("past_key_values", "present")
                                                                   for n in names)]
    heads = getattr(causal.model.config, "num_key_value_heads", None) or causal.model.config.num_attention_heads
    assert {(h, d) for h, d in causal.onnx.past} == {(heads, causal.model.config.hidden_size
                                                      // causal.model.config.num_attention_heads)}


def test_causal_lm_cache_decoding_equals_pytorch_generate(causal):
    with torch.no_grad():
        reference = causal.model.generate(input_ids=causal.ids, attention_mask=causal.mask,
                                          generation_config=causal.gen)
    cached = causal.onnx.generate(causal.ids, causal.mask, generation_config=causal.gen)
    assert torch.equal(cached, reference), (cached, reference)
    new = reference[:, causal.ids.shape[1]:]
    assert new.shape[1] == causal.gen.max_new_tokens  # the other rows ran to max_new_tokens
    r, k = causal.r, causal.k
    assert new[r, k] == causal.gen.eos_token_id and (new[r, k + 1:] == 0).all()  # row r stopped: pad after EOS
    whole_prefix = causal.onnx.generate(causal.ids, causal.mask, generation_config=causal.gen, use_cache=False)
    assert torch.equal(whole_prefix, cached)
    # and the logits of the cache graph run on the whole batch at once (verification's path) match PyTorch's
    positions = (causal.mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        logits = causal.model(input_ids=causal.ids, attention_mask=causal.mask, position_ids=positions).logits
    exported = causal.onnx(causal.ids, causal.mask).logits
    assert (exported - logits)[causal.mask.bool()].abs().max() < 1e-4


def test_causal_lm_cache_decoding_equals_the_export_without_a_cache(causal):
    from tuneforge.deploy.onnx import OnnxCausalLM

    if causal.name != "tiny_gpt2_lm":
        pytest.skip("one architecture is enough for the old graph")
    old = _exported(OnnxCausalLM, causal.model, causal.folder.with_name("no-cache"), False, causal.gen)
    assert old.past == [] and [i.name for i in old.session.get_inputs()] == ["input_ids", "attention_mask",
                                                                            "position_ids"]
    assert torch.equal(old.generate(causal.ids, causal.mask),
                       causal.onnx.generate(causal.ids, causal.mask, generation_config=causal.gen))


def test_right_padded_batch_decodes_each_prompt_as_alone(causal):
    width = max(LENGTHS)
    right_ids, right_mask = _prompts(causal.model.config.vocab_size, 0, "right")
    right = causal.onnx.generate(right_ids, right_mask)
    left = causal.onnx.generate(causal.ids, causal.mask)
    assert torch.equal(right[:, :width], right_ids)  # the prompt as given, then the new tokens
    assert torch.equal(right[:, width:], left[:, width:])
    for i, n in enumerate(LENGTHS):
        alone = causal.onnx.generate(causal.ids[i:i + 1, width - n:])[0, n:]
        assert torch.equal(alone, left[i, width:width + len(alone)])


def test_causal_lm_export_folder_reloads_through_load_onnx_model(causal, tmp_path):
    import shutil

    from tuneforge.deploy.onnx import OnnxCausalLM, load_onnx_model

    folder = tmp_path / "export"
    shutil.copytree(causal.folder, folder)
    causal.model.config.save_pretrained(folder)
    causal.gen.save_pretrained(folder)
    loaded = load_onnx_model(SimpleNamespace(path=folder, task="causal_lm"))
    assert type(loaded) is OnnxCausalLM and loaded.past
    assert torch.equal(loaded.generate(causal.ids, causal.mask), causal.onnx.generate(causal.ids, causal.mask))


@pytest.mark.parametrize("fixture", ["tiny_t5", "tiny_bart"])
def test_seq2seq_decoder_cache_equals_pytorch_generate(fixture, request, tmp_path):
    from transformers import AutoModelForSeq2SeqLM

    from tuneforge.deploy.onnx import OnnxSeq2Seq

    model = _contextual(AutoModelForSeq2SeqLM.from_pretrained(request.getfixturevalue(fixture)))
    ids, mask = _prompts(model.config.vocab_size, model.config.pad_token_id, "right")
    gen, r, k = _generation(model, ids, mask, 1, first=1)  # these tiny decoders soon repeat one token
    gen.decoder_start_token_id = model.config.decoder_start_token_id
    onnx = _exported(OnnxSeq2Seq, model, tmp_path / "s2s", True, gen)
    assert [i.name for i in onnx.decoder.get_inputs()][3:5] == ["past_key_values.0.key", "past_key_values.0.value"]
    with torch.no_grad():
        reference = model.generate(input_ids=ids, attention_mask=mask, generation_config=gen)
    cached = onnx.generate(ids, mask, generation_config=gen)
    assert torch.equal(cached, reference), (cached, reference)
    assert cached[r, 1 + k] == gen.eos_token_id and (cached[r, 2 + k:] == 0).all()
    assert cached.shape[1] == gen.max_new_tokens + 1
    assert torch.equal(onnx.generate(ids, mask, generation_config=gen, use_cache=False), cached)
    # teacher-forced, one token per step on the cache: the logits of every step are PyTorch's
    hidden, enc_mask = onnx._encode(ids, mask)
    g = torch.Generator().manual_seed(2)
    decoder_ids = torch.randint(4, model.config.vocab_size, (ids.shape[0], 6), generator=g)
    decoder_ids[:, 0] = model.config.decoder_start_token_id
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask, decoder_input_ids=decoder_ids).logits
    past = None
    for t in range(decoder_ids.shape[1]):
        step, past = onnx._decode(decoder_ids[:, t:t + 1].numpy(), hidden, enc_mask, past)
        assert abs(step[:, 0] - logits[:, t].numpy()).max() < 1e-4
