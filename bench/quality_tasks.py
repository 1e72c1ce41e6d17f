"""Real-data sets for the classification problem types (issue 18 item 5): one multi-label set and one regression
set built from text already on the machine (never generated), and the runs that measure them.

    python bench/quality_tasks.py build        # bench/quality_data/{man-seealso,py-body}/{train,validation,test}.jsonl
    python bench/quality_tasks.py run man-seealso        # tuneforge defaults with all-MiniLM-L6-v2, OMP_NUM_THREADS=1
    python bench/quality_tasks.py run py-body

man-seealso (multi-label): an English man page's DESCRIPTION (first 128 words) -> the set of manual sections its
SEE ALSO references (e.g. "chmod(2), ls(1)" -> ["1", "2"]); pages whose SEE ALSO names no section are left out.
py-body (regression): a Python standard-library function's docstring (first 128 words) -> log2 of the number of
source lines of the function (what the documentation says about how much code is behind it). Both reuse
bench/quality.py's man-page reader; Debian package descriptions, sections and debtags are NOT used (kept aside for
independent evaluation). Splits are seeded (SEED 18), a few thousand rows at most, so one run stays under ~10
minutes on one core. `run` prints the test metrics of the model and of the baselines tuneforge computes itself
(TF-IDF + one-vs-rest LR with the same threshold rule; the training mean and TF-IDF + ridge), plus, for the
multi-label set, micro-F1 at 0.5 against the tuned thresholds on the test split.
"""
from __future__ import annotations

import argparse
import ast
import json
import math
import os
import random
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality

SEED = 18
DATA = quality.DATA
REF = re.compile(r"[\w.+:-]+\s?\((\d)[a-z]*\)")
SIZES = {"man-seealso": (1700, 350, 400), "py-body": (2000, 400, 400)}  # train, validation, test


def see_also_rows() -> list[dict]:
    rows = []
    for sec in quality.ENGLISH_SECTIONS:
        for path in sorted((quality.MAN / f"man{sec}").glob("*.gz")):
            if path.is_symlink() or path.name.startswith("gcloud"):
                continue
            src = quality.read_page(path)
            if src is None:
                continue
            secs = quality.parse_roff(src)
            see = " ".join(v for k, vs in secs.items() if k.startswith("SEE ALSO") for v in vs)
            labels = sorted(set(REF.findall(see)))
            text = quality.words(quality.page_text(secs), 128)
            if labels and len(text.split()) >= 8:
                rows.append({"text": text, "label": labels, "page": path.name})
    return rows


def body_rows() -> list[dict]:
    rows, seen = [], set()
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(stdlib.rglob("*.py")):
        if any(part in ("test", "tests", "idlelib", "site-packages") for part in path.parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if not doc or len(doc.split()) < 8:
                    continue
                text = quality.words(doc, 128)
                if text in seen:
                    continue
                seen.add(text)
                lines = node.end_lineno - node.lineno + 1
                rows.append({"text": text, "log2_lines": round(math.log2(lines), 4), "function": node.name})
    return rows


def write(name: str, rows: list[dict]) -> None:
    rng = random.Random(SEED)
    rng.shuffle(rows)
    n_train, n_val, n_test = SIZES[name]
    splits = {"train": rows[:n_train], "validation": rows[n_train:n_train + n_val],
              "test": rows[n_train + n_val:n_train + n_val + n_test]}
    folder = DATA / name
    folder.mkdir(parents=True, exist_ok=True)
    for split, part in splits.items():
        with open(folder / f"{split}.jsonl", "w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in part)
    print(f"{name}: {len(rows)} rows available; " + ", ".join(f"{k} {len(v)}" for k, v in splits.items()))


def build(_: argparse.Namespace) -> None:
    write("man-seealso", see_also_rows())
    write("py-body", body_rows())


def run(args: argparse.Namespace) -> None:
    folder = DATA / args.set
    out = quality.ROOT / "bench" / "quality_runs" / f"{args.set}-defaults-seed{args.seed}"
    overrides = ["task=classification", f"model_name_or_path={quality.model_path()}",
                 f"train_file={folder / 'train.jsonl'}", f"validation_file={folder / 'validation.jsonl'}",
                 f"test_file={folder / 'test.jsonl'}", f"output_dir={out}", "report_to=none", f"seed={args.seed}",
                 "save_total_limit=1", *args.extra]
    if args.set == "py-body":
        overrides += ["label_column=log2_lines", "problem_type=regression"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "tuneforge", "train", *overrides], check=True, env=env)
    metrics = json.loads((out / "metrics.json").read_text())
    keys = ("f1_micro", "f1_macro", "f1_micro_untuned", "subset_accuracy") if args.set == "man-seealso" else \
        ("rmse", "mae", "r2", "pearson", "spearman")
    print(json.dumps({"set": args.set, "seed": args.seed, "train_seconds": metrics["train"]["train_seconds"],
                      "test": {k: metrics["test"].get(k) for k in keys},
                      "baselines": {name: {k: b.get(k) for k in keys} for name, b in metrics["baselines"].items()
                                    if isinstance(b, dict)}}, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build").set_defaults(fn=build)
    p = sub.add_parser("run")
    p.add_argument("set", choices=sorted(SIZES))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("extra", nargs="*", help="more key=value overrides")
    p.set_defaults(fn=run)
    args = parser.parse_args()
    args.fn(args)


if __name__ == "__main__":
    main()
