"""Text and text-pair classification with any AutoModelForSequenceClassification.

>>> from tuneforge.tasks import get_task
>>> task = get_task("classification")
>>> data = task.prepare_data(load_config("run.yaml"))     # doctest: +SKIP
>>> data.label_names                                       # doctest: +SKIP
['negative', 'positive']

The loss is computed here from the logits (summed per example; the engine normalises over the whole
accumulation window), so the model's own loss is never used.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np

from tuneforge.config.schema import RunConfig
from tuneforge.data.batching import pad_rows
from tuneforge.data.cache import cache_root, cached_tokenize, tokenize_in_memory
from tuneforge.data.checks import fingerprint
from tuneforge.data.labels import class_weight_vector, encode_labels, imbalance_warning
from tuneforge.data.pipeline import finish_splits, read_and_clean
from tuneforge.data.prepared import PreparedData, TokenizedSplit
from tuneforge.tasks.base import TaskBase, TaskSpec
from tuneforge.tasks.loading import load_model, load_tokenizer, model_max_length, pin_revision, resolve_length
from tuneforge.tasks.tokenize import length_stats, tokenize_texts, tokenizer_fingerprint

# Learning rate by encoder width (hidden size): a small encoder (all-MiniLM-L6-v2, 384) fine-tuned far better at
# 1e-4 than at the old 2e-5 on every benchmark set measured (docs/QUALITY.md); base (768) and large (1024+) widths
# follow the published grids, which the benchmark cannot test offline (no such checkpoint here): ELECTRA (Clark
# et al. 2020) uses 3e-4 / 1e-4 / 5e-5 for small / base / large, BERT (Devlin et al. 2019) searches 2e-5..5e-5
# for base, RoBERTa (Liu et al. 2019) 1e-5..3e-5. The step between widths is why a rule, not one rate: the old
# 2e-5 suits a large encoder and starves a small one.
LEARNING_RATES = ((512, 1e-4, "encoder width <= 512"), (768, 3e-5, "encoder width 513-768"),
                  (None, 1.5e-5, "encoder width > 768"))


# Training budget: small data needs more optimizer steps than 3 epochs give (Mosbach et al. 2021, "On the
# stability of fine-tuning BERT"; Zhang et al. 2021, "Revisiting few-sample BERT fine-tuning"): enough epochs
# for MIN_STEPS optimizer steps, between MIN_EPOCHS and MAX_EPOCHS, over a full schedule (stopping a long linear
# schedule early leaves the learning rate high: docs/QUALITY.md); the best validation checkpoint is the one kept.
MIN_EPOCHS, MAX_EPOCHS, MIN_STEPS = 3, 6, 600


def training_budget(rows: int, rows_per_step: int) -> tuple[float, str]:
    """(epochs, why) for `rows` training rows at `rows_per_step` rows per optimizer step."""
    per_epoch = max(1, -(-rows // max(1, rows_per_step)))
    epochs = min(MAX_EPOCHS, max(MIN_EPOCHS, -(-MIN_STEPS // per_epoch)))
    return float(epochs), (f"{per_epoch} steps per epoch: at least {MIN_STEPS} steps, {MIN_EPOCHS} to {MAX_EPOCHS} "
                           "epochs")


def learning_rate_for(model_config: Any) -> tuple[float, str]:
    width = getattr(model_config, "hidden_size", None) or getattr(model_config, "d_model", None) or \
        getattr(model_config, "n_embd", None)
    for limit, lr, why in LEARNING_RATES:
        if limit is None or (width is not None and width <= limit):
            return lr, f"{why} (hidden size {width})" if width else why
    raise AssertionError("unreachable: the last rule has no limit")



class ClassificationTask(TaskBase):
    def __init__(self, spec: TaskSpec) -> None:
        super().__init__(spec)
        self.class_weights: list[float] | None = None  # training.class_weights, set by tokenize

    # ---- data (no torch) -------------------------------------------------------------------------
    def text_columns(self, config: RunConfig) -> list[str]:
        d = config.data
        return [d.text_column] + ([d.text_pair_column] if d.text_pair_column else [])

    def prepare_data(self, config: RunConfig) -> PreparedData:
        d = config.data
        text_columns = self.text_columns(config)
        tables, report = read_and_clean(d, {"data.text_column": d.text_column,
                                            "data.text_pair_column": d.text_pair_column,
                                            "data.label_column": d.label_column}, text_columns)
        names, ids = encode_labels(tables, d.label_column)
        for split, table in tables.items():
            table.columns[d.label_column] = [names[i] for i in ids[split]]  # normalised label names
        tables = finish_splits(tables, report, d, config.training.seed, text_columns, d.label_column,
                               stratify=True)
        for split, table in tables.items():
            counts = {name: 0 for name in names}
            for label in table.columns[d.label_column]:
                counts[label] += 1
            report.splits[split].label_counts = counts
        warning = imbalance_warning(report.splits["train"].label_counts,
                                    weighted=config.training.class_weights == "auto")
        if warning:
            report.warnings.append(warning)
        return PreparedData(tables, report, names,
                            fingerprint([tables["train"]], text_columns + [d.label_column]))

    def read_eval_file(self, config: RunConfig, model_config: Any) -> tuple[Any, Any, list[str]]:
        """Read config.data.train_file as labelled evaluation data for a trained model (its labels only)."""
        from tuneforge.errors import UserError

        d = config.data
        tables, report = read_and_clean(d, {"data.text_column": d.text_column,
                                            "data.text_pair_column": d.text_pair_column,
                                            "data.label_column": d.label_column}, self.text_columns(config))
        table = tables["train"]
        label_names = [model_config.id2label[i] for i in range(model_config.num_labels)]
        column = table.columns[d.label_column]
        for i, value in enumerate(column):
            label = str(value).strip() if value is not None else None
            if label not in label_names:
                what = "is empty" if label in (None, "") else f"holds {label!r}, a label the model does not know"
                raise UserError(f"{table.where(i)}: column {d.label_column!r} {what} "
                                f"(model labels: {', '.join(label_names)})")
            column[i] = label
        table.name = "eval"
        report.splits["eval"] = report.splits.pop("train")
        return table, report, label_names

    # ---- model ---------------------------------------------------------------------------------------
    def auto_class(self) -> Any:
        from transformers import AutoModelForSequenceClassification

        return AutoModelForSequenceClassification

    def load(self, config: RunConfig, data: PreparedData) -> tuple[Any, Any, str | None]:
        from transformers import AutoModelForSequenceClassification

        revision, commit = pin_revision(config.model)
        tokenizer = load_tokenizer(config.model, revision)
        names = data.label_names
        model = load_model(
            AutoModelForSequenceClassification, config.model, revision, tokenizer, num_labels=len(names),
            id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)},
            ignore_mismatched_sizes=True)  # a checkpoint fine-tuned for other labels gets a new head
        if tokenizer.pad_token_id is None:  # GPT-style models: pad with EOS, the model finds the last token
            tokenizer.pad_token = tokenizer.eos_token
        model.config.pad_token_id = tokenizer.pad_token_id
        return model, tokenizer, commit

    def resolve(self, config: RunConfig, model: Any, tokenizer: Any, data: PreparedData
                ) -> tuple[RunConfig, list[str]]:
        """Defaults left null (docs/QUALITY.md has the evidence): the learning rate from the model's width, the
        number of epochs from the training rows."""
        import dataclasses

        t, notes = config.training, []
        if t.learning_rate is None:
            lr, why = learning_rate_for(model.config)
            t = dataclasses.replace(t, learning_rate=lr)
            notes.append(f"learning_rate {lr:g} ({why})")
        if t.num_train_epochs is None:
            epochs, why = training_budget(len(data.splits["train"]),
                                          t.per_device_train_batch_size * t.gradient_accumulation_steps)
            t = dataclasses.replace(t, num_train_epochs=epochs)
            notes.append(f"num_train_epochs {epochs:g} ({why})")
        return dataclasses.replace(config, training=t), notes

    def max_length(self, config: RunConfig, tokenizer: Any, model_config: Any) -> int:
        return resolve_length(config.data.max_length, "max_length", tokenizer, model_config, cap=512)

    def tokenize(self, tokenizer: Any, data: PreparedData, config: RunConfig, max_length: int
                 ) -> dict[str, TokenizedSplit]:
        d = config.data
        index = {n: i for i, n in enumerate(data.label_names)}
        columns = self.text_columns(config)
        tokenizer_hash = tokenizer_fingerprint(tokenizer)
        out = {}
        for name, table in data.splits.items():
            texts = table.columns[d.text_column]
            pairs = table.columns[d.text_pair_column] if d.text_pair_column else None
            labels = [index[label] for label in table.columns[d.label_column]]
            parts = {"data": fingerprint([table], columns), "tokenizer": tokenizer_hash, "max_length": max_length,
                     "v": 1}
            split = cached_tokenize(cache_root(d.preprocessing_cache_dir), parts,
                                    partial(tokenize_texts, tokenizer, texts, pairs, max_length))
            split.labels = np.asarray(labels, dtype=np.int64)
            data.report.splits[name].token_lengths, data.report.splits[name].truncated_percent = \
                length_stats(split, max_length)
            out[name] = split
        if "train" in data.report.splits:  # (evaluating a finished run tokenizes an eval split only)
            counts = data.report.splits["train"].label_counts
            self.class_weights = class_weight_vector(config.training.class_weights, data.label_names, counts)
        data.report.max_length = max_length
        return out

    # ---- batches, loss, metrics (torch) ------------------------------------------------------------
    def collate(self, split: TokenizedSplit, indices: np.ndarray, pad_id: int,
                pad_to_multiple_of: int | None = None) -> dict[str, Any]:
        import torch

        ids, mask, types = pad_rows(split, indices, pad_id, pad_to_multiple_of)
        batch = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}
        if types is not None:
            batch["token_type_ids"] = torch.from_numpy(types)
        if split.labels is not None:
            batch["labels"] = torch.from_numpy(split.labels[indices])
            if self.class_weights is not None:  # per-example weight: the loss sums, the engine divides by these
                batch["label_weights"] = torch.tensor(self.class_weights, dtype=torch.float32)[batch["labels"]]
        return batch

    def num_items(self, batch: dict[str, Any]) -> float:
        """Examples in the batch; with class weights, the sum of their weights (weighted mean over the window)."""
        if "label_weights" in batch:
            return float(batch["label_weights"].sum())
        return int(batch["labels"].shape[0])

    def logits(self, model: Any, batch: dict[str, Any]) -> Any:
        inputs = {k: v for k, v in batch.items() if k not in ("labels", "label_weights")}
        return model(**inputs).logits.float()

    def targets(self, batch: dict[str, Any]) -> Any:
        return batch["labels"]  # one label per row

    def loss(self, model: Any, batch: dict[str, Any]) -> Any:
        import torch.nn.functional as F

        losses = F.cross_entropy(self.logits(model, batch), batch["labels"], reduction="none")
        if "label_weights" in batch:
            losses = losses * batch["label_weights"]
        return losses.sum()

    def eval_step(self, model: Any, batch: dict[str, Any], state: dict[str, Any]) -> None:
        import torch.nn.functional as F

        logits = self.logits(model, batch)
        loss = F.cross_entropy(logits, batch["labels"], reduction="sum")
        state["loss_sum"] = state.get("loss_sum", 0.0) + float(loss)
        pred, true = logits.argmax(-1).cpu().numpy(), batch["labels"].cpu().numpy()
        state.setdefault("pred", []).append(pred)
        state.setdefault("true", []).append(true)
        if "errors" in state:  # error analysis: the most confidently wrong rows, accuracy per length
            confidence = logits.softmax(-1).max(-1).values.cpu().numpy()
            wrong = pred != true
            state["errors"].add(state["rows"], values=(~wrong).astype(np.float64),
                                badness=np.where(wrong, confidence, np.nan),
                                extra=[{"predicted_id": int(p), "confidence": round(float(c), 4)}
                                       for p, c in zip(pred, confidence)])

    def eval_metrics(self, state: dict[str, Any], data: PreparedData) -> dict[str, Any]:
        from tuneforge.evaluate.classification import classification_metrics

        y_true, y_pred = np.concatenate(state["true"]), np.concatenate(state["pred"])
        return {"loss": state["loss_sum"] / max(1, len(y_true)),
                **classification_metrics(y_true.tolist(), y_pred.tolist(), data.label_names)}

    def error_row(self, config: RunConfig, split: TokenizedSplit, table: Any, tokenizer: Any,
                  row: int) -> dict[str, Any]:
        from tuneforge.evaluate.errors import quote

        d = config.data
        if table is None or row >= len(table):
            return {}
        out = {"where": table.where(row), "text": quote(table.columns[d.text_column][row])}
        if d.text_pair_column:
            out["text_pair"] = quote(table.columns[d.text_pair_column][row])
        return {**out, "label": table.columns[d.label_column][row]}

    # ---- inference ---------------------------------------------------------------------------------
    def serve_schema(self, config: RunConfig, ctx: Any) -> Any:
        """POST /v1/classify; `text_pairs` only for a run trained with a text_pair_column."""
        from tuneforge.deploy.schemas import ServeRoute, classify_schema

        pairs = bool(config.data.text_pair_column)
        request, response = classify_schema(ctx, pairs)
        return ServeRoute("/v1/classify", "labels and probabilities", request, response, pairs=pairs)

    def predict(self, model: Any, tokenizer: Any, texts: list[str], config: RunConfig, *,
                pairs: list[str] | None = None, batch_size: int = 64, max_length: int | None = None,
                max_new_tokens: int | None = None) -> list[dict[str, Any]]:
        """label, probability and every label's probability per text (`max_new_tokens`: nothing generates)."""
        import torch

        limit = max_length or model_max_length(tokenizer, model.config)
        split = tokenize_in_memory(partial(tokenize_texts, tokenizer, texts, pairs, limit))
        device = model.device
        id2label = model.config.id2label
        results: list[dict[str, Any] | None] = [None] * len(texts)
        model.eval()
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                idx = np.arange(start, min(start + batch_size, len(texts)))
                batch = {k: v.to(device) for k, v in self.collate(split, idx, tokenizer.pad_token_id).items()}
                probs = torch.softmax(self.logits(model, batch), dim=-1).cpu()
                for row, i in enumerate(idx):
                    p = probs[row]
                    top = int(p.argmax())
                    results[i] = {"label": id2label[top], "probability": float(p[top]),
                                  "probabilities": {id2label[j]: float(p[j]) for j in range(len(p))}}
        return results  # type: ignore[return-value]

