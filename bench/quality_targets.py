"""The "Against the targets" table of docs/QUALITY.md, from bench/quality_results.jsonl.

Per set: TF-IDF + LR, the first wave's defaults (`old`), the new defaults (mean ± sd over seeds), the best swept
setting by mean validation macro-F1, and whether issue 16's targets hold (>= 1,000 training rows: accuracy and
macro-F1 at least the baseline's; smaller sets: accuracy; and macro-F1 within 1.5 points of the best setting).

    python3 bench/quality_targets.py
"""

from __future__ import annotations

import json
import statistics
import subprocess
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "quality_results.jsonl"
# Configs that measure the new defaults on each set: `defaults` run with code that has them (DEFAULTS_CODE or a
# later commit), and `lr1e-4-cw-ep6` where the budget rule gives 6 epochs (man-admin and man-name), the same settings.
DEFAULTS_CODE = "5ca813f"
NEW = {"man-admin": ("lr1e-4-cw-ep6", "defaults"), "man-name": ("lr1e-4-cw-ep6", "defaults"),
       "man-section-500": ("defaults",), "py-module": ("defaults",), "man-section-2k": ("defaults",),
       "man-lang": ("defaults",), "man-section-6k": ("defaults",)}


def has_defaults(code: str) -> bool:
    """Whether the commit `code` has the new defaults (is DEFAULTS_CODE or descends from it)."""
    return subprocess.run(["git", "merge-base", "--is-ancestor", DEFAULTS_CODE, code], cwd=RESULTS.parent,
                          capture_output=True).returncode == 0


def mean_sd(rows: list[dict], key: str) -> str:
    values = [r[key] for r in rows]
    sd = f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else ""
    return f"{statistics.mean(values):.3f}{sd}"


def both(rows: list[dict]) -> str:
    return f"{mean_sd(rows, 'test_accuracy')} / {mean_sd(rows, 'test_f1_macro')}"


def main() -> None:
    by: dict[tuple[str, str], list[dict]] = {}
    for line in RESULTS.read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        by.setdefault((r["set"], r["config"]), []).append(r)
    print("| set | train rows | TF-IDF + LR | old defaults | new defaults (seeds) | best swept (on validation) "
          "| target |")
    print("|---|---|---|---|---|---|---|")
    for name, configs in NEW.items():
        new = [r for c in configs for r in by.get((name, c), [])
               if c != "defaults" or has_defaults(str(r.get("code", "")))]
        if not new or (name, "tfidf-lr") not in by:
            continue
        base, old = by[(name, "tfidf-lr")][0], by.get((name, "old"), [])
        rows = new[0]["train_rows"]
        acc = statistics.mean(r["test_accuracy"] for r in new)
        f1 = statistics.mean(r["test_f1_macro"] for r in new)
        swept = {c: v for (s, c), v in by.items() if s == name and c != "tfidf-lr"}
        best = max(swept, key=lambda c: statistics.mean(r["val_f1_macro"] for r in swept[c]))
        best_f1 = statistics.mean(r["test_f1_macro"] for r in swept[best])
        if rows >= 1000:
            goal, met = "acc and F1 ≥ baseline", acc >= base["test_accuracy"] and f1 >= base["test_f1_macro"]
        else:
            goal, met = "acc ≥ baseline", acc >= base["test_accuracy"]
        near = "yes" if best_f1 - f1 <= 0.015 else "no"
        print(f"| {name} | {rows} | {base['test_accuracy']:.3f} / {base['test_f1_macro']:.3f} | "
              f"{both(old) if old else '-'} ({len(old)}) | {both(new)} ({len(new)}) | `{best}` {both(swept[best])} | "
              f"{goal}: {'met' if met else 'not met'}; within 1.5 F1 points of best: {near} |")


if __name__ == "__main__":
    main()
