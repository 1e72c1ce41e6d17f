"""Classification works beyond BERT: a GPT-2 (no pad token, last-token pooling) and a RoBERTa (no token
type ids), both built offline."""

from __future__ import annotations

import pytest
from conftest import bpe_tokenizer, toy_rows

import tuneforge


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory):
    from transformers import GPT2Config, GPT2ForSequenceClassification

    folder = tmp_path_factory.mktemp("tiny_gpt2")
    vocab = bpe_tokenizer(folder, {"eos_token": "<|endoftext|>", "bos_token": "<|endoftext|>"})
    GPT2ForSequenceClassification(GPT2Config(vocab_size=vocab, n_embd=32, n_layer=2, n_head=2, n_positions=64,
                                             num_labels=2)).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_roberta(tmp_path_factory):
    from transformers import RobertaConfig, RobertaForSequenceClassification

    folder = tmp_path_factory.mktemp("tiny_roberta")
    specials = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>",
                "cls_token": "<s>", "sep_token": "</s>", "mask_token": "<mask>"}
    vocab = bpe_tokenizer(folder, specials, roberta=True)
    RobertaForSequenceClassification(RobertaConfig(
        vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=70, pad_token_id=2, type_vocab_size=1)).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("family", ["tiny_gpt2", "tiny_roberta"])
def test_family_learns_and_reloads(family, request, toy_data, tmp_path):
    model = request.getfixturevalue(family)
    run = tuneforge.train(None, [
        "task=classification", f"model_name_or_path={model}", f"train_file={toy_data['train']}",
        f"validation_file={toy_data['validation']}", f"output_dir={tmp_path / 'run'}", "learning_rate=3e-3",
        "num_train_epochs=4", "report_to=none", "seed=0", f"preprocessing_cache_dir={tmp_path / 'cache'}"])
    assert run.metrics["eval"]["accuracy"] > 0.8
    loaded = tuneforge.load(run.path)
    assert loaded.tokenizer.pad_token_id is not None  # GPT-2 gets EOS as pad, saved with the run
    assert loaded.model.config.pad_token_id == loaded.tokenizer.pad_token_id
    texts = [t for t, _ in toy_rows(40, 11)]
    expected = [y for _, y in toy_rows(40, 11)]
    got = [p["label"] for p in loaded.predict(texts)]
    assert sum(g == e for g, e in zip(got, expected)) >= 30
