"""Use a finished run: predictions from Python, and evaluation on new labelled data.

>>> import tuneforge
>>> model = tuneforge.load("runs/20261126-070000-classification-bert")     # doctest: +SKIP
>>> model.predict(["the parcel never arrived"])[0]["label"]                  # doctest: +SKIP
'delivery'
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from tuneforge.errors import UserError
from tuneforge.run import Run, _write_json, resolve_run
from tuneforge.tasks import get_task


class LoadedRun:
    """A finished run's model and tokenizer on the best available device, with the task's predict."""

    def __init__(self, run: Run, device: str | None = None) -> None:
        import torch
        from transformers import AutoTokenizer

        from tuneforge.tasks.loading import quiet_transformers
        from tuneforge.tasks.tokenize import tokenizer_fingerprint

        quiet_transformers()
        self.run = run
        self.config = run.config
        self.task = get_task(self.config.task)
        self.tokenizer = AutoTokenizer.from_pretrained(run.path)
        trained_with = run.info.get("tokenizer_fingerprint")
        if trained_with and tokenizer_fingerprint(self.tokenizer) != trained_with:
            raise UserError(f"RUN: the tokenizer files in {run.path} differ from the tokenizer the model was trained "
                            "with (fingerprint in run.json); restore them from the run's checkpoint or retrain")
        self.model = self.task.auto_class().from_pretrained(run.path, use_safetensors=True)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model.to(self.device).eval()
        self.max_length = run.info.get("max_length")

    def predict(self, texts: list[str] | str, pairs: list[str] | None = None, batch_size: int = 32
                ) -> list[dict[str, Any]]:
        """Classification: label, probability, probabilities. seq2seq: generated_text."""
        if isinstance(texts, str):
            texts = [texts]
        return self.task.predict(self.model, self.tokenizer, list(texts), self.config, pairs=pairs,
                                 batch_size=batch_size, max_length=self.max_length)

    def summarize(self, texts: list[str] | str, batch_size: int = 16) -> list[str]:
        if self.config.task != "seq2seq":
            raise UserError(f"RUN: {self.run.path} is a {self.config.task} run; summarize needs a seq2seq run")
        return [r["generated_text"] for r in self.predict(texts, batch_size=batch_size)]


def load(ref: str | os.PathLike, device: str | None = None) -> LoadedRun:
    return LoadedRun(resolve_run(ref), device)


def evaluate_run(ref: str | os.PathLike, data_file: str | None = None, name: str | None = None,
                 split: str | None = None) -> dict[str, Any]:
    """Evaluate a finished run on a labelled file (same columns as training), or on its own `split`
    ("test" or "validation" file from its config). Writes eval/<name>/metrics.json and error_analysis.json/.md."""
    from tuneforge.data.prepared import PreparedData
    from tuneforge.evaluate.errors import evaluate_with_analysis, write_analysis

    run = resolve_run(ref)
    cfg = run.config
    if data_file is None:
        if split not in ("test", "validation"):
            raise UserError("evaluate: give --data FILE, or --split test|validation to use the run's own data")
        data_file = getattr(cfg.data, f"{split}_file")
        if not data_file:
            raise UserError(f"evaluate --split {split}: {run.path} was trained without data.{split}_file "
                            "(a split held out from the training file is not reproducible as a file); "
                            "pass --data FILE")
    data_cfg = dataclasses.replace(cfg.data, train_file=data_file, validation_file=None, test_file=None,
                                   dataset_name=None)
    task = get_task(cfg.task)
    loaded = LoadedRun(run)
    eval_cfg = dataclasses.replace(cfg, data=data_cfg)
    table, report, label_names = task.read_eval_file(eval_cfg, loaded.model.config)
    data = PreparedData({"eval": table}, report, label_names)
    splits = task.tokenize(loaded.tokenizer, data, eval_cfg, loaded.max_length or 512)
    metrics, analysis = evaluate_with_analysis(loaded.model, loaded.tokenizer, task, splits["eval"], data, "eval",
                                               eval_cfg, loaded.device)
    out_dir = run.path / "eval" / (name or split or Path(data_file).stem)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_json(out_dir / "metrics.json", {"data_file": str(data_file), "rows": len(table), **metrics})
    write_analysis({**analysis, "split": str(data_file)}, out_dir)
    return {**metrics, "output_dir": str(out_dir)}
