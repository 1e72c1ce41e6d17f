"""CPU benchmark: fp32 vs int8 (PyTorch and ONNX Runtime) for the fine-tuned MiniLM demo classifier.

    python bench/export_int8.py                       # trains the full demo first (a few minutes on 2 cores)
    python bench/export_int8.py --run runs/<id>       # an existing classification run
    python bench/export_int8.py --quick --latency-examples 5     # smoke test of the script itself

Each variant is made by `tuneforge export` (the same code, the same verification) from the same run:
  torch int8   --format safetensors --quantize int8  (torch.ao dynamic quantization, per-channel int8 Linear)
  onnx fp32    --format onnx                         (torch.onnx export, ONNX Runtime CPU)
  onnx int8    --format onnx --quantize int8         (onnxruntime quantize_dynamic)
and compared with the run's own PyTorch fp32 model on the run's validation split: label agreement, accuracy,
batch-1 latency (p50 of `predict([text])` calls through the server's code path, original and export
interleaved per example) and weight size on disk. Run it alone on the machine: timings are shared-CPU
sensitive. Target (issue 8): int8 at least 1.7x faster than fp32 with at most 1 point of accuracy lost.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

VARIANTS = [("torch int8", "safetensors", "int8"), ("onnx fp32", "onnx", None), ("onnx int8", "onnx", "int8")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", help="a finished classification run (default: train the MiniLM demo)")
    parser.add_argument("--quick", action="store_true", help="train the quick demo (smoke test, not a result)")
    parser.add_argument("--latency-examples", type=int, default=200, help="batch-1 calls timed per model")
    parser.add_argument("--out", help="where exports (and a trained demo run) go (default: a temporary folder)")
    args = parser.parse_args()

    import torch

    from tuneforge.deploy.export import export_run

    work = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="tuneforge-bench-int8-"))
    run = args.run
    if run is None:
        from tuneforge.demo import run_demo

        run = run_demo(work / "demo-run", quick=args.quick).path
    print(f"run: {run}; exports in {work}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    rows = []
    for name, fmt, quantize in VARIANTS:
        print(f"exporting {name} ...", flush=True)
        report = export_run(run, fmt, quantize, output=work / name.replace(" ", "-"), min_agreement=0.0,
                            latency_examples=args.latency_examples, overwrite=True)
        rows.append((name, report))

    first = rows[0][1]
    base_acc = first["metrics"]["original"]["accuracy"]
    print(f"\nvalidation: {first['validation']['rows']} examples ({first['validation']['source']}); latency = p50 of "
          f"{args.latency_examples} batch-1 predict calls; speedup vs the run's torch fp32 timed in the same export")
    header = "| model | p50 ms | speedup vs torch fp32 | accuracy | Δ accuracy (points) | label agreement | size MiB |"
    print(header)
    print("|---|---|---|---|---|---|---|")
    fp32_ms = [r["latency"]["original"]["p50_ms"] for _, r in rows]
    print(f"| torch fp32 (run) | {statistics.median(fp32_ms):.2f} (median of the 3 exports' timings: "
          f"{', '.join(f'{v:.2f}' for v in fp32_ms)}) | 1.00x | {base_acc:.4f} | - | - | "
          f"{first['size_bytes']['original'] / 2**20:.1f} |")
    for name, r in rows:
        lat, m, a = r["latency"], r["metrics"], r["agreement"]
        change = (m["exported"]["accuracy"] - m["original"]["accuracy"]) * 100 + 0.0
        print(f"| {name} | {lat['exported']['p50_ms']:.2f} | {lat['speedup']:.2f}x | {m['exported']['accuracy']:.4f} | "
              f"{change:+.2f} | {a['value']:.4f} | {r['size_bytes']['exported'] / 2**20:.1f} |")
    for name, r in rows:
        if "int8" in name:
            drop = (r["metrics"]["original"]["accuracy"] - r["metrics"]["exported"]["accuracy"]) * 100
            meets = r["latency"]["speedup"] >= 1.7 and drop <= 1.0
            print(f"target for {name} (>= 1.7x faster, <= 1 point lost): {'met' if meets else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
