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
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from tuneforge.tasks.loading import quiet_transformers

        quiet_transformers()
        self.run = run
        self.config = run.config
        self.task = get_task(self.config.task)
        self.tokenizer = AutoTokenizer.from_pretrained(run.path)
        self.model = AutoModelForSequenceClassification.from_pretrained(run.path)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model.to(self.device).eval()
        self.max_length = run.info.get("max_length")

    def predict(self, texts: list[str] | str, pairs: list[str] | None = None, batch_size: int = 64
                ) -> list[dict[str, Any]]:
        if isinstance(texts, str):
            texts = [texts]
        return self.task.predict(self.model, self.tokenizer, list(texts), pairs, batch_size, self.max_length)


def load(ref: str | os.PathLike, device: str | None = None) -> LoadedRun:
    return LoadedRun(resolve_run(ref), device)


def evaluate_run(ref: str | os.PathLike, data_file: str, name: str | None = None) -> dict[str, Any]:
    """Evaluate a finished run on a labelled file (same columns as training); writes eval/<name>/metrics.json."""
    from tuneforge.data.pipeline import read_and_clean
    from tuneforge.data.prepared import PreparedData

    run = resolve_run(ref)
    cfg = run.config
    data_cfg = dataclasses.replace(cfg.data, train_file=data_file, validation_file=None, test_file=None,
                                   dataset_name=None)
    task = get_task(cfg.task)
    text_columns = task.text_columns(cfg)
    tables, report = read_and_clean(data_cfg, {"data.text_column": data_cfg.text_column,
                                               "data.text_pair_column": data_cfg.text_pair_column,
                                               "data.label_column": data_cfg.label_column}, text_columns)
    table = tables["train"]
    loaded = LoadedRun(run)
    label_names = [loaded.model.config.id2label[i] for i in range(loaded.model.config.num_labels)]
    known = set(label_names)
    column = table.columns[data_cfg.label_column]
    for i, value in enumerate(column):
        label = str(value).strip() if value is not None else None
        if label not in known:
            what = "is empty" if label in (None, "") else f"holds {label!r}, a label the model does not know"
            raise UserError(f"{table.where(i)}: column {data_cfg.label_column!r} {what} "
                            f"(model labels: {', '.join(label_names)})")
        column[i] = label
    table.name = "eval"
    report.splits["eval"] = report.splits.pop("train")
    data = PreparedData({"eval": table}, report, label_names)
    splits = task.tokenize(loaded.tokenizer, data, dataclasses.replace(cfg, data=data_cfg),
                           loaded.max_length or 512)
    from tuneforge.engine.loop import evaluate

    pad_id = loaded.tokenizer.pad_token_id or 0
    metrics = evaluate(loaded.model, task, splits["eval"], data, cfg.training.per_device_eval_batch_size,
                       loaded.device, pad_id)
    out_dir = run.path / "eval" / (name or Path(data_file).stem)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_json(out_dir / "metrics.json", {"data_file": str(data_file), "rows": len(table), **metrics})
    return metrics
