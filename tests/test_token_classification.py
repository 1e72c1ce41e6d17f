"""token_classification (NER): CoNLL/JSONL data and its one-line errors, IOB1/BIOES conversion, the first-subword
rule, windows over sentences longer than max_length (every word exactly one label, entities past the first window
found), a tiny model learning a toy tagging problem, predict offsets, metrics against seqeval."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from conftest import one_line_error, write_jsonl

import tuneforge
from tuneforge.config import load_config
from tuneforge.tasks import get_task

FILLER = ["the", "movie", "plot", "was", "really", "quite", "story", "film", "scene", "ending"]
PEOPLE = [["ada", "lovelace"], ["alan", "turing"], ["grace"], ["linus"], ["edsger", "dijkstra"], ["barbara"]]
PLACES = [["paris"], ["rome"], ["oslo"], ["new", "york"], ["lima"], ["kyoto"]]


def toy_sentence(rng: random.Random, n_entities: int = 2, filler: tuple[int, int] = (2, 6)
                 ) -> tuple[list[str], list[str]]:
    """Filler words with people (PER, after "met") and places (LOC, after "in") among them, IOB2 tags."""
    words, tags = [], []
    for _ in range(n_entities):
        for _ in range(rng.randint(*filler)):
            words.append(rng.choice(FILLER))
            tags.append("O")
        kind, trigger, names = rng.choice([("PER", "met", PEOPLE), ("LOC", "in", PLACES)])
        name = rng.choice(names)
        words += [trigger] + name
        tags += ["O", f"B-{kind}"] + [f"I-{kind}"] * (len(name) - 1)
    words.append(rng.choice(FILLER))
    tags.append("O")
    return words, tags


def toy_rows(n: int, seed: int, **kwargs) -> list[dict]:
    rng = random.Random(seed)
    return [dict(zip(("tokens", "ner_tags"), toy_sentence(rng, **kwargs))) for _ in range(n)]


def write_conll(path: Path, rows: list[dict], docstart: bool = True) -> Path:
    lines = ["-DOCSTART- -X- -X- O", ""] if docstart else []
    for row in rows:
        lines += [f"{w} NN I-NP {t}" for w, t in zip(row["tokens"], row["ner_tags"])] + [""]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def overrides(model: Path, folder: Path, **extra) -> list[str]:
    items = {"task": "token_classification", "model_name_or_path": str(model), "output_dir": str(folder / "run"),
             "learning_rate": 3e-3, "num_train_epochs": 6, "per_device_train_batch_size": 16, "report_to": "none",
             "seed": 0, "save_strategy": "no", "preprocessing_cache_dir": str(folder / "cache"), **extra}
    return [f"{k}={v}" for k, v in items.items()]


@pytest.fixture(scope="module")
def ner_data(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("ner_data")
    return {"train": write_conll(folder / "train.conll", toy_rows(240, 1)),
            "validation": write_jsonl(folder / "validation.jsonl", toy_rows(40, 2)),
            "test": write_jsonl(folder / "test.jsonl", toy_rows(40, 3, n_entities=6)),  # longer than max_length
            "folder": folder}


@pytest.fixture(scope="module")
def ner_run(tiny_bert, ner_data, tmp_path_factory):
    """The tiny BERT trained on the toy problem with windows of 24 tokens (the longer sentences are windowed)."""
    folder = tmp_path_factory.mktemp("ner_run")
    return tuneforge.train(None, overrides(tiny_bert, folder, train_file=ner_data["train"],
                                           validation_file=ner_data["validation"], test_file=ner_data["test"],
                                           max_length=24, stride=6))


def test_tiny_model_learns_the_toy_problem(ner_run):
    metrics = json.loads((ner_run.path / "metrics.json").read_text())
    log = [json.loads(line) for line in (ner_run.path / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r and "eval_loss" not in r]
    assert losses[-1] < 0.5 * losses[0], losses
    assert metrics["eval"]["f1"] > 0.8, metrics["eval"]  # chance (random tags) scores near 0 on exact spans
    assert metrics["test"]["f1"] > 0.8 and metrics["test"]["accuracy"] > 0.9, metrics["test"]
    assert set(metrics["test"]["per_class"]) == {"LOC", "PER"}
    assert metrics["baselines"]["most_frequent_tag"]["f1"] > 0.5  # the lexical baseline is scored the same way
    analysis = json.loads((ner_run.path / "error_analysis.json").read_text())
    assert analysis["split"] == "test" and "most_wrong_entities" in analysis
    record = json.loads((ner_run.path / "run.json").read_text())
    assert record["status"] == "finished"


def test_first_subword_carries_the_label(tiny_bert, ner_data):
    """Only a word's first subword is labelled, so the labelled positions are exactly the words and the entity
    count seen through the labels equals the data's (not inflated by extra subwords: transformers #14043)."""
    from transformers import AutoTokenizer

    from tuneforge.data.tags import entity_spans

    cfg = load_config(None, overrides(tiny_bert, ner_data["folder"], train_file=ner_data["train"],
                                      validation_file=ner_data["validation"], max_length=64, stride=8))
    task = get_task("token_classification")
    data = task.prepare_data(cfg)
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    split = task.tokenize(tokenizer, data, cfg, 64)["train"]
    table = data.splits["train"]
    names = data.label_names
    assert not split.windowed or len(split) == split.n_examples  # all fit in one window of 64
    split_words_total = 0
    for row in range(len(split)):
        a, b = split.offsets[row], split.offsets[row + 1]
        labels, words = split.token_labels[a:b], split.word_ids[a:b]
        words_in_row = table.columns["tokens"][int(split.example_ids[row])]
        assert (labels != -100).sum() == len(words_in_row)
        first = [i for i in range(len(words)) if words[i] >= 0 and (i == 0 or words[i - 1] != words[i])]
        assert np.flatnonzero(labels != -100).tolist() == first
        gold = list(table.columns["ner_tags"][int(split.example_ids[row])])
        assert [names[x] for x in labels[labels != -100]] == gold
        split_words_total += int(sum(1 for i in range(1, len(words)) if words[i] >= 0 and words[i] == words[i - 1]))
        assert len(entity_spans([names[x] for x in labels[labels != -100]])) == len(entity_spans(gold))
    assert split_words_total > 0  # the toy names do split into several subwords, so the rule was exercised


def test_windows_give_every_word_one_label(tiny_bert):
    """A sentence far longer than max_length: several windows sharing `stride` tokens, every word labelled in
    some window, merged to exactly one label per word; a window that starts inside a word never labels it."""
    from transformers import AutoTokenizer

    from tuneforge.tasks.token_classification import encode_words, first_subwords, merge_words, write_windows
    from tuneforge.tasks.windows import best_window

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    rng = random.Random(5)
    words, _ = toy_sentence(rng, n_entities=12)
    win = encode_words(tokenizer, [words], 16, 4)
    assert len(win.input_ids) > 3 and all(len(r) <= 16 for r in win.input_ids)
    flags = first_subwords(win)
    for k in range(1, len(win.input_ids)):  # neighbours share 4 content tokens
        assert win.input_ids[k - 1][-5:-1] == win.input_ids[k][1:5]
    labelled = [w for ws, fs in zip(win.word_ids, flags) for w, f in zip(ws, fs) if f]
    assert set(labelled) == set(range(len(words)))
    for k, (ws, fs) in enumerate(zip(win.word_ids, flags)):
        if k and ws[1] == win.word_ids[k - 1][-2] and win.char_starts[k][1] > 0:  # starts inside a word
            assert not fs[1]
    from tuneforge.data.cache import tokenize_in_memory

    split = tokenize_in_memory(lambda w: write_windows(tokenizer, [words], [list(range(len(words)))], 16, 4, w))
    assert split.n_examples == 1 and len(split) == len(win.input_ids)
    assert int(split.full_lengths[0]) == len(tokenizer(words, is_split_into_words=True)["input_ids"])
    cand_words, cand_pos, cand_len = [], [], []
    for row in range(len(split)):
        a, b = split.offsets[row], split.offsets[row + 1]
        pos = np.flatnonzero(split.token_labels[a:b] != -100)
        cand_words.append(split.word_ids[a:b][pos])
        cand_pos.append(pos)
        cand_len.append(np.full(len(pos), b - a))
    w, p, n = (np.concatenate(x) for x in (cand_words, cand_pos, cand_len))
    pick = merge_words(w, p, n)
    assert w[pick].tolist() == list(range(len(words)))  # exactly one label per word
    for word, chosen in zip(w[pick], pick):  # the same choice as best_window, word by word
        options = np.flatnonzero(w == word)
        assert options[best_window(p[options], n[options])] == chosen


def test_entities_past_the_first_window_are_found(ner_run):
    """Predict on texts far longer than max_length (24): entities near the end, beyond the first window, are
    found with their character offsets; truncating at max_length could not find them."""
    model = tuneforge.load(ner_run.path)
    rng = random.Random(11)
    texts, wanted = [], []
    for _ in range(8):
        words = [rng.choice(FILLER) for _ in range(60)] + ["met", "ada", "lovelace", "in", "oslo", "the", "end"]
        texts.append("  ".join(words))
        wanted.append({("PER", "ada  lovelace"), ("LOC", "oslo")})
    results = model.predict(texts)
    found = sum(len(want & {(e["entity_group"], e["word"]) for e in r["entities"]}) for want, r in zip(wanted, results))
    assert found >= 0.75 * sum(len(w) for w in wanted), results
    before = len(model.tokenizer(texts[0].split(" met ")[0])["input_ids"])
    assert before > 2 * 24  # the entities sit past the first two windows of 24 tokens


def test_predict_offsets_point_into_the_input(ner_run):
    model = tuneforge.load(ner_run.path)
    texts = ["we met  ada lovelace in\tparis \u200b today", "", "   ", "in rome and in new york we met grace"]
    results = model.predict(texts)
    assert len(results) == len(texts) and results[1]["entities"] == [] and results[2]["entities"] == []
    for text, result in zip(texts, results):
        for e in result["entities"]:
            assert set(e) == {"entity_group", "word", "start", "end", "score"}
            assert e["word"] == text[e["start"]:e["end"]] and 0 < e["score"] <= 1
    groups = {(e["entity_group"], e["word"]) for e in results[3]["entities"]}
    assert ("LOC", "rome") in groups and ("PER", "grace") in groups, results[3]


@pytest.mark.parametrize(("scheme", "tags", "first"), [
    ("IOB1", ["I-PER", "I-PER", "O", "I-LOC", "B-LOC", "O"], "line 3"),  # the first I- that begins an entity
    ("BIOES", ["B-PER", "E-PER", "O", "S-LOC", "S-LOC", "O"], "line 4"),  # the first E-/S- tag
])
def test_iob1_and_bioes_become_iob2(tiny_bert, tmp_path, scheme, tags, first):
    words = ["ada", "lovelace", "in", "paris", "rome", "today"]
    rows = [{"tokens": words, "ner_tags": tags}] * 1 + [{"tokens": words + ["x"], "ner_tags": tags + ["O"]}]
    train = write_conll(tmp_path / "train.conll", rows * 3)
    cfg = load_config(None, overrides(tiny_bert, tmp_path, train_file=train, validation_file=train))
    data = get_task("token_classification").prepare_data(cfg)
    assert list(data.splits["train"].columns["ner_tags"][0]) == ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "O"]
    assert data.label_names == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    assert any(f"converted from {scheme} to IOB2" in w and f"train.conll, {first})" in w
               for w in data.report.warnings), \
        data.report.warnings


def _errors_cfg(tiny_bert, tmp_path, train, validation=None):
    extra = {"validation_file": validation} if validation else {}
    return ["train", *overrides(tiny_bert, tmp_path, train_file=train, **extra)]


def test_one_line_errors(tiny_bert, tmp_path, capsys):
    good = write_jsonl(tmp_path / "good.jsonl", toy_rows(20, 1))
    short = write_jsonl(tmp_path / "short.jsonl", toy_rows(3, 1) + [{"tokens": ["a", "b"], "ner_tags": ["O"]}])
    line = one_line_error(capsys, _errors_cfg(tiny_bert, tmp_path / "a", short))
    assert "short.jsonl, line 4" in line and "1 tags" in line and "2 words" in line

    bad = tmp_path / "bad.conll"
    bad.write_text("ada B-PER\nlovelace I-PER\n\nin O\nparis B_LOC\n", encoding="utf-8")
    line = one_line_error(capsys, _errors_cfg(tiny_bert, tmp_path / "b", bad))
    assert "bad.conll, line 5" in line and "'B_LOC'" in line and "B-PER" in line

    one_column = tmp_path / "one.conll"
    one_column.write_text("ada B-PER\nlovelace\n", encoding="utf-8")
    line = one_line_error(capsys, _errors_cfg(tiny_bert, tmp_path / "c", one_column))
    assert "one.conll: line 2" in line and "one column" in line

    unseen = write_conll(tmp_path / "unseen.conll", [{"tokens": ["at", "acme"], "ner_tags": ["O", "I-ORG"]}],
                         docstart=False)
    line = one_line_error(capsys, _errors_cfg(tiny_bert, tmp_path / "d", good, unseen))
    assert "unseen.conll, line 2" in line and "'ORG'" in line and "training" in line

    ints = write_jsonl(tmp_path / "ints.jsonl", [{"tokens": ["a"], "ner_tags": [1]}])
    line = one_line_error(capsys, _errors_cfg(tiny_bert, tmp_path / "e", ints))
    assert "ints.jsonl, line 1, token 1" in line and "integer" in line

    conll_for_classifier = ["train", "task=classification", f"model_name_or_path={tiny_bert}",
                            f"train_file={bad}", f"output_dir={tmp_path / 'f'}"]
    line = one_line_error(capsys, conll_for_classifier)
    assert "bad.conll" in line and "CoNLL" in line


def test_metrics_match_seqeval_strict(tiny_bert):
    """ner_metrics is seqeval's strict IOB2 report; entity_spans (used for the error analysis) counts the same
    entities (an I- tag without its B- starts nothing)."""
    from seqeval.metrics import f1_score
    from seqeval.scheme import IOB2

    from tuneforge.data.tags import entity_spans
    from tuneforge.evaluate.ner import ner_metrics

    rng = random.Random(3)
    tags = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    y_true = [[rng.choice(tags) for _ in range(12)] for _ in range(50)]
    y_pred = [[t if rng.random() < 0.7 else rng.choice(tags) for t in row] for row in y_true]
    m = ner_metrics(y_true, y_pred)
    assert m["f1"] == pytest.approx(f1_score(y_true, y_pred, mode="strict", scheme=IOB2))
    gold = sum(len(entity_spans(t)) for t in y_true)
    assert sum(v["support"] for v in m["per_class"].values()) == gold
    hits = sum(len(set(entity_spans(t)) & set(entity_spans(p))) for t, p in zip(y_true, y_pred))
    assert m["recall"] == pytest.approx(hits / gold)


def test_hub_class_label_ids_become_tag_names(tiny_bert, tmp_path, monkeypatch):
    """A hub dataset's tags as a list of ClassLabel ids (conll2003's ner_tags) are read as their names."""
    import datasets

    names = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    features = datasets.Features({"tokens": datasets.Sequence(datasets.Value("string")),
                                  "ner_tags": datasets.Sequence(datasets.ClassLabel(names=names))})
    rows = toy_rows(30, 4)
    ds = datasets.Dataset.from_dict({"tokens": [r["tokens"] for r in rows],
                                     "ner_tags": [[names.index(t) for t in r["ner_tags"]] for r in rows]}, features)
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: datasets.DatasetDict({"train": ds, "test": ds}))
    cfg = load_config(None, overrides(tiny_bert, tmp_path, dataset_name="someone/toy-ner"))
    data = get_task("token_classification").prepare_data(cfg)
    assert data.label_names == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    assert list(data.splits["test"].columns["ner_tags"][0]) == rows[0]["ner_tags"]


def test_lora_trains_adapters_and_the_new_head_only(tiny_bert, ner_data, tmp_path):
    """LoRA (peft TOKEN_CLS): the encoder's weights stay bit-identical, adapters train, the new per-token head is
    trained in full (modules_to_save), and the merged weights predict what the adapter model predicts."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForTokenClassification

    run = tuneforge.train(None, overrides(tiny_bert, tmp_path, train_file=ner_data["train"], max_steps=6,
                                          learning_rate=1e-2, eval_strategy="no", load_best_model_at_end=False,
                                          **{"lora.enabled": True, "lora.r": 4}))
    kwargs = {"num_labels": 5, "ignore_mismatched_sizes": True}  # the tiny BERT's checkpoint has a 2-label head
    base = AutoModelForTokenClassification.from_pretrained(tiny_bert, **kwargs)
    adapted = PeftModel.from_pretrained(AutoModelForTokenClassification.from_pretrained(tiny_bert, **kwargs),
                                        run.path / "adapter").eval()
    base_state = base.state_dict()
    inner = adapted.base_model.model.state_dict()
    frozen = {n: p for n, p in inner.items() if "lora_" not in n and "modules_to_save" not in n
              and "original_module" not in n and not n.startswith("classifier.")}
    assert frozen and all(torch.equal(p, base_state[n.replace(".base_layer", "")]) for n, p in frozen.items())
    assert any(p.abs().sum() > 0 for n, p in adapted.named_parameters() if "lora_B" in n)
    head = next(p for n, p in inner.items() if n.startswith("classifier.modules_to_save") and n.endswith(".weight"))
    merged = AutoModelForTokenClassification.from_pretrained(run.path).eval()
    assert torch.equal(merged.classifier.weight, head)  # the head trained in full and saved with the adapter
    ids = torch.tensor([[2, 5, 6, 7, 8, 3]])
    with torch.no_grad():
        assert torch.allclose(merged(input_ids=ids).logits, adapted(input_ids=ids).logits, atol=1e-5)


def test_byte_level_tokenizer_gets_a_space_before_every_word(tiny_gpt2_lm):
    """A byte-level BPE tokenizer encodes each pre-split word as it appears in running text (after a space), so the
    words of a sentence get the token ids the model saw in pretraining; first subwords still start at 0."""
    from transformers import AutoTokenizer

    from tuneforge.tasks.token_classification import encode_words, first_subwords, prefix_space

    tokenizer = AutoTokenizer.from_pretrained(tiny_gpt2_lm)
    words = ["the", "quick", "brown", "fox"]
    glued = tokenizer([words], is_split_into_words=True)["input_ids"][0]
    assert prefix_space(tokenizer) and not prefix_space(tokenizer)  # changed once
    win = encode_words(tokenizer, [words], 32, 8)
    assert win.input_ids[0] != glued
    assert win.input_ids[0] == tokenizer(" " + " ".join(words), add_special_tokens=False)["input_ids"]
    assert sum(first_subwords(win)[0]) == len(words)
