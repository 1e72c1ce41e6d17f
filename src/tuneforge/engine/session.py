"""A training session: device and precision chosen once, seed set, then fit, test evaluation and save.

>>> session = start_session(cfg, console)                        # doctest: +SKIP
>>> metrics = session.fit(cfg, task, model, tokenizer, splits, data, run_dir)  # doctest: +SKIP

The session holds what the engine chose (device, precision) and what it changes during a run (the evaluation
batch after an out-of-memory error), never a config: the one resolved config is passed to each call.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneforge.config.schema import RunConfig
from tuneforge.data.prepared import PreparedData, TokenizedSplit
from tuneforge.engine.precision import cpu_has_native_bf16, explain_precision, resolve_mixed_precision
from tuneforge.engine.strategy import accelerator_kwargs

BASELINE_PROBE_ROWS = 64  # rows scored first to tell an untrained base model from a pretrained one


@dataclass
class Session:
    accelerator: Any
    mixed_precision: str
    device_description: str
    console: Any
    analysis: dict[str, Any] | None = None  # error analysis of the final model (set by fit)
    eval_batch: Any = None  # the run's evaluation batch (engine/evaluation.py EvalBatch; set by fit)
    # a sharded model's full weights, gathered by every process at the end of fit for the main process's save
    final_state: dict[str, Any] | None = None

    def fit(self, cfg: RunConfig, task: Any, model: Any, tokenizer: Any, splits: dict[str, TokenizedSplit],
            data: PreparedData, run_dir: Path) -> dict[str, Any]:
        from tuneforge.engine.evaluation import EvalBatch
        from tuneforge.engine.loop import fit
        from tuneforge.engine.tracking import Tracker

        self.eval_batch = EvalBatch.of(cfg, self.accelerator.device.type)

        total = sum(p.numel() for p in model.parameters())
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        self.console.print(f"device {self.device_description}, precision {self.mixed_precision}; "
                           f"parameters {_count(total)}, trainable {_count(trainable)}", highlight=False)
        # the held-out split: test when given (else validation); the best model is evaluated on it at the end
        target = "test" if "test" in splits else "validation" if "validation" in splits else None
        before = self.base_model_baseline(cfg, task, model, tokenizer, splits, data, target)
        tracker = Tracker(run_dir, 0, cfg.training.report_to, self.console, config=cfg.to_dict(),
                          main=self.accelerator.is_main_process)
        try:
            result = fit(cfg, task, model, tokenizer, splits, data, run_dir, tracker, self.accelerator,
                         self.eval_batch, analyse=target == "validation")
        finally:
            tracker.close()
        metrics: dict[str, Any] = {
            "train": {"global_step": result.global_step, "epoch": round(result.epoch, 4),
                      "train_seconds": round(result.train_seconds, 2), "stopped_early": result.stopped_early},
            "best_step": result.best_step, "metric_for_best_model": cfg.training.metric_for_best_model,
            "eval": result.best_metrics if cfg.training.load_best_model_at_end else result.last_metrics}
        if before:
            metrics["baselines"] = {"split": target, "base_model": before}
        # what the kept model tuned on validation goes into its config.json (before the test pass and the save)
        model_config = self.accelerator.unwrap_model(model).config
        for key in task.spec.config_metrics:
            if isinstance((metrics["eval"] or {}).get(key), (int, float)):
                setattr(model_config, key, metrics["eval"][key])
        # the error analysis of the model kept: collected during its validation pass when validation is the
        # held-out split (so no pass is repeated); else the kept model once more on the test split
        kept = result.best_analysis if cfg.training.load_best_model_at_end else result.last_analysis
        if target == "validation" and kept is not None:
            self.analysis = kept
        elif target is not None:
            from tuneforge.engine.evaluation import evaluate_with_analysis

            scores, self.analysis = evaluate_with_analysis(model, tokenizer, task, splits[target], data, target,
                                                           cfg, self.accelerator.device, self.eval_batch)
            if target == "test":
                metrics["test"] = scores
        from tuneforge.engine import deepspeed as ds
        from tuneforge.engine.fsdp import full_model_state, sharded

        if sharded(model):  # a collective: every process runs fit, only the main one saves (save_final)
            self.final_state = full_model_state(model) or None  # {} on the other processes
        elif ds.managed(model):  # the DeepSpeed engine's module: its fp32 master weights, gathered the same way
            self.final_state = ds.full_model_state(model) or None
        return metrics

    def base_model_baseline(self, cfg: RunConfig, task: Any, model: Any, tokenizer: Any,
                            splits: dict[str, TokenizedSplit], data: PreparedData, target: str | None
                            ) -> dict[str, Any] | None:
        """The model before fine-tuning, scored on the held-out split (tasks declaring base_model_baseline).
        Skipped on resume (the weights are no longer the base model's), when the checkpoint lacked weights
        (new cross-attention or head) and for an untrained model (perplexity above half the vocabulary size:
        a model trained from scratch has no base to compare with)."""
        t = cfg.training
        if (target is None or not t.baselines or not task.spec.base_model_baseline or t.resume_from_checkpoint
                or getattr(model, "tuneforge_new_keys", None)):
            return None
        from tuneforge.engine.evaluation import evaluate

        vocab = getattr(model.config, "vocab_size", None) or len(tokenizer)
        split = splits[target]

        def score(rows: TokenizedSplit) -> dict[str, Any] | None:
            metrics = evaluate(model, tokenizer, task, rows, data, cfg, self.accelerator.device, batch=self.eval_batch)
            if metrics.get("perplexity", 0) > vocab / 2:
                self.console.print("the base model is untrained (perplexity near a uniform guess): no base-model "
                                   "baseline", highlight=False)
                return None
            return {k: v for k, v in metrics.items() if isinstance(v, (int, float))}

        # a probe on the first rows finds a model trained from scratch for the cost of a few batches
        if len(split) > BASELINE_PROBE_ROWS and score(split.head(BASELINE_PROBE_ROWS)) is None:
            return None
        self.console.print(f"scoring the base model on the {target} split (baseline; baselines=false skips it)",
                           highlight=False)
        return score(split)

    def save_final(self, cfg: RunConfig, model: Any, tokenizer: Any, run_dir: Path) -> None:
        from tuneforge.engine.lora import is_peft, save_lora

        unwrapped = self.accelerator.unwrap_model(model)
        if is_peft(unwrapped):
            if self.final_state is not None:  # FSDP2: peft saves and merges an unsharded copy of the gathered state
                from tuneforge.engine.fsdp import plain_peft_copy

                unwrapped, self.final_state = plain_peft_copy(unwrapped, self.final_state), None
            save_lora(unwrapped, run_dir, cfg.lora.merge_weights)
        elif self.final_state is not None:  # FSDP2, DeepSpeed: the weights gathered (plain safetensors, as under DDP)
            unwrapped.save_pretrained(run_dir, state_dict=self.final_state)
            self.final_state = None
        else:
            unwrapped.save_pretrained(run_dir)
        tokenizer.save_pretrained(run_dir)


def _count(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.1f}K"


def wants_cuda(cfg: RunConfig) -> bool:
    """The session's device kind: a CUDA GPU when there is one, unless use_cpu."""
    import torch

    return torch.cuda.is_available() and not cfg.training.use_cpu


def start_session(cfg: RunConfig, console: Any, fp16_safe: bool = True) -> Session:
    """Pick device and precision; `fp16_safe=False` (T5 family) rules fp16 out of the automatic choice."""
    import torch
    from accelerate import Accelerator

    t = cfg.training
    cuda = wants_cuda(cfg)
    device_type = "cuda" if cuda else "cpu"
    bf16 = torch.cuda.is_bf16_supported() if cuda else cpu_has_native_bf16()
    mixed, warning = resolve_mixed_precision(t.mixed_precision, device_type, bf16, fp16_safe)
    if warning:
        console.print(f"[yellow]warning:[/] {warning}")
    console.print(explain_precision(t.mixed_precision, mixed, device_type, bf16, fp16_safe), highlight=False)
    from accelerate.state import AcceleratorState, PartialState

    from tuneforge.engine.fsdp import forget_fsdp, use_fsdp

    if forget_fsdp(cfg.distributed.strategy == "fsdp", cuda):
        # accelerate keeps one strategy per process too: an FSDP state left by an earlier session would shard a
        # DDP run (and a DDP state would ignore an FSDP run's plugin); rebuilt, the process group kept
        AcceleratorState._reset_state()
    if PartialState._shared_state.get("_cpu", not cuda) != (not cuda):
        # accelerate keeps one device per process: after a use_cpu run, a GPU run in the same process (a
        # notebook, a test session) would silently get the CPU (found on an H100); reset it all
        AcceleratorState._reset_state(reset_partial_state=True)
    elif AcceleratorState._shared_state.get("_mixed_precision", mixed) != mixed:
        # and one precision: a second run (lr-find then train) with another precision would raise; the
        # device/distributed state is kept
        AcceleratorState._reset_state()
    if not cuda:  # deepspeed, when installed, is imported by accelerate's unwrap_model and would warn that it
        os.environ.setdefault("DS_ACCELERATOR", "cpu")  # found no GPU; a DeepSpeed run on the CPU needs it anyway
    kwargs = accelerator_kwargs(cfg, cuda, mixed, console)  # engine/strategy.py
    accelerator = Accelerator(mixed_precision=mixed, cpu=not cuda, gradient_accumulation_steps=1, **kwargs)
    if "fsdp_plugin" in kwargs:  # on the CPU, what accelerate does for a GPU group (engine/fsdp.py)
        use_fsdp(accelerator, kwargs["fsdp_plugin"], mixed)
    if "deepspeed_plugin" in kwargs:  # the same for DeepSpeed (engine/deepspeed.py)
        from tuneforge.engine.deepspeed import use_deepspeed

        use_deepspeed(accelerator, kwargs["deepspeed_plugin"], mixed)
    if cuda:
        name = torch.cuda.get_device_name(accelerator.device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    else:
        name = f"CPU ({torch.get_num_threads()} threads)"
    precision = {"no": "fp32", "fp16": "fp16 (loss scaling)", "bf16": "bf16"}[mixed]
    return Session(accelerator, precision, name, console)
