"""JSON-array scale benchmark (issue 21): peak memory and time of reading a .json array of records, the scanned
path (data/records.py scan_json_array: a memory map, one record decoded at a time, long texts left in the file)
against the whole-document path it replaced (read, decode, json.loads, one Python object), in the same run.

    python bench/json_scale.py --mb 40            # builds bench/data_scale/records-40mb.json once, then measures

The records: every text of the quality benchmark's sets (bench/quality.py build: man pages and Python
docstrings, real text), `{"text": "copy N: ...", "label": ...}`, repeated with a unique prefix per copy until the
size is reached; pretty-printed (indent 1), as exported data often is. Each side runs in its own process under
GNU time (%M: maximum resident set in KB, mapped file pages that are resident included) and reads the whole
text column once (the cost of using it, not only of opening it).
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "data_scale"
QUALITY_DATA = HERE / "quality_data"

SCANNED = """
import sys, time
from tuneforge.data.readers import read_file
t = time.perf_counter()
table = read_file(sys.argv[1])
chars = sum(len(x) for x in table.columns["text"])
print(len(table), chars, round(time.perf_counter() - t, 2))
"""
WHOLE = """
import json, sys, time
from pathlib import Path
t = time.perf_counter()
records = json.loads(Path(sys.argv[1]).read_bytes().decode("utf-8-sig"))
columns = {k: [r.get(k) for r in records] for k in ("text", "label")}
chars = sum(len(x) for x in columns["text"])
print(len(records), chars, round(time.perf_counter() - t, 2))
"""


def build(mb: int) -> Path:
    path = OUT / f"records-{mb}mb.json"
    if path.exists():
        return path
    rows = []
    for split in sorted(QUALITY_DATA.glob("*/train.csv")):
        with open(split, newline="", encoding="utf-8") as fh:
            rows += [(r["text"], r["label"]) for r in csv.DictReader(fh)]
    if not rows:
        sys.exit("no quality data: run `python bench/quality.py build` first")
    OUT.mkdir(exist_ok=True)
    target, size, copy = mb << 20, 0, 0
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("[")
        while size < target:
            for text, label in rows:
                piece = ("," if size else "") + json.dumps({"text": f"copy {copy}: {text}", "label": label},
                                                          indent=1, ensure_ascii=False)
                fh.write(piece)
                size += len(piece.encode())
                if size >= target:
                    break
            copy += 1
        fh.write("]\n")
    return path


def measure(code: str, path: Path) -> dict[str, float]:
    done = subprocess.run(["/usr/bin/time", "-f", "%M %e", sys.executable, "-c", code, str(path)],
                          capture_output=True, text=True, check=True)
    rows, chars, seconds = done.stdout.split()
    peak_kb, wall = done.stderr.strip().splitlines()[-1].split()
    return {"rows": int(rows), "chars": int(chars), "read_seconds": float(seconds), "wall_seconds": float(wall),
            "peak_rss_mb": round(int(peak_kb) / 1024, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mb", type=int, default=40)
    args = p.parse_args()
    path = build(args.mb)
    result = {"file_mb": round(path.stat().st_size / 2**20, 1), "scanned": measure(SCANNED, path),
              "whole": measure(WHOLE, path)}
    assert result["scanned"]["chars"] == result["whole"]["chars"], "the two paths read different texts"
    print(json.dumps(result))
    with open(OUT / "json_results.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
