"""Extractive question answering (SQuAD v1.1 and v2.0) with any AutoModelForQuestionAnswering.

>>> from tuneforge.tasks import get_task
>>> task = get_task("question_answering")
>>> data = task.prepare_data(load_config("qa.yaml"))      # doctest: +SKIP
>>> data.info["version_2_with_negative"]                   # doctest: +SKIP
True

Each question is tokenized with its context into windows of max_length tokens that share data.stride tokens
(tasks/windows.py): the question repeats in every window, the context is split. A window is labelled with the
start and end token of the first answer when it holds the whole answer, else with the CLS token (index 0), as
run_qa.py does; the loss is the mean of the start and end cross-entropies, summed over windows. Evaluation keeps
only the n-best spans of each window (evaluate/squad.py) and merges them per question (evaluate/gather.py); on
SQuAD v2 data (any question without an answer) the no-answer threshold with the best validation F1 is reported as
`null_score_diff_threshold`, which the kept model carries in its config.json (TaskSpec.config_metrics), so the
test split, predict, the server and exports all abstain by the same rule: no answer when null score - best span
score > threshold. SQuAD v1 data never abstains. See docs/question-answering.md.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np

from tuneforge.config.schema import DataConfig, RunConfig
from tuneforge.data.batching import gather, pad_rows, row_layout
from tuneforge.data.cache import cache_root, cached_tokenize, tokenize_in_memory
from tuneforge.data.checks import fingerprint
from tuneforge.data.pipeline import as_eval_split, finish_splits, read_and_clean
from tuneforge.data.prepared import PreparedData, TokenizedSplit
from tuneforge.data.squad import check_answers, question_where
from tuneforge.data.table import Table
from tuneforge.errors import DataError, UserError
from tuneforge.evaluate.gather import ByExample
from tuneforge.evaluate.squad import (
    answer_record,
    best_threshold,
    exact_match_score,
    f1_score,
    merge_windows,
    predicted_text,
    squad_metrics,
    window_candidates,
)
from tuneforge.tasks.base import TaskBase, TaskSpec
from tuneforge.tasks.loading import load_model, load_tokenizer, model_max_length, pin_revision, resolve_length
from tuneforge.tasks.tokenize import tokenizer_fingerprint
from tuneforge.tasks.windows import check_stride, iter_windows

LENGTH_CAP = 384  # max_length left null: the model's limit, at most run_qa.py's 384
THRESHOLD_KEY, V2_KEY = "null_score_diff_threshold", "version_2_with_negative"  # model config attributes


def default_stride(d: DataConfig, max_length: int) -> int:
    """data.stride, or a quarter of the window (the key's documented default)."""
    return d.stride if d.stride is not None else max_length // 4


def has_answer(answers: dict[str, Any]) -> bool:
    return bool(answers["text"])


def answer_tokens(char_starts: list[int], char_ends: list[int], start: int, end: int) -> tuple[int, int]:
    """(first, last) token of the character span [start, end) in one window, or (0, 0) (the CLS token) when the
    window's context does not hold the whole span.

    >>> answer_tokens([-1, -1, -1, 0, 6, 12], [-1, -1, -1, 5, 11, 17], 6, 17)
    (4, 5)
    >>> answer_tokens([-1, -1, -1, 0, 6], [-1, -1, -1, 5, 11], 6, 17)
    (0, 0)
    """
    context = [k for k, c in enumerate(char_starts) if c >= 0]
    if not context or char_starts[context[0]] > start or char_ends[context[-1]] < end:
        return 0, 0
    first = next(k for k in context if char_ends[k] > start)
    last = next(k for k in reversed(context) if char_starts[k] < end)
    return (first, last) if first <= last else (0, 0)


class QuestionAnsweringTask(TaskBase):
    def __init__(self, spec: TaskSpec) -> None:
        super().__init__(spec)
        # which split a tokenized split is (its input_ids array, kept alive here, so the id cannot be reused):
        # eval_metrics scores the predictions against that split's rows
        self._split_names: dict[int, tuple[Any, str]] = {}

    # ---- data (no torch) -------------------------------------------------------------------------
    def text_columns(self, config: RunConfig) -> list[str]:
        return [config.data.question_column, config.data.context_column]

    def _read(self, config: RunConfig) -> tuple[dict[str, Table], Any]:
        d = config.data
        tables, report = read_and_clean(d, {"data.question_column": d.question_column,
                                            "data.context_column": d.context_column,
                                            "data.answers_column": d.answers_column}, self.text_columns(config))
        for table in tables.values():  # before any split: every location is the file's own
            check_answers(table, d.context_column, d.answers_column)
        return tables, report

    def prepare_data(self, config: RunConfig) -> PreparedData:
        d = config.data
        columns = self.text_columns(config)
        tables, report = self._read(config)
        tables = finish_splits(tables, report, d, config.training.seed, columns, None, stratify=False)
        counts = {}
        for name, table in tables.items():
            answered = sum(map(has_answer, table.columns[d.answers_column]))
            counts[name] = (answered, len(table))
            report.splits[name].label_counts = {"answerable": answered, "no answer": len(table) - answered}
        v2 = any(answered < total for answered, total in counts.values())
        return PreparedData(tables, report, [], fingerprint([tables["train"]], columns + [d.answers_column]),
                            info={V2_KEY: v2, "questions": counts})

    def read_eval_file(self, config: RunConfig, model_config: Any) -> tuple[Any, Any, list[str]]:
        tables, report = self._read(config)
        table = as_eval_split(tables, report)
        return table, report, []

    # ---- model ---------------------------------------------------------------------------------------
    def auto_class(self) -> Any:
        from transformers import AutoModelForQuestionAnswering

        return AutoModelForQuestionAnswering

    def load(self, config: RunConfig, data: PreparedData) -> tuple[Any, Any, str | None]:
        revision, commit = pin_revision(config.model)
        tokenizer = load_tokenizer(config.model, revision)
        if not getattr(tokenizer, "is_fast", False):
            raise UserError(f"model.model_name_or_path: question answering needs a fast (Rust) tokenizer for "
                            f"character offsets, and {type(tokenizer).__name__} is not one; use a checkpoint that "
                            "ships tokenizer.json")
        model = load_model(self.auto_class(), config.model, revision, tokenizer)
        setattr(model.config, V2_KEY, bool(data.info.get(V2_KEY)))
        setattr(model.config, THRESHOLD_KEY, 0.0)  # replaced by the validation-tuned value after training
        return model, tokenizer, commit

    def resolve(self, config: RunConfig, model: Any, tokenizer: Any, data: PreparedData
                ) -> tuple[RunConfig, list[str]]:
        """The learning rate by encoder width (as classification: measured on MiniLM) and one line on what the
        data is: SQuAD v2 (a threshold is tuned) or v1 (never abstains)."""
        import dataclasses

        from tuneforge.tasks.encoder_defaults import learning_rate_for

        t, notes = config.training, []
        if t.learning_rate is None:
            lr, why = learning_rate_for(model.config)
            t = dataclasses.replace(t, learning_rate=lr)
            notes.append(f"learning_rate {lr:g} ({why})")
        answered, total = data.info.get("questions", {}).get("train", (0, 0))
        if data.info.get(V2_KEY):
            notes.append(f"SQuAD v2 data: {total - answered} of {total} training questions have no answer; the "
                         "no-answer threshold with the best validation F1 is saved with the model")
        else:
            notes.append(f"SQuAD v1 data: all {total} training questions have an answer; the model always answers")
        return dataclasses.replace(config, training=t), notes

    def max_length(self, config: RunConfig, tokenizer: Any, model_config: Any) -> int:
        return resolve_length(config.data.max_length, "max_length", tokenizer, model_config, cap=LENGTH_CAP)

    def _check_questions(self, tokenizer: Any, questions: Any, max_length: int, stride: int,
                         where: Any) -> None:
        """Every question leaves a window room for more context than the stride: a DataError naming the first
        that does not (`where(i)`: its location)."""
        special = tokenizer.num_special_tokens_to_add(pair=True)
        check_stride(stride, max_length - special - 1)  # a bad stride for any question: the config's fault
        lengths = [len(ids) for ids in tokenizer(list(questions), add_special_tokens=False)["input_ids"]]
        for i, n in enumerate(lengths):
            room = max_length - special - n
            if room <= stride:
                raise DataError(f"{where(i)}: the question is {n} tokens: in windows of max_length {max_length} "
                                f"that leaves {max(room, 0)} tokens of context, no more than the data.stride "
                                f"{stride} windows share; shorten the question, or raise data.max_length or lower "
                                "data.stride")

    def _write(self, tokenizer: Any, questions: Any, contexts: Any, answers: Any, max_length: int, stride: int,
               writer: Any) -> None:
        """Windows of every (question, context) into `writer`, with their answer tokens when `answers` is given."""
        for _, w in iter_windows(tokenizer, list(questions), list(contexts), max_length, stride):
            starts, ends, full = [], [], []
            context_tokens: dict[int, int] = {}  # example -> its context tokens over all windows
            first_window: dict[int, int] = {}
            for r, example in enumerate(w.example_ids):
                n_context = sum(c >= 0 for c in w.char_starts[r])
                if example in context_tokens:
                    context_tokens[example] += n_context - stride
                else:
                    context_tokens[example], first_window[example] = n_context, r
                if answers is not None:
                    a = answers[example]
                    first, last = (answer_tokens(w.char_starts[r], w.char_ends[r], a["answer_start"][0],
                                                 a["answer_start"][0] + len(a["text"][0])) if has_answer(a)
                                   else (0, 0))
                    starts.append(first)
                    ends.append(last)
            for example in w.example_ids:  # the whole example's tokens, on each of its windows
                r0 = first_window[example]
                full.append(len(w.input_ids[r0]) - sum(c >= 0 for c in w.char_starts[r0]) + context_tokens[example])
            writer.add(w.input_ids, token_type_ids=w.token_type_ids, example_ids=w.example_ids,
                       char_starts=w.char_starts, char_ends=w.char_ends, full_lengths=full,
                       labels=starts if answers is not None else None,
                       label_ends=ends if answers is not None else None)

    def tokenize(self, tokenizer: Any, data: PreparedData, config: RunConfig, max_length: int
                 ) -> dict[str, TokenizedSplit]:
        d = config.data
        stride = default_stride(d, max_length)
        tokenizer_hash = tokenizer_fingerprint(tokenizer)
        columns = self.text_columns(config) + [d.answers_column]
        out = {}
        for name, table in data.splits.items():
            questions, contexts = table.columns[d.question_column], table.columns[d.context_column]
            self._check_questions(tokenizer, questions, max_length, stride, partial(question_where, table))
            parts = {"data": fingerprint([table], columns), "tokenizer": tokenizer_hash, "max_length": max_length,
                     "stride": stride, "windows": "question_answering", "v": 1}
            split = cached_tokenize(cache_root(d.preprocessing_cache_dir), parts,
                                    partial(self._write, tokenizer, questions, contexts,
                                            table.columns[d.answers_column], max_length, stride))
            self._split_names[id(split.input_ids)] = (split.input_ids, name)
            lengths = split.example_lengths()
            rep = data.report.splits[name]
            rep.token_lengths = {f"p{q}": float(np.percentile(lengths, q)) for q in (50, 90, 95, 99)} | {
                "max": float(lengths.max())} if len(lengths) else {}
            rep.truncated_percent = 0.0  # long contexts are windowed, never cut
            long = int((lengths > max_length).sum())
            if long:
                data.report.warnings.append(f"{name}: {long} of {len(lengths)} questions with their context are "
                                            f"longer than max_length {max_length}: {len(split)} windows sharing "
                                            f"{stride} tokens (data.stride), nothing cut")
            out[name] = split
        data.report.max_length = max_length
        return out

    # ---- batches, loss, metrics (torch) ------------------------------------------------------------
    def collate(self, split: TokenizedSplit, indices: np.ndarray, pad_id: int,
                pad_to_multiple_of: int | None = None) -> dict[str, Any]:
        import torch

        ids, mask, types = pad_rows(split, indices, pad_id, pad_to_multiple_of)
        batch: dict[str, Any] = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}
        if types is not None:
            batch["token_type_ids"] = torch.from_numpy(types)
        if split.labels is not None:
            batch["start_positions"] = torch.from_numpy(np.asarray(split.labels[indices]))
            batch["end_positions"] = torch.from_numpy(np.asarray(split.label_ends[indices]))
        layout = row_layout(split, indices, pad_to_multiple_of)
        named = self._split_names.get(id(split.input_ids))
        # host-side facts for the span search (never moved to the device): which split and example, char spans
        batch["qa"] = {"split": named[1] if named else None, "example_ids": np.asarray(split.example_ids[indices]),
                       "char_starts": gather(split.char_starts, layout, -1),
                       "char_ends": gather(split.char_ends, layout, -1)}
        return batch

    def num_items(self, batch: dict[str, Any]) -> float:
        return int(batch["input_ids"].shape[0])  # windows

    def logits(self, model: Any, batch: dict[str, Any]) -> Any:
        """(windows, 2, length): start and end logits; padding positions at -10000 (never a span)."""
        import torch

        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
        out = model(**inputs)
        logits = torch.stack([out.start_logits, out.end_logits], dim=1).float()
        return logits.masked_fill(batch["attention_mask"][:, None, :] == 0, -1e4)

    def targets(self, batch: dict[str, Any]) -> Any:
        import torch

        return torch.stack([batch["start_positions"], batch["end_positions"]], dim=1)

    def _losses(self, logits: Any, batch: dict[str, Any]) -> Any:
        import torch.nn.functional as F

        start = F.cross_entropy(logits[:, 0], batch["start_positions"], reduction="none")
        end = F.cross_entropy(logits[:, 1], batch["end_positions"], reduction="none")
        return (start + end) / 2

    def loss(self, model: Any, batch: dict[str, Any]) -> Any:
        return self._losses(self.logits(model, batch), batch).sum()

    def init_eval_state(self, model: Any, tokenizer: Any, config: RunConfig) -> dict[str, Any]:
        model_config = model.config
        v2 = bool(getattr(model_config, V2_KEY, False))
        return {"loss_sum": 0.0, "windows": 0, "gather": ByExample(), "split": None, "v2": v2,
                "threshold": float(getattr(model_config, THRESHOLD_KEY, 0.0) or 0.0),
                "n_best": config.data.n_best_size, "max_answer_length": config.data.max_answer_length,
                "config": config}

    def _candidates(self, logits: Any, meta: dict[str, Any], n_best: int, max_answer_length: int) -> list[Any]:
        scores = logits.cpu().numpy()
        return [window_candidates(scores[r, 0], scores[r, 1], meta["char_starts"][r], meta["char_ends"][r], n_best,
                                  max_answer_length) for r in range(len(scores))]

    def eval_step(self, model: Any, batch: dict[str, Any], state: dict[str, Any]) -> None:
        logits = self.logits(model, batch)
        if "start_positions" in batch:
            state["loss_sum"] += float(self._losses(logits, batch).sum())
        state["windows"] += int(logits.shape[0])
        meta = batch["qa"]
        state["split"] = meta["split"]
        state["gather"].add(state["rows"], meta["example_ids"],
                            self._candidates(logits, meta, state["n_best"], state["max_answer_length"]))

    def eval_metrics(self, state: dict[str, Any], data: PreparedData) -> dict[str, Any]:
        d = state["config"].data
        table = data.splits.get(state["split"])
        out: dict[str, Any] = {"loss": state["loss_sum"] / max(1, state["windows"])}
        if table is None:  # nothing evaluated
            return out
        contexts, golds_column = table.columns[d.context_column], table.columns[d.answers_column]
        examples, answers = [], []
        for example, rows in state["gather"].groups():
            examples.append(example)
            answers.append(merge_windows(contexts[example], [item for _, item in rows], state["n_best"]))
        golds = [golds_column[e]["text"] for e in examples]
        threshold = None
        if state["v2"]:
            span_f1 = np.array([f1_score(a.text, g) for a, g in zip(answers, golds)])
            span_em = np.array([exact_match_score(a.text, g) for a, g in zip(answers, golds)])
            has = np.array([bool(g) for g in golds])
            diffs = np.array([a.diff for a in answers])
            # validation tunes the threshold (kept with the model); every other split uses the model's own
            threshold = best_threshold(diffs, span_f1, span_em, has)[0] if state["split"] == "validation" \
                else state["threshold"]
            at_zero = squad_metrics([predicted_text(a, 0.0) for a in answers], golds, True)
            out |= {THRESHOLD_KEY: threshold, "f1_threshold_0": at_zero["f1"],
                    "exact_match_threshold_0": at_zero["exact_match"]}
        predictions = [predicted_text(a, threshold) for a in answers]
        out = {**out, **squad_metrics(predictions, golds, state["v2"])}
        if "errors" in state:  # the lowest-F1 questions, with what was predicted
            f1 = np.array([f1_score(p, g) for p, g in zip(predictions, golds)])
            state["errors"].add(np.array(examples, dtype=np.int64), values=f1,
                                badness=np.where(f1 < 1.0, 1.0 - f1, np.nan),
                                extra=[{"predicted": p, "f1": round(float(s), 4)} for p, s in zip(predictions, f1)])
        return out

    def error_row(self, config: RunConfig, split: TokenizedSplit, table: Any, tokenizer: Any,
                  row: int) -> dict[str, Any]:
        from tuneforge.evaluate.errors import quote

        d = config.data
        if table is None or row >= len(table):
            return {}
        return {"where": question_where(table, row), "question": quote(table.columns[d.question_column][row]),
                "context": quote(table.columns[d.context_column][row]),
                "gold": table.columns[d.answers_column][row]["text"]}

    # ---- inference ---------------------------------------------------------------------------------
    def serve_schema(self, config: RunConfig, ctx: Any) -> Any:
        """POST /v1/answer: questions and their contexts in, answers with character offsets out (any length:
        long contexts are windowed, so the server sets no token limit)."""
        from tuneforge.deploy.schemas import ServeRoute, answer_schema

        request, response = answer_schema(ctx)
        return ServeRoute("/v1/answer", "answers (spans of the contexts) to questions", request, response,
                          pairs=True, input_field="question", pair_field="context", windows=True)

    def predict(self, model: Any, tokenizer: Any, texts: list[str], config: RunConfig, *,
                pairs: list[str] | None = None, batch_size: int = 32, max_length: int | None = None,
                max_new_tokens: int | None = None) -> list[dict[str, Any]]:
        """{answer, start, end, score} per question (`texts`) and context (`pairs`): `answer == context[start:end]`;
        no answer (SQuAD v2 models, by the saved threshold): answer "" with start = end = 0, score the
        probability of no answer."""
        import torch

        if pairs is None or len(pairs) != len(texts):
            raise UserError(f"question answering needs one context per question: {len(texts)} questions and "
                            f"{0 if pairs is None else len(pairs)} contexts (predict(questions, pairs=contexts); "
                            "CLI: --text with --context, or --input with question and context columns)")
        if not texts:
            return []
        d = config.data
        limit = max_length or model_max_length(tokenizer, model.config, cap=LENGTH_CAP)
        stride = min(default_stride(d, limit), limit // 4)
        try:
            self._check_questions(tokenizer, texts, limit, stride, lambda i: f"question {i}")
        except DataError as err:
            raise UserError(str(err).replace("data.max_length", "max_length")) from None
        split = tokenize_in_memory(partial(self._write, tokenizer, texts, pairs, None, limit, stride))
        v2 = bool(getattr(model.config, V2_KEY, False))
        threshold = float(getattr(model.config, THRESHOLD_KEY, 0.0) or 0.0) if v2 else None
        found = ByExample()
        device = model.device
        model.eval()
        with torch.inference_mode():
            for start in range(0, len(split), batch_size):
                idx = np.arange(start, min(start + batch_size, len(split)))
                batch = self.collate(split, idx, tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
                meta = batch.pop("qa")
                logits = self.logits(model, {k: v.to(device) for k, v in batch.items()})
                found.add(idx, meta["example_ids"], self._candidates(logits, meta, d.n_best_size,
                                                                     d.max_answer_length))
        return [answer_record(merge_windows(pairs[example], [item for _, item in rows], d.n_best_size), threshold)
                for example, rows in found.groups()]
