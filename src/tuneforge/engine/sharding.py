"""Which modules of a model FSDP2 shards together, as accelerate 1.15 wraps them (`fsdp2_prepare_model`), and
the models that wrapping cannot take.

>>> from transformers import GPT2Config, GPT2LMHeadModel                        # doctest: +SKIP
>>> model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=16, n_head=2))          # doctest: +SKIP
>>> block_classes(model), tied_modules(model)                                    # doctest: +SKIP
(['GPT2Block'], [['transformer.wte', 'lm_head']])

accelerate makes each transformer block (a class in `model._no_split_modules`; tuneforge names the class of the
repeated layers for models that declare none) one shard group, then one group of
the input embeddings, the final norm and the output embeddings (tied embeddings land in it together; it stays
gathered from forward to backward), then the root with the rest. It finds tied embeddings by identity
(`input.weight is output.weight`), not from `config.tie_word_embeddings`. Two cases fail there, both found on a
one-process CPU group (gloo, torch 2.13, accelerate 1.15: the fully_shard calls are accelerate's):
- a block class that contains the input embeddings (BertEmbeddings, RobertaEmbeddings): the embeddings end up in
  two groups. `block_classes` leaves such a class out; BERT and RoBERTa then shard and train (GPT-2, Llama,
  DistilBERT, and GPT-2 with LoRA did as they are).
- a parameter tied to more modules than the input and output embeddings (T5 and BART tie `shared` to the encoder's
  and decoder's embed_tokens and to lm_head; BertForMaskedLM ties the prediction bias to the decoder's): torch
  refuses a parameter visible to two groups. `check_fsdp_model` refuses such a model in one line. (Sharding each
  `tied_modules` group first, `fully_shard([shared, encoder.embed_tokens, decoder.embed_tokens, lm_head])`, let
  T5 and BART shard and back-propagate on that CPU group: a way for the engine to take them instead.)
"""

from __future__ import annotations

import functools
from typing import Any

from tuneforge.errors import UserError


def block_classes(model: Any) -> list[str]:
    """The block classes FSDP2 shards one group each: `model._no_split_modules` present in the model (else the
    class of its repeated layers: DistilBERT, DeBERTa-v2 and ELECTRA declare none), without a class that
    contains the input embeddings."""
    modules = dict(model.named_modules())
    embeddings = getattr(model, "get_input_embeddings", lambda: None)()
    where = next((n for n, m in modules.items() if m is embeddings), None)
    holders = {type(m).__name__ for n, m in modules.items()
               if where is not None and (where == n or where.startswith(f"{n}."))}
    present = {type(m).__name__ for m in modules.values()}
    kept = [n for n in getattr(model, "_no_split_modules", None) or [] if n in present and n not in holders]
    if not kept:
        from tuneforge.engine.compiling import repeated_blocks

        kept = sorted({type(b).__name__ for b in repeated_blocks(model)} - holders)
    return kept


def fsdp_wrap_classes(model: Any) -> list[str]:
    """`block_classes`, or a one-line error for a model that has none (FSDP2 would hold it in one group)."""
    kept = block_classes(model)
    if not kept:
        raise UserError(f"distributed.strategy: fsdp: found no transformer block class in {type(model).__name__} "
                        "(_no_split_modules, repeated layers), so FSDP2 would hold it in one group and save no "
                        "memory; use strategy=deepspeed or name them in distributed.fsdp_config "
                        "(transformer_layer_cls_to_wrap)")
    return kept


def tied_modules(model: Any) -> list[list[str]]:
    """Names of the distinct modules holding one parameter object, for each parameter held by several (a module
    registered under two names counts once)."""
    owners: dict[int, list[str]] = {}
    for name, module in model.named_modules():
        for p in module._parameters.values():
            if p is not None:
                owners.setdefault(id(p), []).append(name)
    return [names for names in owners.values() if len(names) > 1]


def check_fsdp_model(model: Any, classes: list[str] | None = None) -> None:
    """Refuse a model whose tied parameters accelerate's FSDP2 wrapping puts in two shard groups; fine when only
    the input and output embeddings share one, or when all its holders sit inside one wrapped block."""
    modules = dict(model.named_modules())
    classes = fsdp_wrap_classes(model) if classes is None else classes
    embeddings = {id(getattr(model, name, lambda: None)()) for name in ("get_input_embeddings",
                                                                          "get_output_embeddings")}
    blocks = [n for n, m in modules.items() if type(m).__name__ in classes]
    for names in tied_modules(model):
        if all(id(modules[n]) in embeddings for n in names):
            continue
        inside = {max((b for b in blocks if n == b or n.startswith(f"{b}.")), key=len, default=None) for n in names}
        if len(inside) == 1 and None not in inside:
            continue
        raise UserError(f"distributed.strategy: fsdp: {type(model).__name__} ties one parameter to "
                        f"{', '.join(names)}, which accelerate's FSDP2 wrapping puts in different shard groups "
                        "(torch refuses that); use strategy=deepspeed for this model")


@functools.cache
def fsdp_plugin_class() -> type:
    """accelerate's FullyShardedDataParallelPlugin, choosing the block classes from the model it prepares (and
    refusing a model it cannot shard) when none were given, where accelerate takes `_no_split_modules` as is."""
    from accelerate.utils import FullyShardedDataParallelPlugin
    from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy

    class Plugin(FullyShardedDataParallelPlugin):
        def set_auto_wrap_policy(self, model: Any) -> None:
            if self.auto_wrap_policy is transformer_auto_wrap_policy and self.transformer_cls_names_to_wrap is None:
                self.transformer_cls_names_to_wrap = fsdp_wrap_classes(model)
                check_fsdp_model(model, self.transformer_cls_names_to_wrap)
            super().set_auto_wrap_policy(model)

    return Plugin
