"""The worked example of docs/tune.md: a `tuneforge tune` study on a real set of the quality benchmark, its best
trial against tuneforge's defaults, both scored on the test split (never seen by the study).

    python bench/tune_example.py study   [--set man-section-500] [--n-trials 8]   # runs the study (resumable)
    python bench/tune_example.py table   [--set man-section-500]                  # best trial vs defaults on test

The study searches the learning rate, the number of epochs and the warmup fraction with the default median
pruner and TPE sampler; validation data is the set's own validation split, so the test split decides nothing.
The defaults' test figures are the `defaults` runs of bench/quality.py (same seed, same data), read from
bench/quality_results.jsonl. Time alone on 2 CPU cores: about a quality run per trial (man-section-500: ~6 min).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality

SEARCH = ["learning_rate=log(2e-5, 3e-4)", "num_train_epochs=int(3, 8)", "warmup_steps=float(0.0, 0.2)"]


def folder(name: str) -> Path:
    return quality.ROOT / "bench" / "tune_runs" / name


def base(name: str) -> list[str]:
    data = quality.DATA / name
    return ["task=classification", f"model_name_or_path={quality.model_path()}", f"train_file={data / 'train.csv'}",
            f"validation_file={data / 'validation.csv'}", f"output_dir={folder(name)}", "report_to=none", "seed=0",
            "save_total_limit=1", "baselines=false"]


def study(args: argparse.Namespace) -> None:
    subprocess.run([sys.executable, "-m", "tuneforge", "tune", *base(args.set), *SEARCH, "--n-trials",
                    str(args.n_trials), "--study-name", f"example-{args.set}"], check=True)


def test_metrics(run: Path, name: str) -> dict:
    out = run / "eval" / "test"
    if not (out / "metrics.json").exists():
        subprocess.run([sys.executable, "-m", "tuneforge", "evaluate", str(run), "--data",
                        str(quality.DATA / name / "test.csv"), "--name", "test"], check=True)
    return json.loads((out / "metrics.json").read_text())


def table(args: argparse.Namespace) -> None:
    import optuna

    storage = f"sqlite:///{(folder(args.set) / 'study.db').resolve()}"
    s = optuna.load_study(study_name=f"example-{args.set}", storage=storage)
    best = s.best_trial
    states = [t.state.name.lower() for t in s.trials]
    test = test_metrics(Path(best.user_attrs["run"]), args.set)
    defaults = [json.loads(line) for line in quality.RESULTS.read_text().splitlines()
                if '"defaults"' in line and f'"{args.set}"' in line]
    d0 = next((r for r in defaults if r.get("seed") == 0 and r.get("set") == args.set), None)
    print(json.dumps({"set": args.set, "trials": {k: states.count(k) for k in set(states)},
                      "best_trial": best.number, "best_params": best.params, "best_validation_f1_macro": best.value,
                      "best_test": {k: test.get(k) for k in ("accuracy", "f1_macro")},
                      "defaults_seed0_test": {k: d0.get(f"test_{k}") for k in ("accuracy", "f1_macro")} if d0 else None,
                      "minutes": round(sum((t.datetime_complete - t.datetime_start).total_seconds()
                                           for t in s.trials if t.datetime_complete) / 60, 1)}, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, fn in (("study", study), ("table", table)):
        p = sub.add_parser(name)
        p.add_argument("--set", default="man-section-500")
        p.add_argument("--n-trials", type=int, default=8)
        p.set_defaults(fn=fn)
    args = parser.parse_args()
    args.fn(args)


if __name__ == "__main__":
    main()
