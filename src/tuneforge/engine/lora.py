"""LoRA adapters (peft) for every task: wrap after loading, train adapters + new modules, save both ways.

>>> model = apply_lora(model, cfg.lora, cfg.task, new_keys=["classifier.weight"])   # doctest: +SKIP

Modules the checkpoint did not have (any new classification head, whatever its name, e.g. BART's
`classification_head`; resized embeddings) are trained fully (`modules_to_save`): peft's SEQ_CLS default
only knows `classifier` and `score`, and a head left frozen at random init silently ruins a run.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from tuneforge.config.schema import LoraConfig, RunConfig
from tuneforge.tasks import get_spec

LORA_LEARNING_RATE = 2e-4  # adapters want about 10x the learning rate of full fine-tuning


def resolve_learning_rate(cfg: RunConfig) -> RunConfig:
    """A LoRA run without an explicit learning_rate trains at LORA_LEARNING_RATE (the loader leaves a LoRA run's
    rate null instead of filling in the task's full-fine-tuning default). Runs before the task's own resolve,
    so this default also wins over seq2seq's model-family rate, as an explicit rate does."""
    if not cfg.lora.enabled or cfg.training.learning_rate is not None:
        return cfg
    return dataclasses.replace(cfg, training=dataclasses.replace(cfg.training, learning_rate=LORA_LEARNING_RATE))


def new_module_names(new_keys: list[str]) -> list[str]:
    """Modules owning parameters that the checkpoint lacked (newly initialised)."""
    return sorted({key.rsplit(".", 1)[0] for key in new_keys if "." in key})


def apply_lora(model: Any, cfg: LoraConfig, task: str, new_keys: list[str]) -> Any:
    """Wrap `model` for LoRA training as peft's task type that task `task` declares (TaskSpec.lora_task_type)."""
    import peft
    from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULTS

    model_type = getattr(model.config, "model_type", "")
    targets = cfg.target_modules or (list(DEFAULTS[model_type]) if model_type in DEFAULTS else "all-linear")
    to_save = new_module_names(new_keys)
    embeddings = model.get_input_embeddings()
    extra = {}
    if ("ensure_weight_tying" in {f.name for f in dataclasses.fields(peft.LoraConfig)}
            and getattr(model.config, "tie_word_embeddings", False)
            and any(module is embeddings for name, module in model.named_modules() if name in to_save)):
        extra["ensure_weight_tying"] = True  # resized tied embeddings stay one matrix, also after merging
    config = peft.LoraConfig(task_type=get_spec(task).lora_task_type, r=cfg.r, lora_alpha=cfg.lora_alpha,
                             lora_dropout=cfg.lora_dropout, target_modules=targets,
                             modules_to_save=to_save or None,
                             fan_in_fan_out=model_type == "gpt2", **extra)  # GPT-2 stores Linear weights transposed
    return peft.get_peft_model(model, config)


def is_peft(model: Any) -> bool:
    return hasattr(model, "peft_config")


def save_lora(model: Any, run_dir: Path, merge: bool) -> Any:
    """Adapter into run_dir/adapter; with `merge`, full merged weights at the root. Returns the model to
    keep using (merged weights when merged)."""
    model.save_pretrained(run_dir / "adapter")
    if not merge:
        return model
    import torch

    # merge W + scale * B @ A in full fp32: training enables TF32 matmuls on GPU, whose 10-bit mantissa put the
    # merged T5 model's logits 1e-4 away from the adapter's on an H100 (the weights users deploy)
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        merged = model.merge_and_unload()
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    merged.save_pretrained(run_dir)
    return merged
