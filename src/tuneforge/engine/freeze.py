"""Layer freezing that finds embeddings, transformer blocks and the head from the model's structure.

>>> import torch, transformers
>>> from tuneforge.config.schema import FreezeConfig
>>> from tuneforge.engine.freeze import apply_freeze
>>> torch.manual_seed(0) and None
>>> model = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=2, n_embd=16, n_head=2, vocab_size=50))
>>> for note in apply_freeze(model, FreezeConfig(embeddings=True, bottom_layers=1)):
...     print(note)
freeze: the LM head is tied to the input embeddings (one matrix): frozen with the embeddings
freeze: embeddings (2 tensors), bottom 1 of 2 blocks in transformer.h; 1 block(s) and the rest train
>>> model.lm_head.weight.requires_grad, model.transformer.h[1].attn.c_attn.weight.requires_grad
(False, True)

How things are found, with no attribute paths per architecture:
- **blocks**: the homogeneous `nn.ModuleList`s (every child of one class) not nested inside another one; a
  decoder-only or encoder-only model has one stack (the largest), an encoder-decoder one per side
  (`get_encoder()` / `get_decoder()`), so `bottom_layers: N` freezes N blocks of each.
- **embeddings**: `get_input_embeddings()` of every stack, plus its sibling `nn.Embedding`s (positions,
  token types); when its parent is an embeddings container (BERT's `BertEmbeddings`, with its LayerNorm)
  the whole container.
- **head**: the parameters the checkpoint did not have (`model.tuneforge_new_keys`: a new classifier),
  `get_output_embeddings()` (the LM head), and anything outside `model.base_model` (e.g. a classifier
  loaded with the checkpoint).

**The tied-weights rule.** GPT-2, T5 and bert2bert tie the LM head to the input embeddings: one tensor. A
request that names the embeddings (`embeddings`, a pattern matching either name) freezes that tensor, so the
head freezes too; a broad request (`all_but_head`, `bottom_layers`) never freezes the head, so with
`all_but_head` the tied embeddings keep training. Either way the run prints a note, since the request
cannot hold exactly as written. Frozen parameters never reach the optimizer (no AdamW state for them).
"""

from __future__ import annotations

import fnmatch
from typing import Any

from tuneforge.config.schema import FreezeConfig
from tuneforge.errors import UserError


def _homogeneous_lists(model: Any) -> list[tuple[str, Any]]:
    """Top-level ModuleLists whose children share one class and hold parameters: the block stacks."""
    import torch

    found: list[tuple[str, Any]] = []
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.ModuleList) or len(module) == 0:
            continue
        if len({type(child) for child in module}) != 1 or not any(True for _ in module.parameters()):
            continue
        if any(name.startswith(outer + ".") for outer, _ in found):
            continue  # nested inside a block already found (e.g. T5's per-block `layer` list)
        found.append((name, module))
    return found


def _size(module: Any) -> int:
    return sum(p.numel() for p in module.parameters())


def block_stacks(model: Any) -> list[tuple[str, Any]]:
    """(name, ModuleList) of each transformer stack: one, or encoder and decoder for encoder-decoders."""
    candidates = _homogeneous_lists(model)
    if not candidates:
        return []
    sides = []
    if getattr(model.config, "is_encoder_decoder", False) and hasattr(model, "get_encoder"):
        sides = [side for side in (model.get_encoder(), model.get_decoder()) if side is not None]
    if not sides:
        return [max(candidates, key=lambda c: _size(c[1]))]
    stacks = []
    for side in sides:
        inside = {id(m) for m in side.modules()}
        mine = [c for c in candidates if id(c[1]) in inside]
        if mine:
            stacks.append(max(mine, key=lambda c: _size(c[1])))
    return stacks


def embedding_modules(model: Any) -> list[Any]:
    """The input-embedding modules of every stack, with position/type embeddings beside them."""
    import torch

    owners = [model]
    if getattr(model.config, "is_encoder_decoder", False) and hasattr(model, "get_encoder"):
        owners = [m for m in (model.get_encoder(), model.get_decoder()) if m is not None] or [model]
    child_to_parent = {id(child): parent for parent in model.modules() for child in parent.children()}
    out: list[Any] = []
    for owner in owners:
        get = getattr(owner, "get_input_embeddings", None)
        emb = get() if get is not None else None
        if emb is None:
            continue
        parent = child_to_parent.get(id(emb))
        if parent is None:
            out.append(emb)
            continue
        holds_blocks = any(isinstance(c, torch.nn.ModuleList) for c in parent.modules())
        if not holds_blocks and type(parent).__name__.endswith("Embeddings"):
            out.append(parent)  # BERT-style container: word, position, type embeddings and their LayerNorm
        else:
            out += [c for c in parent.children() if isinstance(c, torch.nn.Embedding)]
    return out


def head_parameter_ids(model: Any) -> set[int]:
    new = set(getattr(model, "tuneforge_new_keys", []) or [])
    ids = {id(p) for n, p in model.named_parameters(remove_duplicate=False) if n in new}
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if output is not None:
        ids |= {id(p) for p in output.parameters()}
    base = getattr(model, "base_model", None)
    if base is not None and base is not model:
        inside = {id(p) for p in base.parameters()}
        ids |= {id(p) for p in model.parameters() if id(p) not in inside}
    return ids


def _ids(modules: list[Any]) -> set[int]:
    return {id(p) for m in modules for p in m.parameters()}


def apply_freeze(model: Any, cfg: FreezeConfig) -> list[str]:
    """Set requires_grad=False as `cfg` asks; returns the lines to print (what was frozen, tied-weight notes)."""
    if not cfg.enabled:
        return []
    named = list(model.named_parameters(remove_duplicate=False))
    head = head_parameter_ids(model)
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    tied = {id(output.weight)} & _ids(embedding_modules(model)) if output is not None else set()
    frozen: set[int] = set()
    notes: list[str] = []
    summary: list[str] = []
    if cfg.all_but_head:
        if not head:
            raise UserError("freeze.all_but_head: this model has no separate head to train (no new parameters, no "
                            "output embeddings); use freeze.bottom_layers or freeze.modules instead")
        frozen |= {id(p) for _, p in named if id(p) not in head}
        if tied:
            notes.append("freeze: the LM head is tied to the input embeddings (one matrix): all_but_head keeps it "
                         "trainable, so the input embeddings train too")
        summary.append("everything but the head")
    if cfg.bottom_layers:
        stacks = block_stacks(model)
        if not stacks:
            raise UserError("freeze.bottom_layers: found no stack of transformer blocks in this model; "
                            "freeze by name with freeze.modules instead")
        for name, blocks in stacks:
            if cfg.bottom_layers > len(blocks):
                raise UserError(f"freeze.bottom_layers: {cfg.bottom_layers} but {name} has only {len(blocks)} "
                                f"blocks; use at most {len(blocks)}")
            frozen |= _ids(list(blocks[:cfg.bottom_layers])) - head
            summary.append(f"bottom {cfg.bottom_layers} of {len(blocks)} blocks in {name}; "
                           f"{len(blocks) - cfg.bottom_layers} block(s) and the rest train")
    if cfg.embeddings:
        embedding_ids = _ids(embedding_modules(model))
        if not embedding_ids:
            raise UserError("freeze.embeddings: this model exposes no input embeddings (get_input_embeddings); "
                            "freeze them by name with freeze.modules")
        frozen |= embedding_ids
        if tied:
            notes.append("freeze: the LM head is tied to the input embeddings (one matrix): frozen with the "
                         "embeddings")
        summary.insert(0, f"embeddings ({len(embedding_ids)} tensors)")
    for pattern in cfg.modules or []:
        hits = {id(p) for n, p in named if fnmatch.fnmatchcase(n, pattern)}
        if not hits:
            example = named[len(named) // 2][0] if named else "?"
            raise UserError(f"freeze.modules: pattern {pattern!r} matches no parameter name (names look like "
                            f"{example!r}); use * as a wildcard, e.g. '*.attention.*'")
        if tied & hits and not cfg.embeddings:
            notes.append(f"freeze: {pattern!r} matches the LM head or the input embeddings, which are one tied "
                         "matrix: both are frozen")
        frozen |= hits
        summary.append(f"{pattern!r} ({len(hits)} tensors)")
    for _, p in named:
        if id(p) in frozen:
            p.requires_grad_(False)
    if not any(p.requires_grad for p in model.parameters()):
        raise UserError("freeze: these settings freeze every parameter, so nothing would train; freeze less")
    return notes + ["freeze: " + ", ".join(summary)]
