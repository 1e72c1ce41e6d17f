"""Use a finished run or an export: predictions from Python, and evaluation on new labelled data.

>>> import tuneforge
>>> model = tuneforge.load("runs/20261126-070000-classification-bert")     # doctest: +SKIP
>>> model.predict(["the parcel never arrived"])[0]["label"]                  # doctest: +SKIP
'delivery'
>>> tuneforge.load("runs/my-t5-run").summarize(["long text ..."])          # doctest: +SKIP
>>> tuneforge.load("runs/my-gpt2-run").generate(["Once upon a time"], max_new_tokens=40)   # doctest: +SKIP
>>> tuneforge.load("runs/my-run/export/onnx-int8").predict(["..."])        # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from tuneforge.errors import UserError
from tuneforge.runs.record import Run, resolve, write_json
from tuneforge.tasks import get_task, spec_with_verb


class LoadedModel:
    """A finished run or an export folder, ready for inference: the one code path behind the CLI's predict,
    summarize and generate commands, `tuneforge.load` and the HTTP server.

    Runs and safetensors exports load with PyTorch (GPU when available; int8 exports on CPU); ONNX exports
    run on ONNX Runtime (CPU). Weights load from safetensors or ONNX only, never from pickles."""

    def __init__(self, source: Any, device: str | None = None) -> None:
        from transformers import AutoTokenizer

        from tuneforge.deploy.artifacts import Artifact, load_model, resolve_artifact
        from tuneforge.tasks.loading import quiet_transformers
        from tuneforge.tasks.tokenize import tokenizer_fingerprint

        quiet_transformers()
        if isinstance(source, Run):
            source = Artifact(source.path, "run", source.config, source.info)
        self.artifact: Artifact = source if isinstance(source, Artifact) else resolve_artifact(source)
        self.path = self.artifact.path
        self.config = self.artifact.config
        self.task = get_task(self.config.task)
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        trained_with = self.artifact.info.get("tokenizer_fingerprint")
        if trained_with and tokenizer_fingerprint(self.tokenizer) != trained_with:
            raise UserError(f"RUN: the tokenizer files in {self.path} differ from the tokenizer the model was "
                            "trained with (fingerprint in run.json); restore them from the run's checkpoint or retrain")
        self.model, self.device = load_model(self.artifact, device)
        self.max_length = self.artifact.max_length

    @property
    def run(self) -> Run:  # backwards compatible: LoadedRun(run).run
        return Run(self.path)

    @property
    def labels(self) -> list[str]:
        if not self.task.spec.predicts_labels or getattr(self.model.config, "problem_type", None) == "regression":
            return []  # a regression model predicts a value (its one id2label entry names the target)
        id2label = self.model.config.id2label
        return [id2label[i] for i in range(len(id2label))]

    def describe(self) -> dict[str, Any]:
        """What the server's GET /v1/model answers."""
        from tuneforge.version import __version__

        art = self.artifact
        return {"task": self.config.task, "labels": self.labels, "base_model": art.base_model,
                "version": art.run_id, "source": art.kind, "format": art.format, "quantize": art.quantize,
                "max_length": self.max_length, "tuneforge_version": __version__}

    def _require(self, verb: str) -> None:
        """`verb` (classify, summarize, generate) is the own verb of one task: refuse a model of another."""
        spec = spec_with_verb(verb)
        if spec is not None and spec.name != self.config.task:
            raise UserError(f"RUN: {self.path} is a {self.config.task} run; {verb} needs a {spec.name} run")

    def predict(self, texts: list[str] | str, pairs: list[str] | None = None, batch_size: int = 32,
                max_new_tokens: int | None = None, max_length: int | None = None) -> list[dict[str, Any]]:
        """Classification: label, probability, probabilities (multi-label: labels, scores; regression: score).
        seq2seq and causal_lm: generated_text.
        `max_length` truncates inputs further than the model's own limit; `max_new_tokens` limits generation."""
        if isinstance(texts, str):
            texts = [texts]
        limits = [v for v in (max_length, self.max_length) if v]
        limit = min(limits) if limits else None
        return self.task.predict(self.model, self.tokenizer, list(texts), self.config, pairs=pairs,
                                 batch_size=batch_size, max_length=limit, max_new_tokens=max_new_tokens)

    def classify(self, texts: list[str] | str, pairs: list[str] | None = None, batch_size: int = 32
                 ) -> list[dict[str, Any]]:
        self._require("classify")
        return self.predict(texts, pairs, batch_size=batch_size)

    def summarize(self, texts: list[str] | str, batch_size: int = 16, max_new_tokens: int | None = None
                  ) -> list[str]:
        self._require("summarize")
        return [r["generated_text"] for r in self.predict(texts, batch_size=batch_size, max_new_tokens=max_new_tokens)]

    def generate(self, prompts: list[str] | str, batch_size: int = 8, max_new_tokens: int | None = None
                 ) -> list[str]:
        self._require("generate")
        return [r["generated_text"] for r in self.predict(prompts, batch_size=batch_size,
                                                          max_new_tokens=max_new_tokens)]

    @property
    def counting_tokenizer(self) -> Any:
        """A copy of the tokenizer for counting and truncating outside the model's thread: a fast tokenizer
        changes its truncation/padding state on calls and fails ("Already borrowed") if two threads share it."""
        if getattr(self, "_counting_tokenizer", None) is None:
            import copy

            self._counting_tokenizer = copy.deepcopy(self.tokenizer)
        return self._counting_tokenizer

    def token_counts(self, texts: list[str], pairs: list[str] | None = None) -> list[int]:
        """Tokens per input as the model sees it: special tokens, the text pair and the seq2seq prefix included."""
        prefix = self.config.data.source_prefix or ""  # set only for tasks that declare the key
        texts = [prefix + t for t in texts]
        tokenizer = self.counting_tokenizer
        enc = tokenizer(texts, pairs) if pairs else tokenizer(texts)
        return [len(ids) for ids in enc["input_ids"]]

    def context_length(self) -> int:
        """The longest input the model accepts (for causal LMs: prompt and generated tokens together)."""
        from tuneforge.tasks.loading import model_max_length

        config = self.model.config
        config = getattr(config, "encoder", None) or config
        limit = model_max_length(self.tokenizer, config, cap=4096)
        for key in ("n_positions", "max_sequence_length"):
            limit = min(limit, getattr(config, key, None) or limit)
        shared = self.task.spec.prompt_shares_context  # prompt + new tokens get the whole context, not max_length
        return min(limit, self.max_length) if self.max_length and not shared else limit

    def truncate(self, texts: list[str], max_tokens: int) -> list[str]:
        """Cut each text after its first tokens so that it fits `max_tokens` in all (special tokens included)."""
        counts = self.token_counts(texts)
        overhead = self.token_counts([""])[0]
        out = list(texts)
        long_rows = [i for i, n in enumerate(counts) if n > max_tokens]
        if long_rows:
            enc = self.counting_tokenizer([texts[i] for i in long_rows], add_special_tokens=False,
                                          return_offsets_mapping=True)
            keep = max(1, max_tokens - overhead)
            for j, i in enumerate(long_rows):
                offsets = enc["offset_mapping"][j]
                out[i] = texts[i][:offsets[min(keep, len(offsets)) - 1][1]]
        return out


LoadedRun = LoadedModel  # the name before exports existed


def load(ref: str | os.PathLike, device: str | None = None) -> LoadedModel:
    """A run folder, a run id under ./runs, or an export folder written by `tuneforge export`."""
    return LoadedModel(ref, device)


def evaluate_run(ref: str | os.PathLike, data_file: str | None = None, name: str | None = None,
                 split: str | None = None) -> dict[str, Any]:
    """Evaluate a finished run on a labelled file (same columns as training), or on its own `split`
    ("test" or "validation" file from its config). Writes eval/<name>/metrics.json and error_analysis.json/.md."""
    from tuneforge.data.prepared import PreparedData
    from tuneforge.engine.evaluation import evaluate_with_analysis
    from tuneforge.evaluate.errors import write_analysis

    run = resolve(ref)
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
    write_json(out_dir / "metrics.json", {"data_file": str(data_file), "rows": len(table), **metrics})
    write_analysis({**analysis, "split": str(data_file)}, out_dir)
    return {**metrics, "output_dir": str(out_dir)}
