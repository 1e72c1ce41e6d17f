"""Where a one-core CPU training step of MiniLM goes, and what tuneforge's CPU step pieces change (issue 21 item 3).

    python bench/quality.py build                       # the real-text sets (once)
    python bench/cpu_step_profile.py                    # every variant, 2 interleaved rounds (~3 min)
    python bench/cpu_step_profile.py --profile tuneforge    # torch.profiler's table for one variant

The packaged all-MiniLM-L6-v2 with a new 7-class head, one thread, bf16 autocast (the CPU's native bf16), fused
AdamW, gradient clipping at 1.0, batch 16 of real rows (bench/quality_data/man-section-6k, the first --rows of a
seeded shuffle, truncated at 256 tokens, padded to a multiple of 16), in their shuffled order. Variants:
  eager        transformers' eager attention and PyTorch's dropout: tuneforge's CPU bf16 step before 2026-12-03
  sdpa         transformers' default SDPA attention (what a plain Trainer recipe runs)
  mask         eager attention with the mask made in bf16 (engine/precision.py cpu_bf16_attention)
  tuneforge    `mask` + the 16-bit dropout mask (engine/dropout.py cpu_dropout): tuneforge's step now
  no-dropout   `mask` with every dropout probability 0: what dropout costs at all (not the same training)
The first step of each variant is a warm-up, not timed; tokens/s counts real (unpadded) tokens.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = ["eager", "sdpa", "mask", "tuneforge", "no-dropout"]


def batches(rows: int, seed: int) -> list[list[list[int]]]:
    from cpu_whole_command import model_path
    from transformers import AutoTokenizer

    with open(ROOT / "bench" / "quality_data" / "man-section-6k" / "train.csv", newline="") as fh:
        texts = [r["text"] for r in csv.DictReader(fh)]
    random.Random(seed).shuffle(texts)
    ids = AutoTokenizer.from_pretrained(model_path())(texts[:rows], truncation=True, max_length=256)["input_ids"]
    return [ids[i:i + 16] for i in range(0, len(ids), 16)]


def padded(batch: list[list[int]]):
    """tuneforge's own padding (data/batching.py): right-padded to a multiple of 16, as its CPU batches."""
    import numpy as np
    import torch

    from tuneforge.data.batching import pad_rows
    from tuneforge.data.prepared import TokenizedSplit

    ids, mask, _ = pad_rows(TokenizedSplit.from_lists(batch), np.arange(len(batch)), 0, pad_to_multiple_of=16)
    return torch.from_numpy(ids), torch.from_numpy(mask)


def run(variant: str, data: list, profile: bool) -> float:
    import torch
    from cpu_whole_command import model_path
    from transformers import AutoModelForSequenceClassification

    from tuneforge.engine.dropout import cpu_dropout
    from tuneforge.engine.precision import cpu_bf16_attention

    torch.manual_seed(0)
    extra = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0} if variant == "no-dropout" else {}
    model = AutoModelForSequenceClassification.from_pretrained(
        model_path(), num_labels=7, attn_implementation="eager" if variant == "eager" else "sdpa", **extra).train()
    if variant in ("mask", "tuneforge", "no-dropout"):
        cpu_bf16_attention(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    labels = torch.zeros(16, dtype=torch.long)

    def step(batch) -> int:
        ids, mask = padded(batch)
        with (cpu_dropout("cpu") if variant == "tuneforge" else contextlib.nullcontext()), \
                torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(input_ids=ids, attention_mask=mask, labels=labels[:len(batch)]).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return int(mask.sum())

    step(data[0])
    started, tokens = time.perf_counter(), 0
    with (torch.profiler.profile() if profile else contextlib.nullcontext()) as prof:
        for batch in data[1:]:
            tokens += step(batch)
    seconds = time.perf_counter() - started
    if profile:
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
    return tokens / seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=336, help="training rows: 21 steps of 16, the first a warm-up")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--only", nargs="*", default=VARIANTS, choices=VARIANTS)
    parser.add_argument("--profile", choices=VARIANTS, help="print torch.profiler's table for this variant")
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, str(ROOT / "bench"))
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()
    data = batches(args.rows, args.seed)
    if args.profile:
        run(args.profile, data, True)
        return 0
    results: dict[str, list[float]] = {v: [] for v in args.only}
    for i in range(args.rounds):  # interleaved, so that drift in the machine's speed hits every variant alike
        for variant in (args.only if i % 2 == 0 else args.only[::-1]):
            results[variant].append(run(variant, data, False))
            print(f"round {i} {variant:<11} {results[variant][-1]:7.0f} tokens/s", flush=True)
    base = sum(results["eager"]) / len(results["eager"]) if "eager" in results else None
    print(f"\n{'variant':<12}{'tokens/s (mean)':>16}{'x eager':>9}   rounds")
    for variant, values in results.items():
        mean = sum(values) / len(values)
        ratio = f"{mean / base:.2f}x" if base else "-"
        print(f"{variant:<12}{mean:>16.0f}{ratio:>9}   {' '.join(f'{v:.0f}' for v in values)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
