"""A small GPT-2 for the offline causal-LM demo: no pretrained GPT-2 is reachable here, so the demo trains
one from scratch (4 layers, width 128) with a byte-level BPE tokenizer learned from the demo corpus.

>>> path = build_tiny_gpt2(["Weather for Oslo on Monday: ..."], "runs/demo-tiny-gpt2")   # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path


def build_tiny_gpt2(corpus: list[str], out_dir: str | os.PathLike, seed: int = 0) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    out = Path(out_dir)
    if (out / "model.safetensors").exists() and (out / "tokenizer.json").exists():
        return out
    import torch

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=1000, special_tokens=["<|endoftext|>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>",
                                   model_max_length=256)
    fast.save_pretrained(out)
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=tok.get_vocab_size(), n_positions=256, n_embd=128, n_layer=4, n_head=4,
                        bos_token_id=0, eos_token_id=0)
    GPT2LMHeadModel(config).save_pretrained(out)
    return out
