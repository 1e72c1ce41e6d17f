"""Summarization and other text-to-text tasks with any AutoModelForSeq2SeqLM (T5, BART, Pegasus, bert2bert).

>>> from tuneforge.tasks import get_task
>>> task = get_task("seq2seq")
>>> data = task.prepare_data(load_config("summarize.yaml"))     # doctest: +SKIP

The loss is summed over target tokens here and normalised by the engine over every target token of the
accumulation window; target padding is -100 and never counted. Evaluation streams: each batch adds its
loss sums and ROUGE scores of its generated texts to small running totals.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import partial
from typing import Any

import numpy as np

from tuneforge.config.schema import RunConfig
from tuneforge.data.batching import pad_rows
from tuneforge.data.cache import cache_root, cached_tokenize, tokenize_in_memory
from tuneforge.data.checks import fingerprint
from tuneforge.data.pipeline import as_eval_split, finish_splits, read_and_clean
from tuneforge.data.prepared import PreparedData, TokenizedSplit
from tuneforge.tasks.base import TaskBase
from tuneforge.tasks.loading import load_model, load_tokenizer, model_max_length, pin_revision, resolve_length
from tuneforge.tasks.tokenize import length_stats, tokenize_texts, tokenizer_fingerprint

T5_FAMILY = ("t5", "mt5", "umt5", "longt5", "switch_transformers")


def is_t5_family(model_config: Any) -> bool:
    types = {getattr(model_config, "model_type", "")}
    for part in ("encoder", "decoder"):  # EncoderDecoderModel wraps two configs
        types.add(getattr(getattr(model_config, part, None), "model_type", ""))
    return bool(types & set(T5_FAMILY))


class Seq2SeqTask(TaskBase):
    # ---- data (no torch) -------------------------------------------------------------------------
    def text_columns(self, config: RunConfig) -> list[str]:
        return [config.data.text_column]

    def prepare_data(self, config: RunConfig) -> PreparedData:
        d = config.data
        both = [d.text_column, d.target_column]
        tables, report = read_and_clean(d, {"data.text_column": d.text_column,
                                            "data.target_column": d.target_column}, both)
        tables = finish_splits(tables, report, d, config.training.seed, [d.text_column], d.target_column,
                               stratify=False)
        return PreparedData(tables, report, [], fingerprint([tables["train"]], both))

    def read_eval_file(self, config: RunConfig, model_config: Any) -> tuple[Any, Any, list[str]]:
        d = config.data
        tables, report = read_and_clean(d, {"data.text_column": d.text_column,
                                            "data.target_column": d.target_column}, [d.text_column, d.target_column])
        table = as_eval_split(tables, report)
        return table, report, []

    # ---- model ---------------------------------------------------------------------------------------
    def auto_class(self) -> Any:
        from transformers import AutoModelForSeq2SeqLM

        return AutoModelForSeq2SeqLM

    def load(self, config: RunConfig, data: PreparedData) -> tuple[Any, Any, str | None]:
        revision, commit = pin_revision(config.model)
        tokenizer = load_tokenizer(config.model, revision)
        model = load_model(self.auto_class(), config.model, revision, tokenizer)
        complete_special_tokens(model, tokenizer)
        return model, tokenizer, commit

    def resolve(self, config: RunConfig, model: Any, tokenizer: Any, data: PreparedData
                ) -> tuple[RunConfig, list[str]]:
        """Fill defaults that depend on the model (family learning rate, source prefix, generation
        preferences) and make the model's generation_config match the resolved settings."""
        import dataclasses

        model_config = model.config
        notes = []
        training, data = config.training, config.data
        if training.learning_rate is None:
            lr = 3e-4 if is_t5_family(model_config) else 5e-5
            training = dataclasses.replace(training, learning_rate=lr)
            notes.append(f"learning_rate {lr:g} ({'T5' if lr == 3e-4 else 'BART/other'}-family default)")
        if data.source_prefix is None:
            params = (getattr(model_config, "task_specific_params", None) or {}).get(
                data.task_specific_params_key) or {}
            prefix = params.get("prefix", "")
            data = dataclasses.replace(data, source_prefix=prefix)
            if prefix:
                notes.append(f"source_prefix {prefix!r} (from the model's task_specific_params."
                             f"{data.task_specific_params_key})")
        generation = resolve_generation(config, model)
        apply_generation_settings(model, generation, data.max_target_length)
        return dataclasses.replace(config, training=training, data=data, generation=generation), notes

    def fp16_safe(self, model_config: Any) -> bool:
        return not is_t5_family(model_config)  # T5 activations overflow fp16 and turn into NaN

    def max_length(self, config: RunConfig, tokenizer: Any, model_config: Any) -> int:
        return resolve_length(config.data.max_source_length, "max_source_length", tokenizer,
                              _encoder_config(model_config), cap=1024)

    def tokenize(self, tokenizer: Any, data: PreparedData, config: RunConfig, max_length: int
                 ) -> dict[str, TokenizedSplit]:
        d = config.data
        prefix = d.source_prefix or ""
        tokenizer_hash = tokenizer_fingerprint(tokenizer)
        root = cache_root(d.preprocessing_cache_dir)
        out = {}
        for name, table in data.splits.items():
            column = table.columns[d.text_column]
            sources = column if not prefix else _Prefixed(prefix, column)
            targets = table.columns[d.target_column]
            base = {"tokenizer": tokenizer_hash, "v": 1}
            src = cached_tokenize(root, {**base, "data": fingerprint([table], [d.text_column]), "prefix": prefix,
                                         "max_length": max_length},
                                  partial(tokenize_texts, tokenizer, sources, None, max_length))
            tgt = cached_tokenize(root, {**base, "data": fingerprint([table], [d.target_column]), "target": True,
                                         "max_length": d.max_target_length},
                                  partial(tokenize_texts, tokenizer, targets, None, d.max_target_length,
                                          target=True))
            src.attach_targets(tgt)
            rep = data.report.splits[name]
            rep.token_lengths, rep.truncated_percent = length_stats(src, max_length)
            data.report.length_key = "max_source_length"
            rep.target_token_lengths, rep.target_truncated_percent = length_stats(tgt, d.max_target_length)
            out[name] = src
        data.report.max_length = max_length
        data.report.max_target_length = d.max_target_length
        return out

    # ---- batches, loss, metrics (torch) ------------------------------------------------------------
    def collate(self, split: TokenizedSplit, indices: np.ndarray, pad_id: int,
                pad_to_multiple_of: int | None = None) -> dict[str, Any]:
        import torch

        ids, mask, _ = pad_rows(split, indices, pad_id, pad_to_multiple_of)
        batch: dict[str, Any] = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}
        if split.targets is not None:
            labels, label_mask, _ = pad_rows(split.targets, indices, -100, pad_to_multiple_of)
            batch["labels"] = torch.from_numpy(labels)
            batch["num_items"] = int(label_mask.sum())  # known on the host: no device sync to count tokens
        return batch

    def num_items(self, batch: dict[str, Any]) -> int:
        return batch["num_items"]

    def logits(self, model: Any, batch: dict[str, Any]) -> Any:
        """Decoder logits under teacher forcing: position t predicts target token t."""
        base = getattr(model, "module", model)
        decoder_input_ids = base.prepare_decoder_input_ids_from_labels(labels=batch["labels"])
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                     decoder_input_ids=decoder_input_ids).logits

    def targets(self, batch: dict[str, Any]) -> Any:
        return batch["labels"]  # target tokens, -100 on padding

    def loss(self, model: Any, batch: dict[str, Any]) -> Any:
        import torch.nn.functional as F

        logits = self.logits(model, batch)
        return F.cross_entropy(logits.flatten(0, 1).float(), batch["labels"].flatten(), ignore_index=-100,
                               reduction="sum")

    def init_eval_state(self, model: Any, tokenizer: Any, config: RunConfig) -> dict[str, Any]:
        from tuneforge.evaluate.rouge import RougeAccumulator

        state: dict[str, Any] = {"loss_sum": 0.0, "tokens": 0}
        if config.generation.predict_with_generate:
            state["generate"] = Generator(model, tokenizer, getattr(model, "module", model).generation_config)
            state["rouge"] = RougeAccumulator()
        return state

    def eval_step(self, model: Any, batch: dict[str, Any], state: dict[str, Any]) -> None:
        state["loss_sum"] += float(self.loss(model, batch))
        state["tokens"] += batch["num_items"]
        if "generate" in state:  # ROUGE per batch, then the texts are dropped: nothing accumulates
            predictions, lengths = state["generate"](batch)
            scores = state["rouge"].add(predictions, state["generate"].decode_labels(batch["labels"]), lengths)
            if "errors" in state:  # error analysis: the lowest-ROUGE rows, ROUGE-L per source length
                from tuneforge.evaluate.errors import quote

                rouge_l = np.array([s["rougeL"] for s in scores])
                state["errors"].add(state["rows"], values=rouge_l, badness=1.0 - rouge_l,
                                    extra=[{"prediction": quote(p), "rougeL": round(s["rougeL"], 4)}
                                           for p, s in zip(predictions, scores)])

    def eval_metrics(self, state: dict[str, Any], data: PreparedData) -> dict[str, Any]:
        loss = state["loss_sum"] / max(1, state["tokens"])
        out: dict[str, Any] = {"loss": loss, "perplexity": float(np.exp(min(loss, 50.0)))}
        if "rouge" in state:
            out |= state["rouge"].result()
        return out

    def error_row(self, config: RunConfig, split: TokenizedSplit, table: Any, tokenizer: Any,
                  row: int) -> dict[str, Any]:
        from tuneforge.evaluate.errors import quote

        d = config.data
        if table is None or row >= len(table):
            return {}
        return {"where": table.where(row), "source": quote(table.columns[d.text_column][row]),
                "reference": quote(table.columns[d.target_column][row])}

    # ---- inference ---------------------------------------------------------------------------------
    def serve_schema(self, config: RunConfig, ctx: Any) -> Any:
        """POST /v1/summarize: texts in, generated text out (inputs truncate to the encoder's limit)."""
        from tuneforge.deploy.schemas import ServeRoute, generate_schema

        request, response = generate_schema(ctx, self.spec.prompt_shares_context, name="Summarize")
        return ServeRoute("/v1/summarize", "summaries of the inputs", request, response)

    def predict(self, model: Any, tokenizer: Any, texts: list[str], config: RunConfig, *,
                pairs: list[str] | None = None, batch_size: int = 16, max_length: int | None = None,
                max_new_tokens: int | None = None) -> list[dict[str, Any]]:
        import copy

        import torch

        limit = max_length or model_max_length(tokenizer, _encoder_config(model.config), cap=1024)
        prefix = config.data.source_prefix or ""
        split = tokenize_in_memory(partial(tokenize_texts, tokenizer, [prefix + t for t in texts], None, limit))
        gen = model.generation_config
        if max_new_tokens:  # a per-call limit (the server's cap) on a copy: the model's own stays as saved
            gen = copy.deepcopy(gen)
            gen.max_new_tokens = max_new_tokens
        generator = Generator(model, tokenizer, gen)
        device = model.device
        results: list[dict[str, Any]] = [{} for _ in texts]
        model.eval()
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                idx = np.arange(start, min(start + batch_size, len(texts)))
                batch = {k: v.to(device) for k, v in self.collate(split, idx, tokenizer.pad_token_id).items()}
                outputs, _ = generator(batch)
                for i, text in zip(idx, outputs):
                    results[i] = {"generated_text": text}
        return results


class Generator:
    """Batched generation + decoding, shared by evaluation and prediction."""

    def __init__(self, model: Any, tokenizer: Any, generation_config: Any) -> None:
        self.model, self.tokenizer, self.config = model, tokenizer, generation_config

    def __call__(self, batch: dict[str, Any]) -> tuple[list[str], list[int]]:
        base = getattr(self.model, "module", self.model)
        out = base.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                            generation_config=self.config)
        special = set(self.tokenizer.all_special_ids)
        lengths = [sum(1 for t in row if t not in special) for row in out.tolist()]
        return self.tokenizer.batch_decode(out, skip_special_tokens=True), lengths

    def decode_labels(self, labels: Any) -> list[str]:
        ids = labels.masked_fill(labels == -100, self.tokenizer.pad_token_id)
        return self.tokenizer.batch_decode(ids, skip_special_tokens=True)


GENERATION_FALLBACKS = {"num_beams": 4, "length_penalty": 1.0, "no_repeat_ngram_size": 0, "early_stopping": True}


def resolve_generation(config: RunConfig, model: Any) -> Any:
    """Settings left null take the model's own preference (its generation_config, else its
    task_specific_params entry, e.g. bart-large-cnn's beams and length penalty), else the fallback."""
    import dataclasses

    params = (getattr(model.config, "task_specific_params", None) or {}).get(
        config.data.task_specific_params_key) or {}
    prefs = {**params, **model.generation_config.to_diff_dict()}
    values = {key: prefs.get(key, fallback) if getattr(config.generation, key) is None
              else getattr(config.generation, key) for key, fallback in GENERATION_FALLBACKS.items()}
    return dataclasses.replace(config.generation, **values)


def apply_generation_settings(model: Any, g: Any, max_target_length: int) -> None:
    """Resolved generation settings become the model's generation_config (saved with the run)."""
    gen = model.generation_config
    gen.num_beams = g.num_beams
    gen.max_new_tokens = g.max_new_tokens or max_target_length
    gen.min_length = g.min_length
    gen.length_penalty = g.length_penalty
    gen.no_repeat_ngram_size = g.no_repeat_ngram_size
    gen.early_stopping = g.early_stopping if g.num_beams > 1 else False
    gen.max_length = None  # max_new_tokens rules; a stale max_length (often 20) would cut outputs short


def _encoder_config(model_config: Any) -> Any:
    return getattr(model_config, "encoder", None) or model_config


def complete_special_tokens(model: Any, tokenizer: Any) -> None:
    """EncoderDecoderModel (bert2bert) has no decoder start, EOS or pad ids of its own: without them training
    fails and a reloaded `generate` never stops. Take them from the tokenizer, in model and generation config."""
    cfg, gen = model.config, model.generation_config
    start = cfg.decoder_start_token_id
    if start is None:
        start = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    eos = cfg.eos_token_id if cfg.eos_token_id is not None else (tokenizer.eos_token_id
                                                                  if tokenizer.eos_token_id is not None
                                                                  else tokenizer.sep_token_id)
    pad = cfg.pad_token_id if cfg.pad_token_id is not None else tokenizer.pad_token_id
    for target in (cfg, gen):
        target.decoder_start_token_id = start
        target.eos_token_id = eos
        target.pad_token_id = pad


class _Prefixed(Sequence):
    """The source column with source_prefix in front of each text, made row by row as the tokenizer reads."""

    def __init__(self, prefix: str, values: Sequence[str]) -> None:
        self.prefix, self.values = prefix, values

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, i: Any) -> Any:
        return [self.prefix + v for v in self.values[i]] if isinstance(i, slice) else self.prefix + self.values[i]

    def __iter__(self) -> Iterator[str]:
        return (self.prefix + v for v in self.values)
