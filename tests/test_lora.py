"""LoRA on every task: only adapters and new modules train; merged weights equal the adapter model."""

from __future__ import annotations

import pytest
import torch
from conftest import LM_CORPUS, copy_rows, toy_rows, write_csv, write_jsonl

import tuneforge
from tuneforge.config import load_config

CASES = {
    "classification": ("tiny_bert", "AutoModelForSequenceClassification"),
    "seq2seq": ("tiny_t5", "AutoModelForSeq2SeqLM"),
    "causal_lm": ("tiny_gpt2_lm", "AutoModelForCausalLM"),
}


def _data(task, folder):
    if task == "classification":
        return write_csv(folder / "train.csv", toy_rows(64, 4))
    if task == "seq2seq":
        return write_jsonl(folder / "train.jsonl", copy_rows(64, 4))
    path = folder / "corpus.txt"
    path.write_text("\n\n".join(LM_CORPUS) + "\n\n" + "\n\n".join(t for t, _ in toy_rows(40, 4)) + "\n")
    return path


@pytest.mark.parametrize("task", list(CASES))
def test_lora_trains_adapters_only_and_merged_weights_match(task, request, tmp_path):
    import transformers
    from peft import PeftModel

    fixture, auto_name = CASES[task]
    base_path = request.getfixturevalue(fixture)
    auto = getattr(transformers, auto_name)
    run = tuneforge.train(None, [
        f"task={task}", f"model_name_or_path={base_path}", f"train_file={_data(task, tmp_path)}",
        f"output_dir={tmp_path / 'run'}", "lora.enabled=true", "lora.r=4", "max_steps=6", "learning_rate=1e-2",
        "report_to=none", f"preprocessing_cache_dir={tmp_path / 'cache'}", "eval_strategy=no",
        "load_best_model_at_end=false"])
    assert (run.path / "adapter" / "adapter_config.json").exists() and (run.path / "model.safetensors").exists()

    kwargs = {"num_labels": 2} if task == "classification" else {}
    base = auto.from_pretrained(base_path, **kwargs)
    adapted = PeftModel.from_pretrained(auto.from_pretrained(base_path, **kwargs), run.path / "adapter").eval()
    base_state = base.state_dict()
    changed_base = [n for n, p in adapted.base_model.model.state_dict().items()
                    if "lora_" not in n and "modules_to_save" not in n and "original_module" not in n
                    and n.replace(".base_layer", "") in base_state and not n.endswith("classifier.weight")
                    and not n.endswith("classifier.bias")
                    and not torch.equal(p, base_state[n.replace(".base_layer", "")])]
    assert changed_base == []  # frozen weights are bit-identical
    lora_b = [p for n, p in adapted.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b)  # lora_B starts at zero: adapters trained

    merged = auto.from_pretrained(run.path).eval()  # plain transformers, no peft
    inputs = {"input_ids": torch.tensor([[2, 5, 6, 7, 3]])} if task == "classification" else \
        {"input_ids": torch.tensor([[5, 6, 7, 1]])}
    if task == "seq2seq":
        inputs["decoder_input_ids"] = torch.tensor([[0, 5, 6]])
    with torch.no_grad():
        torch.testing.assert_close(merged(**inputs).logits, adapted(**inputs).logits, atol=1e-4, rtol=1e-4)


def test_adapters_merge_without_tf32(tmp_path):
    """Training turns TF32 matmuls on for GPUs; merging must not use them (on an H100 the TF32 merge moved a T5's
    logits 1e-4 from the adapter's). The setting is restored afterwards."""
    from tuneforge.engine.lora import save_lora

    seen = []

    class Merged:
        def save_pretrained(self, folder):
            seen.append(("saved", folder))

    class Adapted:
        def save_pretrained(self, folder):
            pass

        def merge_and_unload(self):
            seen.append(("tf32 while merging", torch.backends.cuda.matmul.allow_tf32))
            return Merged()

    before = torch.backends.cuda.matmul.allow_tf32  # a backend setting, not an attribute monkeypatch can set
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        save_lora(Adapted(), tmp_path, merge=True)
        assert seen == [("tf32 while merging", False), ("saved", tmp_path)]
        assert torch.backends.cuda.matmul.allow_tf32 is True
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def test_lora_head_is_trained_and_learning_rate_defaults(tiny_bert, toy_data, tmp_path):
    from safetensors.torch import load_file

    from tuneforge.engine.lora import resolve_learning_rate

    cfg = load_config(None, ["task=classification", "model_name_or_path=m", "train_file=t.csv", "lora.enabled=true"])
    assert cfg.training.learning_rate is None  # not the task's full fine-tuning default
    assert resolve_learning_rate(cfg).training.learning_rate == 2e-4  # LoRA default when no rate is given
    assert cfg.training.learning_rate is None  # resolution returns a new config
    cfg = load_config(None, ["task=classification", "model_name_or_path=m", "train_file=t.csv",
                             "lora.enabled=true", "learning_rate=1e-3"])
    assert resolve_learning_rate(cfg).training.learning_rate == 1e-3
    cfg = load_config(None, ["task=classification", "model_name_or_path=m", "train_file=t.csv"])
    assert resolve_learning_rate(cfg).training.learning_rate is None  # full fine-tuning: the task resolves it
    run = tuneforge.train(None, [
        "task=classification", f"model_name_or_path={tiny_bert}", f"train_file={toy_data['train']}",
        f"validation_file={toy_data['validation']}", f"output_dir={tmp_path / 'run'}", "lora.enabled=true",
        "learning_rate=5e-3", "num_train_epochs=3", "report_to=none", f"preprocessing_cache_dir={tmp_path / 'c'}"])
    saved = load_file(run.path / "adapter" / "adapter_model.safetensors")
    head = [k for k in saved if "classifier.weight" in k]
    assert head  # the head is trained in full and saved with the adapter
    assert not torch.equal(saved[head[0]], load_file(tiny_bert / "model.safetensors")["classifier.weight"])
    assert run.info["status"] == "finished"


def test_lora_on_a_new_head_with_another_name(tiny_bert, tmp_path):
    """A head the checkpoint lacks is found from the load report and trained, whatever its name."""
    from tuneforge.engine.lora import apply_lora, new_module_names
    from tuneforge.tasks.loading import load_model

    cfg = load_config(None, ["task=classification", f"model_name_or_path={tiny_bert}", "train_file=t.csv",
                             "lora.enabled=true"])
    import transformers

    model = load_model(transformers.AutoModelForSequenceClassification, cfg.model, num_labels=5,
                       ignore_mismatched_sizes=True)
    assert new_module_names(model.tuneforge_new_keys) == ["classifier"]
    wrapped = apply_lora(model, cfg.lora, "classification", model.tuneforge_new_keys)
    trainable = [n for n, p in wrapped.named_parameters() if p.requires_grad]
    assert any("classifier" in n for n in trainable)
    assert all("lora_" in n or "classifier" in n for n in trainable)


def test_added_tokens_grow_the_embeddings_and_lora_trains_them(tiny_gpt2_lm, tmp_path):
    """A tokenizer with more tokens than the embedding table (added chat/special tokens) gets the table
    resized, and under LoRA the grown embeddings are trained in full and saved."""
    import shutil

    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = tmp_path / "base"
    shutil.copytree(tiny_gpt2_lm, base)
    tokenizer = AutoTokenizer.from_pretrained(base)
    rows = len(tokenizer)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|sep|>"]})
    tokenizer.save_pretrained(base)
    new_id = tokenizer.convert_tokens_to_ids("<|sep|>")
    assert new_id == rows  # past the model's table: without resizing, an index error
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(f"{line} <|sep|> {line}" for line in LM_CORPUS * 3) + "\n")
    run = tuneforge.train(None, [
        "task=causal_lm", f"model_name_or_path={base}", f"train_file={corpus}", f"output_dir={tmp_path / 'run'}",
        "lora.enabled=true", "lora.r=4", "max_steps=6", "learning_rate=1e-2", "report_to=none",
        f"preprocessing_cache_dir={tmp_path / 'cache'}", "eval_strategy=no", "load_best_model_at_end=false"])
    saved = load_file(run.path / "adapter" / "adapter_model.safetensors")
    wte = [k for k in saved if "wte" in k]
    assert wte and saved[wte[0]].shape[0] == rows + 1
    merged = AutoModelForCausalLM.from_pretrained(run.path)
    assert merged.get_input_embeddings().num_embeddings == rows + 1
    start = AutoModelForCausalLM.from_pretrained(base).get_input_embeddings().weight
    assert not torch.equal(merged.get_input_embeddings().weight[:rows], start)  # embeddings trained
    torch.testing.assert_close(merged.get_input_embeddings().weight, merged.get_output_embeddings().weight)
