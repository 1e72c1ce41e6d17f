"""Token classification (named-entity recognition) with any AutoModelForTokenClassification (BERT family).

>>> from tuneforge.tasks import get_task
>>> task = get_task("token_classification")
>>> data = task.prepare_data(load_config("ner.yaml"))            # doctest: +SKIP
>>> data.label_names                                              # doctest: +SKIP
['O', 'B-LOC', 'I-LOC', 'B-PER', 'I-PER']

Data: sentences as lists of words with one tag per word (CoNLL files, or JSON/JSONL/Parquet/hub columns),
tags in IOB2 (IOB1 and BIOES are converted). A word's label sits on its first subword; the other subwords get
-100 and are neither trained nor scored (labelling them inflates entity counts: transformers #14043).

Long sentences are never cut: a sentence longer than max_length becomes overlapping windows sharing
`data.stride` tokens (tasks/windows.py); every window trains, and at evaluation and prediction each word takes
the label of the window where its first subword has the most context (`best_window`), so every word gets
exactly one label. A window that starts inside a word never labels that word (its first subword is in an
earlier window).
"""

from __future__ import annotations

import re
from functools import partial
from typing import Any

import numpy as np

from tuneforge.config.schema import RunConfig
from tuneforge.data.batching import gather, row_layout
from tuneforge.data.cache import cache_root, cached_tokenize, tokenize_in_memory
from tuneforge.data.checks import fingerprint, require_columns
from tuneforge.data.pipeline import as_eval_split, finish_splits, read_splits
from tuneforge.data.prepared import PreparedData, TokenizedSplit
from tuneforge.data.table import DataReport, SplitReport, Table
from tuneforge.data.tags import (
    check_known_types,
    check_sentences,
    entity_counts,
    entity_type,
    label_names,
    normalise_scheme,
)
from tuneforge.errors import DataError, UserError
from tuneforge.tasks.base import TaskBase
from tuneforge.tasks.loading import load_model, load_tokenizer, model_max_length, pin_revision, resolve_length
from tuneforge.tasks.tokenize import tokenizer_fingerprint
from tuneforge.tasks.windows import Windows, check_stride, encode_windows

WORD = re.compile(r"\S+")  # raw text splits into words at whitespace (character spans kept)
CHUNK = 1000  # sentences per tokenizer call


def default_stride(max_length: int) -> int:
    """A quarter of the window: with the max-context rule every word is predicted with at least stride/2 tokens
    of context on each side (unless the sentence ends there), for about a third more windows than no overlap.

    >>> default_stride(512), default_stride(128)
    (128, 32)
    """
    return max_length // 4


def split_words(text: str) -> list[tuple[str, int, int]]:
    """(word, start, end) of every whitespace-separated word of `text`.

    >>> split_words("  Ada  Lovelace\\n")
    [('Ada', 2, 5), ('Lovelace', 7, 15)]
    """
    return [(m.group(), m.start(), m.end()) for m in WORD.finditer(text)]


def encode_words(tokenizer: Any, sentences: list[list[str]], max_length: int, stride: int,
                 first_example: int = 0) -> Windows:
    """Windows over pre-split sentences in which every word has at least one token: a word the tokenizer
    drops entirely (a zero-width space, an empty string) is encoded as the unknown token, so it still gets a
    label and the word count is the data's."""
    win = encode_windows(tokenizer, sentences, None, max_length, stride, first_example, split_into_words=True)
    seen: dict[int, set[int]] = {}
    for example, words in zip(win.example_ids, win.word_ids):
        seen.setdefault(example - first_example, set()).update(w for w in words if w >= 0)
    patched, changed = [list(s) for s in sentences], False
    for k, sentence in enumerate(patched):
        for w in range(len(sentence)):
            if w not in seen.get(k, ()):
                sentence[w] = tokenizer.unk_token or "_"
                changed = True
    if not changed:
        return win
    return encode_windows(tokenizer, patched, None, max_length, stride, first_example, split_into_words=True)


def prefix_space(tokenizer: Any) -> bool:
    """Make a byte-level BPE tokenizer (RoBERTa, GPT-2) put a space before every pre-split word, as run_ner.py
    loads them with add_prefix_space=True: without it a word is encoded as if glued to the one before (other
    token ids than in running text). The setting is saved with the run's tokenizer.json. True when changed."""
    import json

    from tokenizers import pre_tokenizers

    backend = getattr(tokenizer, "backend_tokenizer", None)
    state = (json.loads(backend.to_str()).get("pre_tokenizer") or {}) if backend is not None else {}
    if state.get("type") != "ByteLevel" or state.get("add_prefix_space"):
        return False
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=state.get("use_regex", True))
    if hasattr(tokenizer, "add_prefix_space"):
        tokenizer.add_prefix_space = True
    return True


def first_subwords(win: Windows) -> list[list[bool]]:
    """Per window, per token: whether it is its word's first subword. A word's tokens start at character 0 of
    the word (split_into_words spans are within each word); a window that starts inside a word holds only its
    later subwords, which start further in, so that window never labels the word."""
    low: dict[tuple[int, int], int] = {}
    for example, words, starts in zip(win.example_ids, win.word_ids, win.char_starts):
        for w, s in zip(words, starts):
            if w >= 0 and s < low.get((example, w), 1 << 30):
                low[(example, w)] = s
    out = []
    for example, words, starts in zip(win.example_ids, win.word_ids, win.char_starts):
        done: set[int] = set()
        flags = []
        for w, s in zip(words, starts):
            first = w >= 0 and w not in done and s == low[(example, w)]
            if w >= 0:
                done.add(w)
            flags.append(first)
        out.append(flags)
    return out


def write_windows(tokenizer: Any, sentences: Any, tag_ids: list[list[int]] | None, max_length: int, stride: int,
                  writer: Any) -> None:
    """Tokenize `sentences` (lists of words) into windows, chunk by chunk, into `writer` (data/cache.py): per
    window its example id and the whole example's token count; per token its word id and label (the word's tag
    id on its first subword, else -100; without `tag_ids` 0 marks the positions prediction reads)."""
    for start in range(0, len(sentences), CHUNK):
        part = [list(s) for s in sentences[start:start + CHUNK]]
        win = encode_words(tokenizer, part, max_length, stride, first_example=start)
        labels = []
        for example, words, flags in zip(win.example_ids, win.word_ids, first_subwords(win)):
            tags = tag_ids[example] if tag_ids is not None else None
            labels.append([(tags[w] if tags is not None else 0) if f else -100 for w, f in zip(words, flags)])
        writer.add(win.input_ids, example_ids=win.example_ids, word_ids=win.word_ids, token_labels=labels,
                   full_lengths=example_token_counts(win, stride))


def example_token_counts(win: Windows, stride: int) -> list[int]:
    """Each window's whole-example token count (special tokens included): the first window's tokens plus, for
    every later window, its content tokens beyond the `stride` it repeats."""
    totals: dict[int, int] = {}
    for example, words, ids in zip(win.example_ids, win.word_ids, win.input_ids):
        content = sum(1 for w in words if w >= 0)
        totals[example] = totals[example] + content - stride if example in totals else len(ids)
    return [totals[e] for e in win.example_ids]


def merge_words(words: np.ndarray, positions: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Indices (into these per-candidate arrays, in window order) of the candidate that labels each word: of the
    windows holding a word's first subword, the one where it has the most context (`best_window`: the largest
    distance to the nearer window edge, the first window on a tie: `best_window`'s rule, for all words at
    once). Sorted by word.

    >>> merge_words(np.array([0, 1, 1, 2]), np.array([1, 6, 2, 3]), np.array([8, 8, 8, 8])).tolist()
    [0, 2, 3]
    """
    score = np.minimum(positions, lengths - 1 - positions)
    order = np.lexsort((np.arange(len(words)), -score, words))  # by word, then best context, then first window
    first = np.ones(len(order), dtype=bool)
    first[1:] = words[order][1:] != words[order][:-1]
    return order[first]


class TokenClassificationTask(TaskBase):
    # ---- data (no torch) -------------------------------------------------------------------------
    def text_columns(self, config: RunConfig) -> list[str]:
        return [config.data.tokens_column]

    def _read(self, config: RunConfig) -> tuple[dict[str, Table], DataReport]:
        """Every split read and validated (tags in IOB2), empty sentences dropped and counted."""
        d = config.data
        tables = read_splits(d, conll=(d.tokens_column, d.tags_column))
        report = DataReport()
        for name, table in tables.items():
            require_columns(table, {"data.tokens_column": d.tokens_column, "data.tags_column": d.tags_column})
            empty = check_sentences(table, d.tokens_column, d.tags_column)
            gone = set(empty)
            kept = table.select([i for i in range(len(table)) if i not in gone]) if empty else table
            if len(kept) == 0:
                raise DataError(f"{table.source}: every sentence is empty (column {d.tokens_column!r})")
            note = normalise_scheme(kept, d.tags_column)
            if note:
                report.warnings.append(note)
            kept.columns[d.tags_column] = [tuple(t) for t in kept.columns[d.tags_column]]  # hashable (checks)
            report.splits[name] = SplitReport(source=table.source, rows_read=len(table), dropped_empty=len(empty),
                                              dropped_empty_where=table.concat_locations(empty))
            tables[name] = kept
        return tables, report

    def prepare_data(self, config: RunConfig) -> PreparedData:
        d = config.data
        tables, report = self._read(config)
        types = {entity_type(t) for tags in tables["train"].columns[d.tags_column] for t in tags} - {None}
        if not types:
            raise DataError(f"{tables['train'].source}: every tag in column {d.tags_column!r} is O; training needs "
                            "sentences with entities (B-TYPE / I-TYPE tags)")
        for name in ("validation", "test"):
            if name in tables:
                check_known_types(tables[name], d.tags_column, types, "training")
        tables = finish_splits(tables, report, d, config.training.seed, [d.tokens_column], d.tags_column,
                               stratify=False)
        for name, table in tables.items():
            counts = entity_counts([table], d.tags_column)
            report.splits[name].label_counts = {kind: counts.get(kind, 0) for kind in sorted(types)}
        return PreparedData(tables, report, label_names(types),
                            fingerprint([tables["train"]], [d.tokens_column, d.tags_column]))

    def read_eval_file(self, config: RunConfig, model_config: Any) -> tuple[Table, DataReport, list[str]]:
        """config.data.train_file as tagged evaluation data for a trained model (the model's entity types only)."""
        names = [model_config.id2label[i] for i in range(model_config.num_labels)]
        tables, report = self._read(config)
        table = as_eval_split(tables, report)
        check_known_types(table, config.data.tags_column, {entity_type(n) for n in names} - {None}, "the model")
        report.splits["eval"].rows_kept = len(table)
        return table, report, names

    # ---- model ---------------------------------------------------------------------------------------
    def auto_class(self) -> Any:
        from transformers import AutoModelForTokenClassification

        return AutoModelForTokenClassification

    def load(self, config: RunConfig, data: PreparedData) -> tuple[Any, Any, str | None]:
        revision, commit = pin_revision(config.model)
        tokenizer = load_tokenizer(config.model, revision)
        prefix_space(tokenizer)
        names = data.label_names
        model = load_model(self.auto_class(), config.model, revision, tokenizer, num_labels=len(names),
                           id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)},
                           ignore_mismatched_sizes=True)  # a checkpoint tagged with other labels gets a new head
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        model.config.pad_token_id = tokenizer.pad_token_id
        return model, tokenizer, commit

    def resolve(self, config: RunConfig, model: Any, tokenizer: Any, data: PreparedData
                ) -> tuple[RunConfig, list[str]]:
        """The learning rate from the encoder's width (as classification) and data.stride from max_length."""
        import dataclasses

        from tuneforge.tasks.encoder_defaults import learning_rate_for

        t, d, notes = config.training, config.data, []
        if t.learning_rate is None:
            lr, why = learning_rate_for(model.config)
            t = dataclasses.replace(t, learning_rate=lr)
            notes.append(f"learning_rate {lr:g} ({why})")
        length = self.max_length(config, tokenizer, model.config)
        stride = self.stride(config, tokenizer, length)
        if d.stride is None:
            d = dataclasses.replace(d, stride=stride)
            notes.append(f"stride {stride} (a quarter of max_length {length}: windows over longer sentences share "
                         f"{stride} tokens)")
        return dataclasses.replace(config, training=t, data=d), notes

    def stride(self, config: RunConfig, tokenizer: Any, max_length: int) -> int:
        """data.stride, checked against the room a window of `max_length` leaves (default: a quarter of it)."""
        room = max_length - tokenizer.num_special_tokens_to_add(pair=False)
        if room < 1:
            raise DataError(f"data.max_length: {max_length} tokens leave no room for words beside the special "
                            "tokens; use a larger max_length")
        stride = config.data.stride if config.data.stride is not None else default_stride(max_length)
        check_stride(stride, room)
        return stride

    def max_length(self, config: RunConfig, tokenizer: Any, model_config: Any) -> int:
        return resolve_length(config.data.max_length, "max_length", tokenizer, model_config, cap=512)

    def tokenize(self, tokenizer: Any, data: PreparedData, config: RunConfig, max_length: int
                 ) -> dict[str, TokenizedSplit]:
        d = config.data
        stride = self.stride(config, tokenizer, max_length)
        index = {n: i for i, n in enumerate(data.label_names)}
        tokenizer_hash = tokenizer_fingerprint(tokenizer)
        out = {}
        for name, table in data.splits.items():
            tag_ids = [[index[t] for t in tags] for tags in table.columns[d.tags_column]]
            parts = {"data": fingerprint([table], [d.tokens_column, d.tags_column]), "tokenizer": tokenizer_hash,
                     "max_length": max_length, "stride": stride, "labels": data.label_names, "v": 1}
            split = cached_tokenize(cache_root(d.preprocessing_cache_dir), parts,
                                    partial(write_windows, tokenizer, table.columns[d.tokens_column], tag_ids,
                                            max_length, stride))
            lengths = split.example_lengths()
            s = data.report.splits[name]
            if len(lengths):
                s.token_lengths = {**{f"p{q}": float(np.percentile(lengths, q)) for q in (50, 90, 95, 99)},
                                   "max": float(lengths.max())}
                s.windowed_percent = float(100.0 * np.mean(lengths > max_length))
            out[name] = split
        data.report.max_length = max_length
        return out

    # ---- batches, loss, metrics (torch) ------------------------------------------------------------
    def collate(self, split: TokenizedSplit, indices: np.ndarray, pad_id: int,
                pad_to_multiple_of: int | None = None) -> dict[str, Any]:
        import torch

        layout = row_layout(split, indices, pad_to_multiple_of)
        batch = {"input_ids": torch.from_numpy(gather(split.input_ids, layout, pad_id)),
                 "attention_mask": torch.from_numpy(layout[1].astype(np.int64))}
        if split.token_labels is not None:
            batch["labels"] = torch.from_numpy(gather(split.token_labels, layout, -100))
        if split.word_ids is not None:  # what evaluation needs to merge windows (never fed to the model)
            batch["word_ids"] = torch.from_numpy(gather(split.word_ids, layout, -1))
        if split.example_ids is not None:
            batch["example_ids"] = torch.from_numpy(np.asarray(split.example_ids[indices], dtype=np.int64))
        return batch

    def num_items(self, batch: dict[str, Any]) -> float:
        """Labelled words (first subwords) in the batch."""
        return int((batch["labels"] != -100).sum())

    def logits(self, model: Any, batch: dict[str, Any]) -> Any:
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
        return model(**inputs).logits.float()  # (batch, length, labels)

    def targets(self, batch: dict[str, Any]) -> Any:
        return batch["labels"]  # per token; -100 on special tokens, padding and later subwords

    def loss(self, model: Any, batch: dict[str, Any]) -> Any:
        import torch.nn.functional as F

        logits = self.logits(model, batch)
        return F.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(), ignore_index=-100, reduction="sum")

    def init_eval_state(self, model: Any, tokenizer: Any, config: RunConfig) -> dict[str, Any]:
        from tuneforge.evaluate.gather import ByExample

        return {"windows": ByExample(), "loss_sum": 0.0, "tokens": 0}

    def eval_step(self, model: Any, batch: dict[str, Any], state: dict[str, Any]) -> None:
        """Per window: the labelled positions' word ids, positions, predicted and true ids (gathered by example;
        eval_metrics merges the windows)."""
        import torch.nn.functional as F

        logits = self.logits(model, batch)
        labels = batch["labels"]
        state["loss_sum"] += float(F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100,
                                                   reduction="sum"))
        state["tokens"] += int((labels != -100).sum())
        pred = logits.argmax(-1).cpu().numpy()
        true, words = labels.cpu().numpy(), batch["word_ids"].cpu().numpy()
        window = batch["attention_mask"].sum(-1).cpu().numpy()
        items = []
        for i in range(len(true)):
            pos = np.flatnonzero(true[i] != -100)
            items.append((words[i][pos], pos, np.full(len(pos), window[i]), pred[i][pos], true[i][pos]))
        state["windows"].add(state["rows"], batch["example_ids"].cpu().numpy(), items)

    def eval_metrics(self, state: dict[str, Any], data: PreparedData) -> dict[str, Any]:
        from tuneforge.evaluate.ner import ner_metrics, sentence_errors

        names = np.asarray(data.label_names)
        examples, y_true, y_pred = [], [], []
        for example, rows in state["windows"].groups():
            words, pos, lengths, pred, true = (np.concatenate(parts) for parts in zip(*(item for _, item in rows)))
            pick = merge_words(words, pos, lengths)
            examples.append(example)
            y_true.append(names[true[pick]].tolist())
            y_pred.append(names[pred[pick]].tolist())
        metrics = {"loss": state["loss_sum"] / max(1, state["tokens"]), **ner_metrics(y_true, y_pred)}
        if "errors" in state and examples:  # error analysis per sentence: the most wrong entities first
            found = [sentence_errors(t, p) for t, p in zip(y_true, y_pred)]
            n_words = np.array([len(t) for t in y_true], dtype=np.float64)
            correct = np.array([sum(a == b for a, b in zip(t, p)) for t, p in zip(y_true, y_pred)], dtype=np.float64)
            wrong = np.array([f[0] for f in found], dtype=np.float64)
            state["errors"].add(np.asarray(examples), values=correct / np.maximum(n_words, 1),
                                badness=np.where(wrong > 0, wrong, np.nan), weights=n_words,
                                extra=[{"wrong_entities": int(w), "gold_spans": g, "predicted_spans": p}
                                       for w, (_, g, p) in zip(wrong, found)])
        return metrics

    def error_row(self, config: RunConfig, split: TokenizedSplit, table: Any, tokenizer: Any,
                  row: int) -> dict[str, Any]:
        """Sentence `row` (an example id): where it is, its words (the analysis names entities by them)."""
        from tuneforge.evaluate.errors import quote

        if table is None or row >= len(table):
            return {}
        words = list(table.columns[config.data.tokens_column][row])
        return {"where": table.where(row), "text": quote(" ".join(words)), "words": words}

    # ---- inference ---------------------------------------------------------------------------------
    def serve_schema(self, config: RunConfig, ctx: Any) -> Any:
        """POST /v1/entities; inputs of any length (windows)."""
        from tuneforge.deploy.schemas import ServeRoute, entities_schema

        types = sorted({entity_type(label) for label in ctx.labels} - {None})
        request, response = entities_schema(ctx, types)
        return ServeRoute("/v1/entities", "entities found in each text", request, response, windows=True)

    def predict(self, model: Any, tokenizer: Any, texts: list[str], config: RunConfig, *,
                pairs: list[str] | None = None, batch_size: int = 32, max_length: int | None = None,
                max_new_tokens: int | None = None) -> list[dict[str, Any]]:
        """Per text its `entities`: {entity_group, word, start, end, score} as transformers' token-classification
        pipeline gives with aggregation_strategy="first" (a word's label and score from its first subword;
        consecutive words B-X I-X ... form one entity, its score their mean), `word == text[start:end]` in
        character offsets of the input. Words are split at whitespace; long texts go through windows."""
        import torch

        limit = max_length or model_max_length(tokenizer, model.config)
        if pairs is not None:
            raise UserError("predict: a token-classification model tags single texts; give no text pairs")
        stride = config.data.stride if config.data.stride is not None else default_stride(limit)
        room = limit - tokenizer.num_special_tokens_to_add(pair=False)
        stride = stride if stride < room else default_stride(room)  # a smaller window than trained (--max-length)
        spans = [split_words(t) for t in texts]
        split = tokenize_in_memory(partial(write_windows, tokenizer, [[w for w, _, _ in s] for s in spans], None,
                                           limit, stride))
        per_example: dict[int, list[tuple[np.ndarray, ...]]] = {}
        model.eval()
        with torch.inference_mode():
            for start in range(0, len(split), batch_size):
                idx = np.arange(start, min(start + batch_size, len(split)))
                batch = self.collate(split, idx, tokenizer.pad_token_id or 0)
                inputs = {k: v.to(model.device) for k, v in batch.items() if k in ("input_ids", "attention_mask")}
                probs = torch.softmax(self.logits(model, inputs), dim=-1).cpu().numpy()
                marks, words = batch["labels"].numpy(), batch["word_ids"].numpy()
                window = batch["attention_mask"].sum(-1).numpy()
                for i, example in enumerate(batch["example_ids"].tolist()):
                    pos = np.flatnonzero(marks[i] != -100)
                    per_example.setdefault(example, []).append(
                        (words[i][pos], pos, np.full(len(pos), window[i]), probs[i][pos]))
        id2label = model.config.id2label
        results = []
        for k, text in enumerate(texts):
            word_labels: list[tuple[str, float]] = []
            if per_example.get(k):
                words, pos, lengths, probs = (np.concatenate(p) for p in zip(*per_example[k]))
                chosen = probs[merge_words(words, pos, lengths)]
                word_labels = [(id2label[int(p.argmax())], float(p.max())) for p in chosen]
            results.append({"entities": group_entities(text, spans[k], word_labels)})
        return results


def group_entities(text: str, spans: list[tuple[str, int, int]], labels: list[tuple[str, float]]
                   ) -> list[dict[str, Any]]:
    """Consecutive words tagged B-X I-X ... (or I-X I-X: a sentence's tags need not be valid IOB2) as one entity,
    as transformers' pipeline groups them: a new entity at every B- tag or change of type.

    >>> group_entities("Ada Lovelace met Babbage", split_words("Ada Lovelace met Babbage"),
    ...                [("B-PER", 0.9), ("I-PER", 0.7), ("O", 0.99), ("B-PER", 0.8)])
    ... # doctest: +NORMALIZE_WHITESPACE
    [{'entity_group': 'PER', 'word': 'Ada Lovelace', 'start': 0, 'end': 12, 'score': 0.8},
     {'entity_group': 'PER', 'word': 'Babbage', 'start': 17, 'end': 24, 'score': 0.8}]
    """
    out: list[dict[str, Any]] = []
    scores: list[float] = []
    for (_, start, end), (label, score) in zip(spans, labels):
        kind = entity_type(label)
        if kind is None:
            scores = []
            continue
        if scores and label.startswith("I-") and out[-1]["entity_group"] == kind:
            out[-1]["end"] = end
            scores.append(score)
        else:
            out.append({"entity_group": kind, "start": start, "end": end})
            scores = [score]
        out[-1]["score"] = round(float(np.mean(scores)), 6)
    for entity in out:
        entity["word"] = text[entity["start"]:entity["end"]]
    return [{k: e[k] for k in ("entity_group", "word", "start", "end", "score")} for e in out]


__all__ = ["TokenClassificationTask", "default_stride", "encode_words", "group_entities", "merge_words",
           "split_words", "write_windows"]
