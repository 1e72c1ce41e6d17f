"""AdamW with weight-decay groups, and the warmup + decay schedule, built from TrainingConfig.

>>> from tuneforge.engine.optim import warmup_steps_for
>>> warmup_steps_for(0.1, 250), warmup_steps_for(30, 250)
(25, 30)
"""

from __future__ import annotations

import re
from typing import Any

from tuneforge.config.schema import TrainingConfig
from tuneforge.errors import ConfigError

# a numbered layer of a stack: BERT-likes encoder.layer.N, GPT-2 h.N, Llama layers.N, T5 block.N
_LAYER = re.compile(r"(?:^|\.)(?:layer|layers|h|block|blocks)\.(\d+)\.")
_EMBEDDING = re.compile(r"(?:^|\.)(?:embeddings?|embed_\w+|wte|wpe|shared)\.")


def warmup_steps_for(warmup: int | float, total_steps: int) -> int:
    """An int is a number of steps; a float in [0, 1) a fraction of all steps. Never above the total."""
    steps = round(warmup * total_steps) if isinstance(warmup, float) else int(warmup)
    return min(steps, total_steps)


def layer_scales(names: list[str], decay: float) -> list[float]:
    """Each parameter's learning-rate factor under layer-wise decay: decay^(L - i) for numbered layer i of L,
    decay^(L + 1) for the embeddings, 1 above the layers.

    >>> layer_scales(["bert.embeddings.word_embeddings.weight", "bert.encoder.layer.0.output.dense.weight",
    ...               "bert.encoder.layer.1.output.dense.weight", "classifier.weight"], 0.5)
    [0.125, 0.25, 0.5, 1.0]
    """
    if decay == 1.0:
        return [1.0] * len(names)
    index = [int(m.group(1)) if (m := _LAYER.search(n)) else None for n in names]
    if all(i is None for i in index):
        raise ConfigError("training.layerwise_lr_decay: this model has no numbered layers to decay over (names "
                          f"like encoder.layer.0; first parameter: {names[0] if names else 'none'}); set it to 1.0")
    top = max(i for i in index if i is not None) + 1
    return [decay ** (top - i) if i is not None else decay ** (top + 1) if _EMBEDDING.search(n) else 1.0
            for n, i in zip(names, index)]


def build_optimizer(model: Any, cfg: TrainingConfig, learning_rate: float, device_type: str) -> Any:
    """No weight decay on biases and normalisation weights (any parameter with fewer than 2 dims); the
    parameters the checkpoint did not have (`model.tuneforge_new_keys`) at `head_learning_rate` when set; the
    others scaled by `layerwise_lr_decay` (each group's factor is its `lr_scale`, which the LR range test keeps)."""
    import torch

    new = tuple(getattr(model, "tuneforge_new_keys", None) or ()) if cfg.head_learning_rate is not None else ()
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    scales = layer_scales([n for n, _ in named], cfg.layerwise_lr_decay)
    body: dict[float, list[Any]] = {}
    head = []
    for (name, p), scale in zip(named, scales):  # LoRA prefixes: base_model.model.classifier.modules_to_save...
        plain = name.replace("modules_to_save.default.", "")
        if any(plain == k or plain.endswith("." + k) for k in new):
            head.append(p)
        else:
            body.setdefault(scale, []).append(p)
    groups = []
    for scale, params in sorted(body.items(), reverse=True):  # the full rate first, as without decay
        extra = {} if scale == 1.0 else {"lr": learning_rate * scale, "lr_scale": scale}
        groups += [{"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay, **extra},
                   {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0, **extra}]
    if head:
        groups += [{"params": [p for p in head if p.ndim >= 2], "weight_decay": cfg.weight_decay,
                    "lr": cfg.head_learning_rate},
                   {"params": [p for p in head if p.ndim < 2], "weight_decay": 0.0, "lr": cfg.head_learning_rate}]
    groups = [g for g in groups if g["params"]] if len(body) > 1 else groups
    kwargs = {"lr": learning_rate, "betas": (cfg.adam_beta1, cfg.adam_beta2), "eps": cfg.adam_epsilon}
    if device_type in ("cuda", "cpu"):
        try:  # fused kernels: measured 6x faster than the per-tensor loop for MiniLM on CPU
            return torch.optim.AdamW(groups, fused=True, **kwargs)
        except (RuntimeError, TypeError):  # older torch or an unsupported dtype
            pass
    return torch.optim.AdamW(groups, **kwargs)


def decay_note(optimizer: Any, cfg: TrainingConfig) -> str | None:
    """The one line a run prints under layer-wise decay: its range of peak rates."""
    if cfg.layerwise_lr_decay == 1.0:
        return None
    scales = sorted({g.get("lr_scale", 1.0) for g in optimizer.param_groups})
    peaks = sorted(g["lr"] for g in optimizer.param_groups)
    return (f"layer-wise learning-rate decay {cfg.layerwise_lr_decay:g}: {len(scales)} rates, peak {peaks[0]:.2g} "
            f"(embeddings) to {peaks[-1]:.2g}")


def build_scheduler(optimizer: Any, cfg: TrainingConfig, total_steps: int) -> Any:
    from transformers import get_scheduler

    warmup = warmup_steps_for(cfg.warmup_steps, total_steps)
    name = cfg.lr_scheduler_type
    if name == "constant" and warmup > 0:
        name = "constant_with_warmup"  # "constant" means after warmup; HF's plain constant has none
    return get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)
