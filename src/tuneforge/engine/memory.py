"""Pre-flight training-memory estimate, device memory, and the memory savers (gradient checkpointing, dtype).

>>> from tuneforge.engine.memory import estimate_training_memory
>>> e = estimate_training_memory(n_params=110_000_000, n_trainable=110_000_000, batch_size=32, seq_len=128,
...                              layers=12, hidden=768, heads=12)
>>> round(e.weights / 2**30, 2), round(e.optimizer / 2**30, 2), e.total > e.weights + e.gradients + e.optimizer
(0.41, 0.82, True)

The estimate, in bytes, for one process (Ψt trainable parameters, Ψf frozen, Ψ = Ψt + Ψf, N processes):
- weights: 4 per trainable parameter (trainable weights stay fp32), 4 or 2 per frozen one (`torch_dtype`);
  under mixed precision autocast also keeps a 16-bit copy of the weights it uses (2 per parameter).
- gradients: 4 per trainable parameter; optimizer: AdamW's two fp32 moments, 8 per trainable parameter.
- activations per transformer block (Korthikanti et al. 2022, "Reducing Activation Recomputation"):
  s*b*h*(34 + 5*a*s/h) bytes in 16-bit, twice that in fp32; with gradient checkpointing only each block's
  input (2*s*b*h) is kept plus one block recomputed at a time. Language-model heads add the logits and their
  gradient, 2 x 4*b*s*vocab bytes.
By strategy (`distributed.strategy`; one process: the terms above, whatever the strategy):
- ddp with N > 1: the terms above, plus DDP's gradient buckets, a second copy of the gradients (4Ψt; Li et al.
  2020, "PyTorch Distributed", gradient_as_bucket_view off as accelerate leaves it).
- deepspeed: ZeRO (Rajbhandari et al. 2020, "ZeRO: Memory Optimizations Toward Training Trillion Parameter
  Models", Fig. 1, K = 12 for mixed-precision Adam): stage 2 keeps 2Ψ + (2 + K)Ψ/N, the 16-bit weights whole
  (DeepSpeed casts the model) and the 16-bit gradients and fp32 master weights + moments sharded; stage 3
  (2 + 2 + K)Ψ/N, plus one block's (or the embeddings') gathered 16-bit weights at a time. In fp32 the weights
  are the master copy: 4Ψ whole (stage 2) or /N (stage 3), gradients 4Ψt/N, moments 8Ψt/N.
  cpu_offload: the optimizer term (moments and master weights) leaves the GPU; at stage 3 the sharded weights
  too.
- fsdp (FSDP2; Zhao et al. 2023, "PyTorch FSDP"): fp32 weights, gradients and moments sharded,
  (4Ψt + fΨf + 4Ψt + 8Ψt)/N, plus the gathered weights in the compute dtype: one block at a time and the
  embeddings group (accelerate keeps it gathered from forward to backward), or every block when
  fsdp_reshard_after_forward is false. cpu_offload (CPUOffloadPolicy): sharded weights, gradients and moments
  all stay in CPU memory; only the gathered weights are on the GPU.
It is an upper-bound style estimate (fused attention kernels store less, allocator fragmentation more, the
communication buckets of ZeRO and FSDP are not counted): good for "will this fit", not for accounting.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tuneforge.errors import UserError

GiB = 2**30


@dataclass
class MemoryEstimate:
    weights: int
    gradients: int
    optimizer: int
    activations: int

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations

    def to_dict(self) -> dict[str, int]:
        return {**asdict(self), "total": self.total}

    def render(self) -> str:
        parts = ", ".join(f"{k} {v / GiB:.2f}" for k, v in asdict(self).items())
        return f"{self.total / GiB:.2f} GiB ({parts})"


def estimate_training_memory(*, n_params: int, n_trainable: int, batch_size: int, seq_len: int, layers: int,
                             hidden: int, heads: int, vocab: int = 0, mixed_precision: str = "no",
                             frozen_bytes: int = 4, gradient_checkpointing: bool = False, strategy: str = "ddp",
                             world: int = 1, zero_stage: int = 2, cpu_offload: bool = False,
                             reshard_after_forward: bool = True, block_params: int = 0,
                             embedding_params: int = 0) -> MemoryEstimate:
    """Bytes one process needs to train: see the module docstring for each term. `vocab` > 0 adds LM logits;
    `block_params` / `embedding_params`: the largest transformer block's and the embeddings' parameters (what
    fsdp and ZeRO-3 gather)."""
    frozen = n_params - n_trainable
    half = mixed_precision in ("bf16", "fp16")
    weights = 4 * n_trainable + frozen_bytes * frozen + (2 * n_params if half else 0)
    act_scale = 1 if half else 2  # the formula counts 16-bit activations
    s, b, h, a = seq_len, batch_size, max(hidden, 1), max(heads, 1)
    per_block = int(s * b * h * (34 + 5 * a * s / h)) * act_scale
    # checkpointing keeps each block's input and recomputes one block at a time
    activations = layers * 2 * s * b * h * act_scale + per_block if gradient_checkpointing else layers * per_block
    activations += 2 * 4 * b * s * vocab
    estimate = MemoryEstimate(weights, 4 * n_trainable, 8 * n_trainable, activations)
    if world > 1 and strategy == "ddp":
        estimate.gradients *= 2  # DDP's buckets
    elif strategy == "deepspeed":
        estimate = _zero(estimate, n_params, n_trainable, frozen_bytes, half, max(world, 1), zero_stage, cpu_offload,
                         max(block_params, embedding_params))
    elif strategy == "fsdp":
        gathered = (block_params + embedding_params) if reshard_after_forward else n_params
        n = max(world, 1)
        sharded = 0 if cpu_offload else (4 * n_trainable + frozen_bytes * frozen) // n
        estimate = MemoryEstimate(sharded + gathered * (2 if half else 4), 0 if cpu_offload else 4 * n_trainable // n,
                                  0 if cpu_offload else 8 * n_trainable // n, activations)
    return estimate


def _zero(base: MemoryEstimate, n_params: int, n_trainable: int, frozen_bytes: int, half: bool, n: int, stage: int,
          offload: bool, gathered: int) -> MemoryEstimate:
    """DeepSpeed ZeRO-2/3's terms (module docstring): 16-bit weights and gradients with an fp32 master copy in the
    optimizer under mixed precision, fp32 weights that are the master copy otherwise."""
    frozen = n_params - n_trainable
    weights = 2 * n_params if half else 4 * n_trainable + frozen_bytes * frozen
    if stage == 3:
        weights = (0 if offload else weights // n) + gathered * (2 if half else 4)
    gradients = (2 if half else 4) * n_trainable // n
    optimizer = 0 if offload else (12 if half else 8) * n_trainable // n
    return MemoryEstimate(weights, gradients, optimizer, base.activations)


def model_dims(model_config: Any) -> dict[str, int]:
    """layers, hidden size and heads from a transformers config (encoder-decoders: both stacks' layers)."""
    def first(cfg: Any, *names: str) -> int:
        for name in names:
            value = getattr(cfg, name, None)
            if isinstance(value, int):
                return value
        return 0

    if hasattr(model_config, "encoder") and hasattr(model_config, "decoder"):  # EncoderDecoderConfig
        enc, dec = model_dims(model_config.encoder), model_dims(model_config.decoder)
        return {"layers": enc["layers"] + dec["layers"], "hidden": max(enc["hidden"], dec["hidden"]),
                "heads": max(enc["heads"], dec["heads"]), "vocab": dec["vocab"]}
    layers = first(model_config, "num_hidden_layers", "n_layer", "num_layers", "encoder_layers")
    decoder = first(model_config, "num_decoder_layers", "decoder_layers")
    if getattr(model_config, "is_encoder_decoder", False):
        layers += decoder or layers
    return {"layers": layers, "hidden": first(model_config, "hidden_size", "n_embd", "d_model"),
            "heads": first(model_config, "num_attention_heads", "n_head", "num_heads", "encoder_attention_heads"),
            "vocab": first(model_config, "vocab_size")}


def estimate_for_model(model: Any, task_name: str, batch_size: int, seq_len: int, mixed_precision: str,
                       gradient_checkpointing: bool = False, distributed: Any = None,
                       world: int = 1) -> MemoryEstimate:
    """The estimate for `model` as task `task_name` trains it: its LM logits count when the task declares
    vocabulary logits per token (TaskSpec.vocab_logits). `distributed` (config DistributedConfig) and `world`
    (process count): the strategy's sharding; None is DDP."""
    from tuneforge.tasks import get_spec

    params = list({id(p): p for p in model.parameters()}.values())
    n_params = sum(p.numel() for p in params)
    n_trainable = sum(p.numel() for p in params if p.requires_grad)
    frozen = [p for p in params if not p.requires_grad]
    frozen_bytes = round(sum(p.numel() * p.element_size() for p in frozen) / max(1, sum(p.numel() for p in frozen)))
    dims = model_dims(model.config)
    return estimate_training_memory(
        n_params=n_params, n_trainable=n_trainable, batch_size=batch_size, seq_len=seq_len, layers=dims["layers"],
        hidden=dims["hidden"], heads=dims["heads"], vocab=dims["vocab"] if get_spec(task_name).vocab_logits else 0,
        mixed_precision=mixed_precision, frozen_bytes=frozen_bytes or 4, gradient_checkpointing=gradient_checkpointing,
        world=world, **(_sharding(model, distributed) if distributed is not None else {}))


def _sharding(model: Any, distributed: Any) -> dict[str, Any]:
    """The strategy's keywords for the estimate; for fsdp and deepspeed also what they gather: the largest
    transformer block (engine/sharding.py block_classes) and the embeddings."""
    out = {"strategy": distributed.strategy, "zero_stage": distributed.zero_stage,
           "cpu_offload": distributed.cpu_offload, "reshard_after_forward": distributed.fsdp_reshard_after_forward}
    if distributed.strategy == "ddp":
        return out
    from tuneforge.engine.sharding import block_classes

    classes = set(block_classes(model))
    embeddings = {id(p): p for get in ("get_input_embeddings", "get_output_embeddings")
                  for m in [getattr(model, get, lambda: None)()] if m is not None for p in m.parameters()}
    blocks = [m for m in model.modules() if type(m).__name__ in classes]
    return {**out, "block_params": max((sum(p.numel() for p in m.parameters()) for m in blocks), default=0),
            "embedding_params": sum(p.numel() for p in embeddings.values())}


def available_memory(device: Any) -> int | None:
    """Free bytes for training: free GPU memory, or MemAvailable from /proc/meminfo on CPU (None if unknown)."""
    import torch

    if getattr(device, "type", str(device)) == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def report_memory(estimate: MemoryEstimate, available: int | None, where: str, console: Any) -> bool:
    """Print the estimate; warn (and return True) when it exceeds the available memory."""
    console.print(f"memory estimate: {estimate.render()}", highlight=False)
    if available is not None and estimate.total > available:
        console.print(f"[yellow]warning:[/] the estimated training memory ({estimate.total / GiB:.2f} GiB) exceeds "
                      f"the {available / GiB:.2f} GiB available on {where}; lower per_device_train_batch_size or the "
                      "maximum length, or set gradient_checkpointing=true, auto_find_batch_size=true, or use LoRA")
        return True
    return False


def checkpointing(model: Any) -> bool:
    """Whether gradient (activation) checkpointing is on; transformers 5.2x renamed the property and warns on the
    old name (as for the enabling call below)."""
    on = getattr(model, "is_activation_checkpointing", None)
    return bool(getattr(model, "is_gradient_checkpointing", False) if on is None else on)


def apply_memory_savers(model: Any, cfg: Any, mixed_precision: str) -> list[str]:
    """Gradient checkpointing, and frozen weight matrices in `model.torch_dtype`; returns lines to print."""
    import torch

    notes = []
    if cfg.training.gradient_checkpointing:
        if not getattr(model, "supports_gradient_checkpointing", True) and not hasattr(model, "peft_config"):
            raise UserError(f"training.gradient_checkpointing: {type(model).__name__} does not support it; "
                            "set gradient_checkpointing=false")
        # non-reentrant: works with frozen inputs (LoRA, frozen embeddings) without enable_input_require_grads
        # transformers 5.2x renamed gradient_checkpointing_enable to activation_checkpointing_enable
        # (and its keyword to activation_checkpointing_kwargs); the old name warns
        kwargs = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        if getattr(model.config, "use_cache", None):
            model.config.use_cache = False  # a KV cache during training defeats checkpointing (and warns)
        notes.append("gradient checkpointing: on (activations recomputed in the backward pass)")
    dtype_name = cfg.model.torch_dtype
    if dtype_name != "float32":
        needed = {"bfloat16": "bf16", "float16": "fp16"}[dtype_name]
        if mixed_precision != needed:
            return notes + [f"[yellow]warning:[/] model.torch_dtype={dtype_name} needs mixed_precision={needed} "
                            f"(this run uses {mixed_precision}); keeping float32 weights"]
        dtype = getattr(torch, dtype_name)
        frozen = [p for p in model.parameters() if not p.requires_grad and p.ndim >= 2 and p.is_floating_point()]
        for p in frozen:
            p.data = p.data.to(dtype)
        saved = sum(p.numel() for p in frozen) * 2
        notes.append(f"torch_dtype {dtype_name}: {len(frozen)} frozen weight matrices stored in {dtype_name} "
                     f"({saved / GiB:.2f} GiB saved); trainable weights stay float32" if frozen else
                     f"torch_dtype {dtype_name}: no frozen weights to store in {dtype_name} (freeze.* or LoRA "
                     "freezes them); trainable weights stay float32")
    return notes
