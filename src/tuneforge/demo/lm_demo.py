"""`tuneforge demo --task causal_lm`: a small GPT-2 trained from scratch on generated weather bulletins.

>>> from tuneforge.demo.lm_demo import run_lm_demo
>>> run = run_lm_demo()     # doctest: +SKIP

No pretrained GPT-2 can be downloaded here, so this demo shows the causal-LM pipeline (packing, per-document
positions, token-weighted perplexity, generation) on a 0.9M-parameter model learning a templated corpus:
expect well-formed bulletins, not world knowledge.
"""

from __future__ import annotations

import math
import os
from typing import Any

PROMPTS = ["Weather for Lisbon on Friday:", "Weather for Oslo on Sunday: snow flurries"]


def run_lm_demo(output_dir: str | os.PathLike | None = None, quick: bool = False) -> Any:
    import tuneforge
    from tuneforge.demo.recipe import train_recipe
    from tuneforge.demo.tiny_lm import build_tiny_gpt2
    from tuneforge.demo.weather import generate
    from tuneforge.runs.record import RUNS_ROOT
    from tuneforge.runs.report import print_metrics

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    docs = generate()
    data_dir = RUNS_ROOT / "demo-lm-data"
    data_dir.mkdir(parents=True, exist_ok=True)
    files = {}
    for split, texts in docs.items():
        files[split] = data_dir / f"{split}.txt"
        files[split].write_text("\n\n".join(texts) + "\n", encoding="utf-8")
    model = build_tiny_gpt2(docs["train"], RUNS_ROOT / "demo-tiny-gpt2")
    print(f"demo: training a small GPT-2 from scratch on generated weather bulletins ({data_dir})")
    run = train_recipe("causal_lm/tiny_gpt2_demo.yaml", model, files, output_dir,
                       ["num_train_epochs=1", "max_train_samples=500"] if quick else [])
    vocab = len(tuneforge.load(run.path).tokenizer)
    print_metrics({"uniform guess": {"perplexity": float(vocab), "loss": math.log(vocab)},
                   "trained GPT-2": run.metrics["eval"]}, title="validation (token-weighted)")
    for prompt, out in zip(PROMPTS, tuneforge.load(run.path).predict(PROMPTS)):
        print(f"  {prompt}{out['generated_text']}")
    print(f"try: tuneforge generate {run.path} --prompt \"Weather for Perth on Monday:\"")
    return run
