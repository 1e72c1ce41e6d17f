"""Data-scale benchmark (issue 21): peak memory and time of a causal-LM `tuneforge train` on a real-text corpus
of a given size, against transformers' run_clm.py recipe (datasets text loader, map(batched, num_proc=2),
grouping into blocks) on the same file and cores.

    python bench/data_scale.py corpus --mb 40          # bench/data_scale/corpus-40mb.txt from real text
    python bench/data_scale.py run --mb 40 --which tuneforge,recipe
    python bench/data_scale.py run --mb 40 --which tuneforge --rev f5c25bb   # the path before issue 21
    python bench/data_scale.py table                  # markdown from bench/data_scale/results.jsonl

The corpus: every text of the quality benchmark's sets (man pages and Python docstrings, bench/quality.py build;
real text, none generated), one document per line, repeated with a unique prefix per copy ("copy 17: ...") so
that no line is an exact duplicate, until the size is reached. The model: a 4-layer GPT-2 (width 128) with a
byte-level BPE tokenizer learned from the first 2 MB of the corpus (no pretrained GPT-2 is reachable here).
The run: `block_size=128 max_steps=3`, no validation file (the automatic split), as a smoke run on a big
corpus would be started.

Peak memory is GNU time's maximum resident set (%M, in KB) of the whole command: the largest of the process
and its children, mapped file pages that are resident included.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "data_scale"
RESULTS = OUT / "results.jsonl"
QUALITY_DATA = HERE / "quality_data"
PY = sys.executable


def _texts() -> list[str]:
    if not QUALITY_DATA.is_dir():
        sys.exit("no bench/quality_data: run `python bench/quality.py build` first (the corpus is made of its texts)")
    out = []
    for path in sorted(QUALITY_DATA.glob("*/*.csv")):
        with open(path, newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                text = " ".join((row.get("text") or "").split())
                if text:
                    out.append(text)
    return sorted(set(out))


def corpus(mb: int) -> Path:
    path = OUT / f"corpus-{mb}mb.txt"
    if path.exists():
        return path
    OUT.mkdir(parents=True, exist_ok=True)
    texts = _texts()
    target = mb * 1_000_000
    written, copy = 0, 0
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        while written < target:
            for text in texts:
                line = f"copy {copy}: {text}\n"
                fh.write(line)
                written += len(line.encode())
                if written >= target:
                    break
            copy += 1
    tmp.replace(path)
    return path


def model(corpus_path: Path) -> Path:
    sys.path.insert(0, str(ROOT / "src"))
    from tuneforge.demo.tiny_lm import build_tiny_gpt2

    with open(corpus_path, encoding="utf-8") as fh:
        sample = fh.read(2_000_000).splitlines()
    return build_tiny_gpt2(sample, OUT / "tiny-gpt2")


RECIPE = r'''
import sys, time
from itertools import chain
from datasets import load_dataset
from transformers import AutoTokenizer
path, model, block = sys.argv[1], sys.argv[2], 128
t0 = time.perf_counter()
raw = load_dataset("text", data_files={"train": path}, cache_dir=sys.argv[3])
tok = AutoTokenizer.from_pretrained(model)
def tokenize(batch):
    return tok(batch["text"])
tokenized = raw.map(tokenize, batched=True, num_proc=2, remove_columns=["text"])
def group(examples):
    concatenated = {k: list(chain(*examples[k])) for k in examples.keys()}
    total = (len(concatenated["input_ids"]) // block) * block
    result = {k: [t[i:i + block] for i in range(0, total, block)] for k, t in concatenated.items()}
    result["labels"] = result["input_ids"].copy()
    return result
blocks = tokenized.map(group, batched=True, num_proc=2)
print("blocks", len(blocks["train"]), "seconds", round(time.perf_counter() - t0, 1))
'''


def _timed(cmd: list[str], env: dict[str, str], cwd: Path) -> dict:
    start = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-f", "MAXRSS %M", *cmd], env=env, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    rss = [int(line.split()[1]) for line in proc.stderr.splitlines() if line.startswith("MAXRSS ")]
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
    out = {"rc": proc.returncode, "wall_seconds": round(wall, 1),
           "peak_rss_mb": round(rss[-1] / 1024) if rss else None, "stdout_tail": proc.stdout[-400:]}
    # the data step's own seconds: tuneforge prints "tokenized R rows into T tokens in S s" (tokenization and
    # packing: packing is per batch); the recipe prints "blocks B seconds S" (load, tokenize, group)
    found = re.search(r"tokenized (\d+) rows into (\d+) tokens in ([\d.]+) s", proc.stdout) or \
        re.search(r"blocks (\d+) seconds ([\d.]+)", proc.stdout)
    if found:
        out["data_seconds"] = float(found.groups()[-1])
    return out


def _source(rev: str | None) -> Path:
    """src/ as it is now, or the tuneforge source of git revision `rev` (exported once)."""
    if rev is None:
        return ROOT / "src"
    folder = OUT / f"code-{rev}"
    if not folder.exists():
        folder.mkdir(parents=True)
        archive = subprocess.run(["git", "archive", rev, "src"], cwd=ROOT, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder / "src"


def run(mb: int, which: list[str], code: str, rev: str | None = None) -> None:
    path = corpus(mb)
    lm = model(path)
    env = {**os.environ, "PYTHONPATH": str(_source(rev)), "TUNEFORGE_CACHE": str(OUT / "cache"),
           "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "true"}
    for name in which:
        work = OUT / f"work-{name}-{mb}mb"
        subprocess.run(["rm", "-rf", str(work), str(OUT / "cache")])
        work.mkdir(parents=True)
        if name == "tuneforge":
            cmd = [PY, "-m", "tuneforge", "train", "task=causal_lm", f"model_name_or_path={lm}",
                   f"train_file={path}", "document_separator=line", "block_size=128", "max_steps=3",
                   "per_device_train_batch_size=8",
                   f"output_dir={work / 'run'}", "report_to=none"]
        else:
            (work / "recipe.py").write_text(RECIPE)
            cmd = [PY, str(work / "recipe.py"), str(path), str(lm), str(work / "hf-cache")]
        result = _timed(cmd, env, ROOT)
        record = {"which": name, "corpus_mb": mb, "code": code, "cores": os.cpu_count(), **result}
        print(json.dumps(record))
        with open(RESULTS, "a") as fh:
            fh.write(json.dumps(record) + "\n")
        subprocess.run(["rm", "-rf", str(work)])


def table() -> None:
    rows = [json.loads(line) for line in RESULTS.read_text().splitlines()] if RESULTS.exists() else []
    print("| corpus | command | code | peak RSS | whole command | data step |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        data = f"{r['data_seconds']} s" if r.get("data_seconds") is not None else "-"
        print(f"| {r['corpus_mb']} MB | {r['which']} | {r['code']} | {r['peak_rss_mb']} MB | {r['wall_seconds']} s "
              f"| {data} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("corpus")
    c.add_argument("--mb", type=int, required=True)
    r = sub.add_parser("run")
    r.add_argument("--mb", type=int, required=True)
    r.add_argument("--which", default="tuneforge,recipe")
    r.add_argument("--rev", default=None, help="measure tuneforge at this git revision (default: src/ as it is)")
    sub.add_parser("table")
    args = parser.parse_args()
    if args.cmd == "corpus":
        print(corpus(args.mb))
    elif args.cmd == "run":
        code = args.rev or subprocess.run(["git", "describe", "--always", "--dirty=+"], cwd=ROOT,
                                          capture_output=True, text=True).stdout.strip()
        run(args.mb, args.which.split(","), code, args.rev)
    else:
        table()


if __name__ == "__main__":
    main()
