"""Causal language modelling and generation with any AutoModelForCausalLM (GPT-2, Llama, Qwen, SmolLM).

>>> from tuneforge.tasks import get_task
>>> task = get_task("causal_lm")
>>> data = task.prepare_data(load_config("lm.yaml"))     # doctest: +SKIP
>>> data.info["format"]                                  # doctest: +SKIP
'text'

Three data shapes: raw text (packed into full blocks, documents kept apart by position ids, EOS trained),
prompt/completion (loss on the completion and its EOS only) and chat (loss on assistant turns only). The
loss is summed over target tokens; the engine normalises over the accumulation window's tokens.
"""

from __future__ import annotations

import json
from functools import partial
from typing import Any

import numpy as np

from tuneforge.config.schema import RunConfig
from tuneforge.data.batching import gather, row_layout
from tuneforge.data.cache import cache_root, cached_tokenize
from tuneforge.data.checks import fingerprint
from tuneforge.data.packing import packed_batch, packed_split
from tuneforge.data.pipeline import as_eval_split, clean_tables, finish_splits, read_splits
from tuneforge.data.prepared import PreparedData, TokenizedSplit
from tuneforge.errors import DataError
from tuneforge.tasks.base import TaskBase
from tuneforge.tasks.chat import check_template, parse_conversations, render_conversation
from tuneforge.tasks.loading import load_model, load_tokenizer, pin_revision, resolve_length
from tuneforge.tasks.tokenize import chunks, length_stats, progress, tokenizer_fingerprint


def _columns(config: RunConfig, fmt: str) -> list[str]:
    d = config.data
    return {"text": [d.text_column], "prompt_completion": [d.prompt_column, d.completion_column],
            "chat": [d.messages_column]}[fmt]


def _packing(config: RunConfig, fmt: str) -> bool:
    """Packing as configured; by default plain text packs and prompt/completion or chat rows do not."""
    return config.data.packing if config.data.packing is not None else fmt == "text"


class CausalLMTask(TaskBase):
    # ---- data (no torch) -------------------------------------------------------------------------
    def detect_format(self, config: RunConfig, columns: list[str]) -> str:
        d = config.data
        if d.data_format != "auto":
            return d.data_format
        if d.messages_column in columns:
            return "chat"
        if d.prompt_column in columns and d.completion_column in columns:
            return "prompt_completion"
        return "text"

    def text_columns(self, config: RunConfig) -> list[str]:
        return _columns(config, config.data.data_format if config.data.data_format != "auto" else "text")

    def _read_and_clean(self, config: RunConfig) -> tuple[dict[str, Any], Any, str]:
        """Read every split, find the data format, check its columns, drop empty rows, parse chats."""
        d = config.data
        tables = read_splits(d)
        fmt = self.detect_format(config, list(tables["train"].columns))  # resolve() records it in the config
        columns = _columns(config, fmt)
        keys = {"text": "data.text_column", "prompt_completion": "data.prompt_column", "chat": "data.messages_column"}
        wanted = dict(zip([keys[fmt], "data.completion_column"], columns))
        report = clean_tables(tables, wanted, [] if fmt == "chat" else columns)
        if fmt == "chat":
            for table in tables.values():
                parse_conversations(table, d.messages_column)
        return tables, report, fmt

    def prepare_data(self, config: RunConfig) -> PreparedData:
        tables, report, fmt = self._read_and_clean(config)
        columns = _columns(config, fmt)
        tables = finish_splits(tables, report, config.data, config.training.seed, columns, None, stratify=False)
        return PreparedData(tables, report, [], fingerprint([tables["train"]], columns), info={"format": fmt})

    def read_eval_file(self, config: RunConfig, model_config: Any) -> tuple[Any, Any, list[str]]:
        """Read config.data.train_file (text, prompt/completion or chat, in the run's data format) to evaluate a
        trained model: loss and perplexity, packed into blocks as in training when the run packed."""
        tables, report, _fmt = self._read_and_clean(config)
        table = as_eval_split(tables, report)
        return table, report, []

    # ---- model ---------------------------------------------------------------------------------------
    def auto_class(self) -> Any:
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM

    def load(self, config: RunConfig, data: PreparedData) -> tuple[Any, Any, str | None]:
        revision, commit = pin_revision(config.model)
        tokenizer = load_tokenizer(config.model, revision)
        if tokenizer.eos_token_id is None:
            raise DataError(f"model.model_name_or_path: the tokenizer of {config.model.model_name_or_path!r} has "
                            "no EOS token; causal LM training needs one to end documents")
        if data.info.get("format") == "chat":
            check_template(tokenizer, config.model.model_name_or_path or "")
        model = load_model(self.auto_class(), config.model, revision, tokenizer)
        if tokenizer.pad_token_id is None:
            # Padding only fills batches; labels come from our own arrays, so EOS stays a training target.
            tokenizer.pad_token = tokenizer.eos_token
        model.config.pad_token_id = tokenizer.pad_token_id
        return model, tokenizer, commit

    def resolve(self, config: RunConfig, model: Any, tokenizer: Any, data: PreparedData
                ) -> tuple[RunConfig, list[str]]:
        """The data format found in the data, packing and block size (recorded in run_config.yaml: generate and
        evaluate read them), generation settings (also written into the model's generation_config)."""
        import dataclasses

        fmt = data.info.get("format") or config.data.data_format
        resolved_data = dataclasses.replace(config.data, data_format=fmt, packing=_packing(config, fmt),
                                            block_size=self.max_length(config, tokenizer, model.config))
        g = config.generation
        generation = dataclasses.replace(g, num_beams=g.num_beams or 1, length_penalty=g.length_penalty or 1.0,
                                         no_repeat_ngram_size=g.no_repeat_ngram_size or 0,
                                         early_stopping=bool(g.early_stopping))
        gen = model.generation_config
        for key in ("num_beams", "do_sample", "temperature", "top_k", "top_p", "repetition_penalty",
                    "num_return_sequences", "no_repeat_ngram_size", "length_penalty"):
            setattr(gen, key, getattr(generation, key))
        gen.max_new_tokens = generation.max_new_tokens or 128
        gen.max_length = None
        gen.pad_token_id = model.config.pad_token_id
        gen.stop_strings = generation.stop_strings
        return dataclasses.replace(config, data=resolved_data, generation=generation), []

    def max_length(self, config: RunConfig, tokenizer: Any, model_config: Any) -> int:
        return resolve_length(config.data.block_size, "block_size", tokenizer, model_config, cap=1024)

    def tokenize(self, tokenizer: Any, data: PreparedData, config: RunConfig, max_length: int
                 ) -> dict[str, TokenizedSplit]:
        d = config.data
        # prepare_data records the format in data.info; evaluation data read by read_eval_file has it resolved in
        # data.data_format
        fmt = data.info.get("format") or self.detect_format(config, list(next(iter(data.splits.values())).columns))
        packing = _packing(config, fmt)
        columns = _columns(config, fmt)
        parts = {"tokenizer": tokenizer_fingerprint(tokenizer), "format": fmt, "v": 2}
        out = {}
        for name, table in data.splits.items():
            docs = cached_tokenize(cache_root(d.preprocessing_cache_dir),
                                   {**parts, "data": fingerprint([table], columns)},
                                   partial(tokenize_documents, tokenizer, table, columns, fmt))
            rep = data.report.splits[name]
            if packing:
                split = packed_split(docs, max_length)
                rep.token_lengths, rep.truncated_percent = length_stats(docs, 10**9)  # packing cuts nothing
            else:
                split, rep.dropped_no_target = truncate_rows(docs, max_length)
                rep.token_lengths, rep.truncated_percent = length_stats(docs, max_length)
                if not len(split):
                    raise DataError(f"data: every {name} row lost all its completion/assistant tokens to truncation "
                                    f"at block_size {max_length}; raise data.block_size or shorten the prompts")
            out[name] = split
        data.report.max_length = max_length
        data.report.length_key = "block_size (packed)" if packing else "block_size"
        return out

    # ---- batches, loss, metrics (torch) ------------------------------------------------------------
    def collate(self, split: TokenizedSplit, indices: np.ndarray, pad_id: int,
                pad_to_multiple_of: int | None = None) -> dict[str, Any]:
        import torch

        if split.packed:
            # packed: no attention mask, so the model separates documents by their restarting position ids
            ids, labels, positions = packed_batch(split, indices, pad_id)
            return {"input_ids": torch.from_numpy(ids), "labels": torch.from_numpy(labels),
                    "position_ids": torch.from_numpy(positions), "num_items": int((labels[:, 1:] != -100).sum())}
        layout = row_layout(split, indices, pad_to_multiple_of)
        ids = gather(split.input_ids, layout, pad_id)
        # raw text: every token is a target, so the labels are the ids already gathered
        labels = gather(split.token_labels, layout, -100) if split.token_labels is not None else \
            np.where(layout[1], ids, -100)
        return {"input_ids": torch.from_numpy(ids), "labels": torch.from_numpy(labels),
                "attention_mask": torch.from_numpy(layout[1].astype(np.int64)),
                "num_items": int((labels[:, 1:] != -100).sum())}

    def num_items(self, batch: dict[str, Any]) -> int:
        return batch["num_items"]

    def logits(self, model: Any, batch: dict[str, Any]) -> Any:
        """Logits at every position (position t predicts token t + 1, the target `targets` puts at t)."""
        inputs = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "position_ids")}
        # use_cache=False: with a cache (GPT-2 builds one by default) transformers ignores the position-id
        # document boundaries and packed documents would attend to each other
        return model(**inputs, use_cache=False).logits

    def targets(self, batch: dict[str, Any]) -> Any:
        import torch.nn.functional as F

        # shift the labels, not the logits: slicing the logits would copy all of them (batch x length x
        # vocabulary) forward and backward; the last position gets no target
        return F.pad(batch["labels"][:, 1:], (0, 1), value=-100)

    def loss(self, model: Any, batch: dict[str, Any]) -> Any:
        return self._token_losses(model, batch, "sum")

    def _token_losses(self, model: Any, batch: dict[str, Any], reduction: str) -> Any:
        """Cross-entropy summed ("sum") or per target position ("none", shaped like the labels)."""
        import torch.nn.functional as F

        labels = self.targets(batch)
        losses = F.cross_entropy(self.logits(model, batch).flatten(0, 1).float(), labels.flatten(),
                                 ignore_index=-100, reduction=reduction)
        return losses if reduction == "sum" else losses.view(labels.shape)

    def eval_step(self, model: Any, batch: dict[str, Any], state: dict[str, Any]) -> None:
        if "errors" in state:  # error analysis: loss per row (document, or packed block) and per length
            per_token = self._token_losses(model, batch, "none")
            counts = (batch["labels"][:, 1:] != -100).sum(1)
            sums = per_token.sum(1)
            loss = sums.sum()
            mean = (sums / counts.clamp(min=1)).cpu().numpy()
            n = counts.cpu().numpy()
            state["errors"].add(state["rows"], values=mean, weights=n, badness=np.where(n > 0, mean, np.nan),
                                extra=[{"loss": round(float(m), 4), "tokens": int(k)} for m, k in zip(mean, n)])
        else:
            loss = self.loss(model, batch)
        state["loss_sum"] = state.get("loss_sum", 0.0) + float(loss)
        state["tokens"] = state.get("tokens", 0) + batch["num_items"]

    def eval_metrics(self, state: dict[str, Any], data: PreparedData) -> dict[str, Any]:
        loss = state["loss_sum"] / max(1, state["tokens"])  # token-weighted over the whole set
        return {"loss": loss, "perplexity": float(np.exp(min(loss, 50.0))), "tokens": state["tokens"]}

    def error_row(self, config: RunConfig, split: TokenizedSplit, table: Any, tokenizer: Any,
                  row: int) -> dict[str, Any]:
        """Rows are documents (or packed blocks): the tokens say exactly what the model saw."""
        from tuneforge.evaluate.errors import quote

        return {"row": row, "text": quote(tokenizer.decode(split.row(row), skip_special_tokens=True))}

    # ---- inference ---------------------------------------------------------------------------------
    def serve_schema(self, config: RunConfig, ctx: Any) -> Any:
        """POST /v1/generate: prompts in, continuations out; prompt and new tokens share the context."""
        from tuneforge.deploy.schemas import ServeRoute, generate_schema

        request, response = generate_schema(ctx, self.spec.prompt_shares_context, name="Generate")
        return ServeRoute("/v1/generate", "continuations of the prompts", request, response)

    def predict(self, model: Any, tokenizer: Any, texts: list[str], config: RunConfig, *,
                pairs: list[str] | None = None, batch_size: int = 8, max_length: int | None = None,
                max_new_tokens: int | None = None) -> list[dict[str, Any]]:
        import copy

        import torch

        if config.data.data_format == "chat":
            texts = [tokenizer.apply_chat_template([{"role": "user", "content": t}], tokenize=False,
                                                   add_generation_prompt=True) for t in texts]
        gen = model.generation_config
        if max_new_tokens:  # a per-call limit (the server's cap) on a copy: the model's own stays as saved
            gen = copy.deepcopy(gen)
            gen.max_new_tokens = max_new_tokens
        device = model.device
        stops = gen.stop_strings or []
        results = []
        model.eval()
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                enc = tokenizer(texts[start:start + batch_size], return_tensors="pt", padding=True,
                                padding_side="left", add_special_tokens=config.data.data_format != "chat")
                enc = {k: v.to(device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
                out = model.generate(**enc, generation_config=gen, tokenizer=tokenizer if stops else None)
                new = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
                new = [_cut_at_stop(t, stops) for t in new]
                k = gen.num_return_sequences or 1
                for i in range(0, len(new), k):
                    results.append({"generated_text": new[i], **({"generated_texts": new[i:i + k]} if k > 1 else {})})
        return results


def _cut_at_stop(text: str, stops: list[str]) -> str:
    cut = min((text.find(s) for s in stops if s and s in text), default=-1)
    return text[:cut] if cut >= 0 else text


def tokenize_documents(tokenizer: Any, table: Any, columns: list[str], fmt: str, writer: Any,
                       chunk: int = 2048) -> None:
    """One row per example, ending with EOS, written chunk by chunk into `writer` (data/cache.py); token_labels
    (-100 where no loss: prompt, non-assistant turns) only for the formats that have them: for raw text every
    token is a target and the labels are the ids themselves."""
    eos = tokenizer.eos_token_id
    bar = progress(len(table), "tokenizing")
    try:
        if fmt == "chat":
            for values in chunks(table.columns[columns[0]], chunk):
                rows, labels = [], []
                for value in values:
                    ids, lab = render_conversation(tokenizer, json.loads(value))
                    if all(x == -100 for x in lab):
                        raise DataError(f"{table.source}: a conversation's assistant turns render to no tokens "
                                        "with this chat template; check the template or the data")
                    rows.append(ids)
                    labels.append(lab)
                writer.add(rows, token_labels=labels, full_lengths=[len(r) for r in rows])
                bar.update(len(values))
        elif fmt == "prompt_completion":
            for p_chunk, c_chunk in zip(chunks(table.columns[columns[0]], chunk),
                                        chunks(table.columns[columns[1]], chunk)):
                prompts = tokenizer(p_chunk)["input_ids"]
                completions = tokenizer(c_chunk, add_special_tokens=False)["input_ids"]
                rows = [p + c + [eos] for p, c in zip(prompts, completions)]
                # the EOS is a target: the model learns to stop
                labels = [[-100] * len(p) + c + [eos] for p, c in zip(prompts, completions)]
                writer.add(rows, token_labels=labels, full_lengths=[len(r) for r in rows])
                bar.update(len(p_chunk))
        else:
            for texts in chunks(table.columns[columns[0]], chunk):
                rows = [ids if ids and ids[-1] == eos else ids + [eos]
                        for ids in tokenizer(texts, return_attention_mask=False)["input_ids"]]
                writer.add(rows, full_lengths=[len(r) for r in rows])
                bar.update(len(texts))
    finally:
        bar.close()


def truncate_rows(docs: TokenizedSplit, max_length: int) -> tuple[TokenizedSplit, int]:
    """Keep the first max_length tokens of each row (unpacked data); lengths before the cut stay recorded.
    Rows left without a single trained token (a prompt filling the whole length) are dropped and counted:
    they cost compute, teach nothing, and a batch of only such rows has no loss to normalise."""
    cut = np.minimum(docs.lengths, max_length)
    starts = docs.offsets[:-1]
    source = docs.token_labels if docs.token_labels is not None else docs.input_ids
    trained = np.array([(source[s + 1:s + n] != -100).any() for s, n in zip(starts, cut)], dtype=bool)
    rows = np.flatnonzero(trained)
    lengths = cut[rows]
    keep = np.concatenate([np.arange(starts[r], starts[r] + cut[r]) for r in rows]) \
        if len(rows) else np.zeros(0, dtype=np.int64)
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    full = docs.full_lengths[rows] if docs.full_lengths is not None else None
    labels = docs.token_labels[keep] if docs.token_labels is not None else None
    return TokenizedSplit(np.asarray(docs.input_ids[keep]), offsets, full_lengths=full,
                          token_labels=labels), int(len(cut) - len(rows))
