"""Warm-start an encoder-decoder ("bert2bert") from one pretrained BERT checkpoint, for the seq2seq demo.

>>> from tuneforge.demo.bert2bert import build_bert2bert
>>> from tuneforge.demo.runner import demo_model_path
>>> path = build_bert2bert(demo_model_path(), "runs/demo-bert2bert")      # doctest: +SKIP
>>> from transformers import AutoModelForSeq2SeqLM, AutoTokenizer
>>> model = AutoModelForSeq2SeqLM.from_pretrained(path)                      # doctest: +SKIP
>>> tokenizer = AutoTokenizer.from_pretrained(path)                          # doctest: +SKIP

Encoder and decoder both start from the BERT weights (Rothe et al., 2020, "Leveraging Pre-trained Checkpoints
for Sequence Generation Tasks"); the decoder gets causal self-attention, and its cross-attention layers and LM
head transform are new, randomly initialised weights that fine-tuning has to learn. BERT has no decoder start,
EOS or pad ids of a seq2seq model: [CLS] starts every output, [SEP] ends it, [PAD] pads it. They are written into
both ``config.json`` and ``generation_config.json``, so a reloaded ``generate()`` starts right and stops at
[SEP].
"""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["build_bert2bert", "is_complete"]

_MARKER = "tuneforge_bert2bert.json"  # written last: its presence means a complete model folder


def is_complete(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds a finished build (config, generation config, weights, tokenizer, marker)."""
    root = Path(folder)
    needed = ("config.json", "generation_config.json", "tokenizer_config.json", _MARKER)
    return all((root / name).is_file() for name in needed) and any(root.glob("model*.safetensors"))


def build_bert2bert(encoder_dir: str | os.PathLike, out_dir: str | os.PathLike, dropout: float | None = None
                    ) -> Path:
    """Build a BERT-to-BERT EncoderDecoderModel from ``encoder_dir`` into ``out_dir`` (once) and return its path.

    ``dropout`` (if given) replaces the checkpoint's hidden and attention dropout in encoder and decoder; the demo
    uses 0.0: it sees each example once in a few hundred steps, where dropout only slows learning (and costs
    about 20% of the CPU time). When ``out_dir`` already holds a complete build from the same ``encoder_dir`` and
    ``dropout`` nothing is done. The saved folder loads with ``AutoModelForSeq2SeqLM.from_pretrained`` and
    ``AutoTokenizer.from_pretrained``.
    """
    encoder_dir, out = Path(encoder_dir).resolve(), Path(out_dir)
    source = {"encoder": str(encoder_dir), "dropout": dropout}
    if is_complete(out) and json.loads((out / _MARKER).read_text(encoding="utf-8")) == source:
        return out

    from transformers import AutoTokenizer, EncoderDecoderModel

    from tuneforge.tasks.loading import quiet_transformers

    quiet_transformers()
    tokenizer = AutoTokenizer.from_pretrained(encoder_dir)
    kwargs = {} if dropout is None else {f"{part}_{name}": dropout for part in ("encoder", "decoder")
                                         for name in ("hidden_dropout_prob", "attention_probs_dropout_prob")}
    model = EncoderDecoderModel.from_encoder_decoder_pretrained(str(encoder_dir), str(encoder_dir), **kwargs)
    start = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    eos = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    pad = tokenizer.pad_token_id
    if start is None or eos is None or pad is None:
        raise ValueError(f"{encoder_dir}: the tokenizer needs [CLS]/[SEP]/[PAD] (or BOS/EOS/PAD) tokens; "
                         f"got start={start}, eos={eos}, pad={pad}")
    for target in (model.config, model.generation_config):
        target.decoder_start_token_id = start
        target.bos_token_id = start
        target.eos_token_id = eos
        target.pad_token_id = pad
    model.config.vocab_size = model.config.decoder.vocab_size
    out.mkdir(parents=True, exist_ok=True)
    (out / _MARKER).unlink(missing_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / _MARKER).write_text(json.dumps(source), encoding="utf-8")
    return out
