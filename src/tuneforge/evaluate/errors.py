"""Error analysis folded in during evaluation: the worst examples (a capped heap) and a metric per input-length
bucket, so truncation and long-input failures show up instead of hiding in an average.

>>> import numpy as np
>>> from tuneforge.evaluate.errors import ErrorCollector, length_buckets
>>> length_buckets(np.array([3, 5, 8, 13, 40, 70]), max_length=64)
[(0, 5, '≤ 5'), (6, 8, '6-8'), (9, 13, '9-13'), (14, 64, '14-64'), (65, None, '> 64 (truncated)')]
>>> c = ErrorCollector("accuracy", np.array([3, 5, 8, 70]), max_length=64, top_k=1, describe=lambda r: {"row": r})
>>> c.add(np.array([0, 1, 2, 3]), values=np.array([1.0, 1.0, 0.0, 0.0]), badness=np.array([np.nan, np.nan, .6, .9]))
>>> [w["row"] for w in c.worst()], c.slices()[-1]["accuracy"]
([3], 0.0)

Tasks call `state["errors"].add(rows, values=..., badness=...)` from `eval_step` when an analysis is
requested (the engine puts the row indices of the batch in `state["rows"]`). Only the top-k worst rows are
kept; what they quote is looked up at the end (the task's `error_row`). The task's spec names the metric per
length bucket (`analysis_metric`) and the key of the worst examples (`analysis_worst`: classification's
most_confident_errors, seq2seq's lowest_rouge, causal LM's highest_loss; a task may set the collector's
`metric` and `worst_key` itself, as regression does: absolute_error, largest_errors); metrics with a confusion
matrix add the most confused label pairs and per-class precision/recall/F1, multi-label metrics their per-label
table. Pure code, no model: the pass that runs the
model is engine/evaluation.py `evaluate_with_analysis`.
"""

from __future__ import annotations

import heapq
import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

TOP_K = 20
QUOTE_CHARS = 600  # long texts are cut in the report (the full row is in the data file at the location given)


def length_buckets(lengths: np.ndarray, max_length: int | None, n: int = 4) -> list[tuple[int, int | None, str]]:
    """Up to `n` buckets at quantiles of the lengths that fit, plus one for rows longer than `max_length`."""
    fits = lengths if max_length is None else lengths[lengths <= max_length]
    top = int(max_length if max_length is not None else (lengths.max() if len(lengths) else 0))
    inner = sorted({int(np.quantile(fits, q / n)) for q in range(1, n)}) if len(fits) else []
    edges = [e for e in inner if e < top] + [top]
    out, low = [], 0
    for high in edges:
        out.append((low, high, f"≤ {high}" if low == 0 else f"{low}-{high}"))
        low = high + 1
    if max_length is not None and (lengths > max_length).any():
        out.append((max_length + 1, None, f"> {max_length} (truncated)"))
    return out


class ErrorCollector:
    """Streaming per-example records: `values` feed the per-length metric (mean, weighted by `weights`),
    `badness` ranks the worst examples (NaN: not a candidate, e.g. a correct prediction)."""

    def __init__(self, metric: str, lengths: np.ndarray, max_length: int | None, describe: Callable[[int], dict],
                 top_k: int = TOP_K) -> None:
        self.metric, self.lengths, self.max_length, self.top_k = metric, lengths, max_length, top_k
        self.worst_key: str | None = None  # a task may name its worst examples otherwise (regression: largest_errors)
        self.describe = describe
        self.buckets = length_buckets(lengths, max_length)
        self.reset()

    def reset(self) -> None:
        """Forget every record (an evaluation retried after out-of-memory starts over)."""
        self._sum = np.zeros(len(self.buckets))
        self._weight = np.zeros(len(self.buckets))
        self._rows = np.zeros(len(self.buckets), dtype=np.int64)
        self._heap: list[tuple[float, int, int, dict]] = []
        self._tie = itertools.count()

    def _bucket(self, rows: np.ndarray) -> np.ndarray:
        highs = np.array([b[1] if b[1] is not None else np.iinfo(np.int64).max for b in self.buckets])
        return np.searchsorted(highs, self.lengths[rows], side="left")

    def add(self, rows: np.ndarray, values: np.ndarray, badness: np.ndarray, weights: np.ndarray | None = None,
            extra: list[dict] | None = None) -> None:
        rows = np.asarray(rows)
        values = np.asarray(values, dtype=np.float64)
        weights = np.ones(len(rows)) if weights is None else np.asarray(weights, dtype=np.float64)
        bucket = self._bucket(rows)
        np.add.at(self._sum, bucket, values * weights)
        np.add.at(self._weight, bucket, weights)
        np.add.at(self._rows, bucket, 1)
        for i, (row, bad) in enumerate(zip(rows.tolist(), np.asarray(badness, dtype=np.float64).tolist())):
            if bad != bad:  # NaN: not an error
                continue
            item = (bad, next(self._tie), row, extra[i] if extra else {})
            if len(self._heap) < self.top_k:
                heapq.heappush(self._heap, item)
            elif bad > self._heap[0][0]:
                heapq.heapreplace(self._heap, item)

    def shard_state(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[tuple[float, int, dict]]]:
        """Bucket sums and kept rows, without `describe` (evaluate/shards.py merges the processes' parts)."""
        return self._sum, self._weight, self._rows, [(bad, row, extra) for bad, _, row, extra in self._heap]

    def merge_shards(self, parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, list[tuple[float, int, dict]]]]
                     ) -> None:
        """Become the records of every process's part (this one's included), in the order given."""
        self.reset()
        for sums, weights, rows, kept in parts:
            self._sum, self._weight, self._rows = self._sum + sums, self._weight + weights, self._rows + rows
            for bad, row, extra in kept:
                item = (bad, next(self._tie), row, extra)
                if len(self._heap) < self.top_k:
                    heapq.heappush(self._heap, item)
                elif bad > self._heap[0][0]:
                    heapq.heapreplace(self._heap, item)

    def worst(self) -> list[dict[str, Any]]:
        """The kept rows, worst first, each described (text, location) plus what the task recorded."""
        return [{**self.describe(row), **extra} for _, _, row, extra in sorted(self._heap, reverse=True)]

    def slices(self) -> list[dict[str, Any]]:
        return [{"bucket": label, "min_tokens": low, "max_tokens": high, "rows": int(self._rows[i]),
                 self.metric: float(self._sum[i] / self._weight[i]) if self._weight[i] else None,
                 "truncated": high is None}
                for i, (low, high, label) in enumerate(self.buckets)]


def confused_pairs(confusion: list[list[int]], label_names: list[str], k: int = 10) -> list[dict[str, Any]]:
    """Off-diagonal cells of the confusion matrix, largest first."""
    pairs = [{"true": label_names[i], "predicted": label_names[j], "count": int(n)}
             for i, row in enumerate(confusion) for j, n in enumerate(row) if i != j and n > 0]
    return sorted(pairs, key=lambda p: -p["count"])[:k]


def analysis_result(spec: Any, split_name: str, collector: ErrorCollector, metrics: dict[str, Any],
                    label_names: list[str]) -> dict[str, Any]:
    """The error_analysis.json document for a task (its TaskSpec: name and analysis_worst)."""
    worst = collector.worst()
    for example in worst:
        if "predicted_id" in example:
            example["predicted"] = label_names[example.pop("predicted_id")]
        if "gold_spans" in example:  # token classification: entities named by their words
            from tuneforge.evaluate.ner import describe_entities

            words = example.pop("words", [])
            example["gold_entities"] = describe_entities(words, example.pop("gold_spans"))
            example["predicted_entities"] = describe_entities(words, example.pop("predicted_spans"))
    out: dict[str, Any] = {"task": spec.name, "split": split_name, "metric": collector.metric,
                           "max_length": collector.max_length, collector.worst_key or spec.analysis_worst: worst,
                           "length_slices": collector.slices()}
    if "confusion_matrix" in metrics or metrics.get("per_class"):  # a classifier's; a tagger's per entity type
        out["per_class"] = metrics.get("per_class", {})
        out["confused_pairs"] = confused_pairs(metrics.get("confusion_matrix", []), label_names)
    if "per_label" in metrics:  # a multi-label classifier's: precision/recall/F1 and threshold of each label
        out["per_label"] = metrics["per_label"]
    return out


def quote(text: Any) -> str:
    text = "" if text is None else str(text)
    return text if len(text) <= QUOTE_CHARS else text[:QUOTE_CHARS] + " …"


def build_collector(spec: Any, split: Any, max_length: int | None, describe: Callable[[int], dict]
                    ) -> ErrorCollector:
    """The collector for one task's evaluation of `split`: its spec's analysis_metric, buckets of the rows'
    lengths before truncation, `describe(row)` for the worst rows (the task's error_row). For a windowed split
    the records are per example: the task adds example ids (after merging its windows, in eval_metrics) and
    `describe` gets an example id."""
    packed = split.packed  # packed blocks are all one length and nothing is truncated
    if split.windowed:  # rows are windows: the analysis is per example (the task adds example ids, not rows),
        #                 and nothing is truncated, so the buckets reach the longest example
        return ErrorCollector(spec.analysis_metric, split.example_lengths(), None, describe)
    lengths = split.full_lengths if split.full_lengths is not None else split.lengths
    return ErrorCollector(spec.analysis_metric, np.asarray(lengths), None if packed else max_length, describe)


def write_analysis(analysis: dict[str, Any], folder: Path) -> None:
    """error_analysis.json plus a readable error_analysis.md next to it."""
    (folder / "error_analysis.json").write_text(json.dumps(analysis, indent=2, ensure_ascii=False) + "\n",
                                                encoding="utf-8")
    (folder / "error_analysis.md").write_text(render_markdown(analysis), encoding="utf-8")


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def render_markdown(a: dict[str, Any]) -> str:
    out = [f"# Error analysis ({a['task']}, {a['split']} split)", ""]
    if a.get("per_class"):
        out += ["## Per class", "", "| label | precision | recall | f1 | support |", "|---|---|---|---|---|"]
        out += [f"| {_cell(k)} | {v['precision']:.3f} | {v['recall']:.3f} | {v['f1']:.3f} | {v['support']} |"
                for k, v in a["per_class"].items()]
        out.append("")
    if a.get("per_label"):
        out += ["## Per label", "", "| label | precision | recall | f1 | support | predicted | threshold |",
                "|---|---|---|---|---|---|---|"]
        out += [f"| {_cell(k)} | {v['precision']:.3f} | {v['recall']:.3f} | {v['f1']:.3f} | {v['support']} | "
                f"{v['predicted']} | {v.get('threshold', 0.5):.2f} |" for k, v in a["per_label"].items()]
        out.append("")
    if a.get("confused_pairs"):
        out += ["## Most confused label pairs", "", "| true | predicted | count |", "|---|---|---|"]
        out += [f"| {_cell(p['true'])} | {_cell(p['predicted'])} | {p['count']} |" for p in a["confused_pairs"]]
        out.append("")
    out += [f"## {a['metric']} by input length (tokens)", "", f"| bucket | rows | {a['metric']} |", "|---|---|---|"]
    out += [f"| {s['bucket']} | {s['rows']} | {_cell(s[a['metric']]) if s[a['metric']] is not None else '-'} |"
            for s in a["length_slices"]]
    out.append("")
    for key, title in (("most_confident_errors", "Most confidently wrong"), ("lowest_rouge", "Lowest ROUGE-L"),
                       ("highest_loss", "Highest loss"), ("largest_errors", "Largest absolute errors"),
                       ("most_wrong_entities", "Most wrong entities"), ("lowest_f1", "Lowest F1 (questions)")):
        if key in a:
            out += [f"## {title}", ""] + ([] if a[key] else ["(none)"])
            for i, ex in enumerate(a[key], 1):
                out.append(f"{i}. " + "; ".join(f"**{k}**: {_cell(v)}" for k, v in ex.items()))
            out.append("")
    return "\n".join(out)
