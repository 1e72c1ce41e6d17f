"""Text and text-pair classification with any AutoModelForSequenceClassification.

>>> from tuneforge.tasks import get_task
>>> task = get_task("classification")
>>> data = task.prepare_data(load_config("run.yaml"))     # doctest: +SKIP
>>> data.label_names                                       # doctest: +SKIP
['negative', 'positive']

The loss is computed here from the logits (summed per example; the engine normalises over the whole
accumulation window), so the model's own loss is never used.

Three problem types (data.problem_type, transformers' spellings; docs/classification-problem-types.md):
single-label (softmax + cross-entropy, here), multi-label (sigmoid + BCE, thresholds tuned on validation:
tasks/multilabel.py) and regression (MSE on a standardised target folded back into the saved head:
tasks/regression.py). The problem type is found in `prepare_data` (lists in the label column mean multi-label;
regression only when configured), written into run_config.yaml by `resolve` and into the model's config
(`problem_type`, which also makes plain transformers use the matching loss); `predict` reads it from the model.
"""

from __future__ import annotations

import os
from functools import partial
from typing import Any

import numpy as np

from tuneforge.config.schema import RunConfig
from tuneforge.data.batching import pad_rows
from tuneforge.data.cache import cache_root, cached_tokenize, tokenize_in_memory
from tuneforge.data.checks import fingerprint
from tuneforge.data.labels import (
    MULTI_LABEL,
    REGRESSION,
    SINGLE_LABEL,
    class_weight_vector,
    detect_problem_type,
    encode_label_sets,
    encode_labels,
    imbalance_warning,
    iterative_split,
    label_sets,
    multi_hot,
    parse_targets,
    pos_weight_vector,
    target_scale,
    weight_power,
)
from tuneforge.data.pipeline import as_eval_split, finish_splits, read_and_clean
from tuneforge.data.prepared import PreparedData, TokenizedSplit
from tuneforge.errors import ConfigError
from tuneforge.tasks.base import TaskBase, TaskSpec
from tuneforge.tasks.encoder_defaults import HEAD_LR_FACTOR, LABEL_SMOOTHING, learning_rate_for, training_budget
from tuneforge.tasks.loading import load_model, load_tokenizer, model_max_length, pin_revision, resolve_length
from tuneforge.tasks.problem_types import DEFAULT_METRIC, check_problem_keys, model_problem_type, problem_type_of
from tuneforge.tasks.tokenize import length_stats, tokenize_texts, tokenizer_fingerprint

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class ClassificationTask(TaskBase):
    def __init__(self, spec: TaskSpec) -> None:
        super().__init__(spec)
        self.class_weights: list[float] | None = None  # training.class_weights, set by tokenize
        self.label_smoothing = 0.0  # training.label_smoothing_factor (single-label), set by tokenize
        self.problem = SINGLE_LABEL  # set by prepare_data / read_eval_file / tokenize
        self.pos_weight: list[float] | None = None  # multi-label: BCE pos_weight per label (class_weights)
        self.scale: tuple[float, float] | None = None  # regression: (mean, std) while the model is standardised
        self.target_std = 1.0  # regression: the training target's std (the loss's unit)
        self.tuning: Any = None  # multi-label: tasks/multilabel.py Tuning of a training run
        self.tune_split: TokenizedSplit | None = None  # multi-label: the split thresholds are tuned on

    def best_metric(self, config: RunConfig, data: PreparedData) -> str:
        """metric_for_best_model, else the default of the data's problem type (f1_macro, f1_micro, rmse)."""
        metric = config.training.metric_for_best_model
        return metric.removeprefix("eval_") if metric else DEFAULT_METRIC[problem_type_of(config, data)]

    # ---- data (no torch) -------------------------------------------------------------------------
    def text_columns(self, config: RunConfig) -> list[str]:
        d = config.data
        return [d.text_column] + ([d.text_pair_column] if d.text_pair_column else [])

    def prepare_data(self, config: RunConfig) -> PreparedData:
        d = config.data
        if d.label_delimiter is not None and not d.label_delimiter:
            raise ConfigError("data.label_delimiter: must not be empty; give the character(s) between labels, e.g. "
                              "label_delimiter=\"'|'\" (YAML reads a bare | or > as an empty text block: quote it)")
        text_columns = self.text_columns(config)
        tables, report = read_and_clean(d, {"data.text_column": d.text_column,
                                            "data.text_pair_column": d.text_pair_column,
                                            "data.label_column": d.label_column}, text_columns)
        self.problem, note = detect_problem_type(tables, d.label_column, d.problem_type, d.label_delimiter)
        check_problem_keys(config, self.problem)
        if self.problem == MULTI_LABEL:
            return self._prepare_multi_label(config, tables, report, note)
        if self.problem == REGRESSION:
            return self._prepare_regression(config, tables, report)
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
                                    weighted=config.training.class_weights
                                    if weight_power(config.training.class_weights) is not None else None)
        if warning:
            report.warnings.append(warning)
        return PreparedData(tables, report, names,
                            fingerprint([tables["train"]], text_columns + [d.label_column]),
                            info={"problem_type": SINGLE_LABEL})

    def _prepare_multi_label(self, config: RunConfig, tables: dict[str, Any], report: Any, note: str | None
                             ) -> PreparedData:
        from tuneforge.evaluate.classification import MIN_POSITIVES_TO_TUNE

        d, text_columns = config.data, self.text_columns(config)
        names, sets = encode_label_sets(tables, d.label_column, d.label_delimiter)
        for split, table in tables.items():
            table.columns[d.label_column] = [tuple(row) for row in sets[split]]  # sorted, hashable
        tables = finish_splits(tables, report, d, config.training.seed, text_columns, d.label_column,
                               stratify=True, splitter=iterative_split)
        for split, table in tables.items():
            counts = {name: 0 for name in names}
            for row in table.columns[d.label_column]:
                for label in row:
                    counts[label] += 1
            report.splits[split].label_counts = counts
        rare = [n for n, c in report.splits["validation"].label_counts.items() if c < MIN_POSITIVES_TO_TUNE]
        if rare:
            report.warnings.append(f"{len(rare)} label(s) have fewer than {MIN_POSITIVES_TO_TUNE} validation rows "
                                   f"({', '.join(rare[:6])}{' ...' if len(rare) > 6 else ''}): their decision "
                                   "thresholds stay at 0.5 (too few rows to tune on)")
        pos_weight_vector(config.training.class_weights, names, {}, 1)  # an unknown label name fails here
        return PreparedData(tables, report, names, fingerprint([tables["train"]], text_columns + [d.label_column]),
                            info={"problem_type": MULTI_LABEL, "problem_note": note})

    def _prepare_regression(self, config: RunConfig, tables: dict[str, Any], report: Any) -> PreparedData:
        d, text_columns = config.data, self.text_columns(config)
        values = parse_targets(tables, d.label_column)
        for split, table in tables.items():
            table.columns[d.label_column] = values[split]
        tables = finish_splits(tables, report, d, config.training.seed, text_columns, d.label_column,
                               stratify=False)
        mean, std = target_scale(list(tables["train"].columns[d.label_column]), tables["train"].source,
                                 d.label_column)
        return PreparedData(tables, report, [], fingerprint([tables["train"]], text_columns + [d.label_column]),
                            info={"problem_type": REGRESSION, "target_mean": mean, "target_std": std})

    def read_eval_file(self, config: RunConfig, model_config: Any) -> tuple[Any, Any, list[str]]:
        """Read config.data.train_file as labelled evaluation data for a trained model (its labels only)."""
        from tuneforge.errors import UserError

        d = config.data
        tables, report = read_and_clean(d, {"data.text_column": d.text_column,
                                            "data.text_pair_column": d.text_pair_column,
                                            "data.label_column": d.label_column}, self.text_columns(config))
        table = tables["train"]
        self.problem = model_problem_type(model_config)
        if self.problem == REGRESSION:
            table.columns[d.label_column] = parse_targets({"eval": table}, d.label_column)["eval"]
            label_names: list[str] = []
        else:
            label_names = [model_config.id2label[i] for i in range(model_config.num_labels)]
        if self.problem == MULTI_LABEL:
            known, rows = set(label_names), label_sets(table, d.label_column, d.label_delimiter)
            for i, row in enumerate(rows):
                unknown = [label for label in row if label not in known]
                if unknown:
                    raise UserError(f"{table.where(i)}: column {d.label_column!r} holds {unknown[0]!r}, a label the "
                                    f"model does not know (model labels: {', '.join(label_names)})")
            table.columns[d.label_column] = [tuple(row) for row in rows]
        if self.problem != SINGLE_LABEL:
            as_eval_split(tables, report)
            return table, report, label_names
        column = table.columns[d.label_column]
        for i, value in enumerate(column):
            label = str(value).strip() if value is not None else None
            if label not in label_names:
                what = "is empty" if label in (None, "") else f"holds {label!r}, a label the model does not know"
                raise UserError(f"{table.where(i)}: column {d.label_column!r} {what} "
                                f"(model labels: {', '.join(label_names)})")
            column[i] = label
        as_eval_split(tables, report)
        return table, report, label_names

    # ---- model ---------------------------------------------------------------------------------------
    def auto_class(self) -> Any:
        from transformers import AutoModelForSequenceClassification

        return AutoModelForSequenceClassification

    def load(self, config: RunConfig, data: PreparedData) -> tuple[Any, Any, str | None]:
        from transformers import AutoModelForSequenceClassification

        revision, commit = pin_revision(config.model)
        tokenizer = load_tokenizer(config.model, revision)
        problem = problem_type_of(config, data)
        names = data.label_names if problem != REGRESSION else [config.data.label_column]
        extra = {"problem_type": problem} if problem != SINGLE_LABEL else {}  # plain transformers: BCE / MSE
        model = load_model(
            AutoModelForSequenceClassification, config.model, revision, tokenizer, num_labels=len(names),
            id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)},
            ignore_mismatched_sizes=True, **extra)  # a checkpoint fine-tuned for other labels gets a new head
        if problem == REGRESSION:
            from tuneforge.tasks.regression import SCALE_KEY, fold_scale, head_linear

            mean = fold_scale(head_linear(model), data.info["target_mean"], data.info["target_std"])
            self.scale = (mean, data.info["target_std"])
            setattr(model.config, SCALE_KEY, {"column": config.data.label_column, "mean": data.info["target_mean"],
                                              "std": data.info["target_std"], "folded_mean": mean})
        if problem == MULTI_LABEL:
            from tuneforge.tasks.multilabel import Tuning

            self.tuning = Tuning()
            self.tuning.attach(model)
        if tokenizer.pad_token_id is None:  # GPT-style models: pad with EOS, the model finds the last token
            tokenizer.pad_token = tokenizer.eos_token
        model.config.pad_token_id = tokenizer.pad_token_id
        return model, tokenizer, commit

    def resolve(self, config: RunConfig, model: Any, tokenizer: Any, data: PreparedData
                ) -> tuple[RunConfig, list[str]]:
        """Defaults left null (docs/QUALITY.md has the evidence): the learning rate from the model's width, the
        new head's rate from it (single-label, full fine-tuning, no freezing, a numeric rate: what was measured), label
        smoothing (single-label), the number of epochs from the training rows."""
        import dataclasses

        t, notes = config.training, []
        problem = problem_type_of(config, data)
        if data.info.get("problem_note"):
            notes.append(f"problem_type {problem} ({data.info['problem_note']})")
        if problem == REGRESSION:
            notes.append(f"problem_type regression: target {config.data.label_column!r} standardised for training "
                         f"(training mean {data.info['target_mean']:.6g}, std {data.info['target_std']:.6g}), folded "
                         "back into the saved head")
        if config.data.problem_type != problem:
            config = dataclasses.replace(config, data=dataclasses.replace(config.data, problem_type=problem))
        if t.metric_for_best_model is None:
            t = dataclasses.replace(t, metric_for_best_model=DEFAULT_METRIC[problem])
            notes.append(f"metric_for_best_model {DEFAULT_METRIC[problem]} ({problem} default)")
        if t.learning_rate is None:
            lr, why = learning_rate_for(model.config)
            t = dataclasses.replace(t, learning_rate=lr)
            notes.append(f"learning_rate {lr:g} ({why})")
        if (t.head_learning_rate is None and t.learning_rate != "auto" and problem == SINGLE_LABEL
                and not config.lora.enabled and not config.freeze.enabled
                and getattr(model, "tuneforge_new_keys", None)):
            t = dataclasses.replace(t, head_learning_rate=HEAD_LR_FACTOR * t.learning_rate)
            notes.append(f"head_learning_rate {t.head_learning_rate:g} ({HEAD_LR_FACTOR:g}x learning_rate for the "
                         "new head)")
        if t.label_smoothing_factor is None and problem == SINGLE_LABEL:
            t = dataclasses.replace(t, label_smoothing_factor=LABEL_SMOOTHING)
            notes.append(f"label_smoothing_factor {LABEL_SMOOTHING:g} (single-label default)")
        if t.num_train_epochs is None:
            processes = int(os.environ.get("WORLD_SIZE", "1") or 1)  # the launcher's count: steps of the global batch
            epochs, why = training_budget(len(data.splits["train"]), t.per_device_train_batch_size
                                          * t.gradient_accumulation_steps * max(1, processes))
            t = dataclasses.replace(t, num_train_epochs=epochs)
            notes.append(f"num_train_epochs {epochs:g} ({why})")
        return dataclasses.replace(config, training=t), notes

    def max_length(self, config: RunConfig, tokenizer: Any, model_config: Any) -> int:
        return resolve_length(config.data.max_length, "max_length", tokenizer, model_config, cap=512)

    def tokenize(self, tokenizer: Any, data: PreparedData, config: RunConfig, max_length: int
                 ) -> dict[str, TokenizedSplit]:
        d = config.data
        self.problem = problem_type_of(config, data)
        index = {n: i for i, n in enumerate(data.label_names)}
        columns = self.text_columns(config)
        tokenizer_hash = tokenizer_fingerprint(tokenizer)
        out = {}
        for name, table in data.splits.items():
            texts = table.columns[d.text_column]
            pairs = table.columns[d.text_pair_column] if d.text_pair_column else None
            parts = {"data": fingerprint([table], columns), "tokenizer": tokenizer_hash, "max_length": max_length,
                     "v": 1}
            split = cached_tokenize(cache_root(d.preprocessing_cache_dir), parts,
                                    partial(tokenize_texts, tokenizer, texts, pairs, max_length))
            split.labels = self._label_array(table.columns[d.label_column], data.label_names, index)
            data.report.splits[name].token_lengths, data.report.splits[name].truncated_percent = \
                length_stats(split, max_length)
            out[name] = split
        training = "train" in data.splits  # (evaluating a finished run or an export tokenizes one split only)
        if self.problem == SINGLE_LABEL and "train" in data.report.splits:
            counts = data.report.splits["train"].label_counts
            self.class_weights = class_weight_vector(config.training.class_weights, data.label_names, counts)
            self.label_smoothing = config.training.label_smoothing_factor or 0.0
        if self.problem == MULTI_LABEL and training:
            self.pos_weight = pos_weight_vector(config.training.class_weights, data.label_names,
                                                data.report.splits["train"].label_counts, len(data.splits["train"]))
            self.tune_split = out.get("validation")
        if self.problem == REGRESSION:
            self.scale = self.scale if training else None  # a model loaded from disk answers in target units
            self.target_std = float(data.info.get("target_std") or 1.0)
        data.report.max_length = max_length
        return out

    def _label_array(self, values: Any, names: list[str], index: dict[str, int]) -> np.ndarray:
        if self.problem == MULTI_LABEL:
            return multi_hot([list(v) for v in values], names)
        if self.problem == REGRESSION:
            return np.asarray(values, dtype=np.float32)
        return np.asarray([index[label] for label in values], dtype=np.int64)

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
            if self.class_weights is not None and self.problem == SINGLE_LABEL:  # per-example weight: the loss
                # sums, the engine divides by these
                batch["label_weights"] = torch.tensor(self.class_weights, dtype=torch.float32)[batch["labels"]]
        if split is self.tune_split and split is not None:
            batch["tune_thresholds"] = True  # multi-label: this evaluation tunes the decision thresholds
        return batch

    def num_items(self, batch: dict[str, Any]) -> float:
        """Examples in the batch; with class weights, the sum of their weights (weighted mean over the window)."""
        if "label_weights" in batch:
            return float(batch["label_weights"].sum())
        return int(batch["labels"].shape[0])

    def logits(self, model: Any, batch: dict[str, Any]) -> Any:
        inputs = {k: v for k, v in batch.items() if k in MODEL_INPUTS}
        return model(**inputs).logits.float()

    def targets(self, batch: dict[str, Any]) -> Any:
        return batch["labels"]  # one label per row

    def loss(self, model: Any, batch: dict[str, Any]) -> Any:
        import torch.nn.functional as F

        if self.problem == MULTI_LABEL:
            from tuneforge.tasks import multilabel

            return multilabel.loss(self.logits(model, batch), batch["labels"], self.pos_weight)
        if self.problem == REGRESSION:
            from tuneforge.tasks import regression

            return regression.loss(self.logits(model, batch), batch["labels"], self.scale or (0.0, 1.0))
        losses = F.cross_entropy(self.logits(model, batch), batch["labels"], reduction="none",
                                 label_smoothing=self.label_smoothing)
        if "label_weights" in batch:
            losses = losses * batch["label_weights"]
        return losses.sum()

    def init_eval_state(self, model: Any, tokenizer: Any, config: RunConfig) -> dict[str, Any]:
        if self.problem == MULTI_LABEL:
            from tuneforge.tasks import multilabel

            return multilabel.init_state(model)
        return {}

    def eval_step(self, model: Any, batch: dict[str, Any], state: dict[str, Any]) -> None:
        import torch.nn.functional as F

        logits = self.logits(model, batch)
        if self.problem == MULTI_LABEL:
            from tuneforge.tasks import multilabel

            return multilabel.eval_step(logits, batch, state)
        if self.problem == REGRESSION:
            from tuneforge.tasks import regression

            return regression.eval_step(logits, batch, state, self.scale, self.target_std)
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

        if self.problem == MULTI_LABEL:
            from tuneforge.tasks import multilabel

            return multilabel.eval_metrics(state, data.label_names, self.tuning)
        if self.problem == REGRESSION:
            from tuneforge.tasks import regression

            return regression.eval_metrics(state)
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
        problem = problem_type_of(config)
        outputs = {SINGLE_LABEL: "label", MULTI_LABEL: "labels", REGRESSION: "score"}[problem]
        request, response = classify_schema(ctx, pairs, outputs=outputs)
        summary = {"label": "labels and probabilities", "labels": "label sets (per-label thresholds) and scores",
                   "score": "predicted values"}[outputs]
        return ServeRoute("/v1/classify", summary, request, response, pairs=pairs)

    def predict(self, model: Any, tokenizer: Any, texts: list[str], config: RunConfig, *,
                pairs: list[str] | None = None, batch_size: int = 64, max_length: int | None = None,
                max_new_tokens: int | None = None) -> list[dict[str, Any]]:
        """Per text: single-label `label`, `probability` and every label's `probabilities`; multi-label `labels`
        (the set at the saved thresholds) and `scores`; regression `score` (`max_new_tokens`: nothing generates)."""
        import torch

        problem = model_problem_type(model.config)
        if problem == MULTI_LABEL:
            from tuneforge.tasks.multilabel import label_names, thresholds_of

            names = label_names(model.config)
            thresholds = thresholds_of(model.config, names)

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
                if problem == MULTI_LABEL:
                    from tuneforge.tasks.multilabel import predict_rows

                    rows = predict_rows(self.logits(model, batch).sigmoid().cpu().numpy(), names, thresholds)
                    results[start:start + len(idx)] = rows
                    continue
                if problem == REGRESSION:
                    from tuneforge.tasks.regression import predict_rows as values

                    results[start:start + len(idx)] = values(self.logits(model, batch))
                    continue
                probs = torch.softmax(self.logits(model, batch), dim=-1).cpu()
                for row, i in enumerate(idx):
                    p = probs[row]
                    top = int(p.argmax())
                    results[i] = {"label": id2label[top], "probability": float(p[top]),
                                  "probabilities": {id2label[j]: float(p[j]) for j in range(len(p))}}
        return results  # type: ignore[return-value]

