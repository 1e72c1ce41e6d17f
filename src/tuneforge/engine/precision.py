"""Choose mixed precision: bf16 on GPUs that support it, fp16 with loss scaling on older GPUs; on CPUs, bf16
autocast where the processor computes bf16 natively (AMX or AVX512-BF16 on x86, BF16 on Arm), else fp32.

>>> from tuneforge.engine.precision import resolve_mixed_precision
>>> resolve_mixed_precision("bf16", "cpu")
('bf16', None)
"""

from __future__ import annotations

from typing import Any


def resolve_mixed_precision(requested: str, device_type: str, bf16_supported: bool = False,
                            fp16_safe: bool = True) -> tuple[str, str | None]:
    """Return (accelerate mixed_precision value, warning or None). `fp16_safe=False` marks models whose
    activations overflow fp16 (T5 family): auto never picks fp16 for them and asking for it warns."""
    if requested == "auto":
        if device_type == "cuda":
            return ("bf16" if bf16_supported else "fp16" if fp16_safe else "no"), None
        # bf16 autocast on a CPU without native bf16 is emulated and slower than fp32
        return ("bf16" if bf16_supported else "no"), None
    if requested == "fp16" and not fp16_safe and device_type == "cuda":
        return "fp16", ("T5-family models are known to overflow to NaN in fp16; prefer mixed_precision=bf16 "
                        "(or no); continuing with fp16 as asked")
    if requested == "fp16" and device_type != "cuda":
        return "no", "mixed_precision=fp16 needs a CUDA GPU; training in fp32 instead"
    if requested == "bf16" and device_type == "cuda" and not bf16_supported:
        return "fp16", "this GPU does not support bf16; using fp16 with loss scaling instead"
    return requested, None


def explain_precision(requested: str, chosen: str, device_type: str, bf16_supported: bool = False,
                      fp16_safe: bool = True) -> str:
    """One line saying which precision a run uses and why.

    >>> explain_precision("auto", "no", "cpu")
    'mixed precision: no (fp32) (auto: this CPU has no native bf16, where autocast would be slower)'
    """
    name = {"no": "no (fp32)", "fp16": "fp16 with dynamic loss scaling", "bf16": "bf16"}[chosen]
    if requested != "auto":
        return f"mixed precision: {name} (as configured)" if requested == chosen else f"mixed precision: {name}"
    if device_type != "cuda":
        why = ("this CPU computes bf16 natively (AMX/AVX512-BF16): faster matmuls, fp32 weights and optimizer"
               if chosen == "bf16" else "this CPU has no native bf16, where autocast would be slower")
    elif chosen == "bf16":
        why = "this GPU supports bf16: fp32 range, no loss scaling needed"
    elif chosen == "fp16":
        why = "this GPU lacks bf16; fp16 needs loss scaling against gradient underflow"
    else:
        why = "this GPU lacks bf16 and this model family overflows in fp16"
    return f"mixed precision: {name} (auto: {why})"


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (Linux /proc/cpuinfo flags); False when unknown."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith(("flags", "Features")):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"amx_bf16", "avx512_bf16", "bf16"})
    except OSError:
        pass
    return False


# transformers' modeling modules whose eager attention is BERT's own function, line for line (tests check each
# against the installed transformers): these get the bf16 mask below; any other model plain eager
BERT_EAGER_FAMILIES = frozenset({
    "albert.modeling_albert", "bart.modeling_bart", "bert.modeling_bert",
    "bert_generation.modeling_bert_generation", "camembert.modeling_camembert", "data2vec.modeling_data2vec_text",
    "distilbert.modeling_distilbert", "electra.modeling_electra", "ernie.modeling_ernie", "marian.modeling_marian",
    "mbart.modeling_mbart", "mobilebert.modeling_mobilebert", "pegasus.modeling_pegasus",
    "roberta.modeling_roberta", "roberta_prelayernorm.modeling_roberta_prelayernorm",
    "xlm_roberta.modeling_xlm_roberta", "xlm_roberta_xl.modeling_xlm_roberta_xl", "xmod.modeling_xmod"})
CPU_BF16_ATTENTION = "tuneforge_bf16_eager"


def bf16_eager_mask(*args: Any, dtype: Any = None, **kwargs: Any) -> Any:
    """transformers' eager attention mask (0 where attended, the dtype's lowest value elsewhere), made in the
    autocast dtype when autocast is on. Under CPU bf16 autocast the attention scores are bf16 and the eager mask
    fp32 (the embeddings' dtype), so `scores + mask` promoted the whole (batch x heads x length x length) tensor
    to fp32: the softmax and the dropout ran in fp32 and the probabilities were cast back to bf16 for the next
    matmul. With a bf16 mask the forward gives the same probabilities (the mask adds 0, or a number whose exp is
    0; the softmax accumulates in fp32 either way) with one cast fewer each way; the backward keeps them in bf16.
    On a one-core MiniLM step: 1.06x in bench/cpu_step_profile.py (inside the machine's drift), 10-17% in an
    earlier probe; peak RSS of the whole command ~220 MiB lower (docs/BENCHMARKS.md)."""
    import torch
    from transformers.masking_utils import eager_mask

    device = torch.device(kwargs.get("device") or "cpu").type
    if torch.is_autocast_enabled(device):
        dtype = torch.get_autocast_dtype(device)
    return eager_mask(*args, dtype=dtype or torch.float32, **kwargs)


def cpu_bf16_attention(model: Any) -> str | None:
    """Under bf16 autocast on CPU, switch SDPA attention to eager: PyTorch's CPU flash-attention backward is
    slow in bf16 (measured: 40% of a MiniLM step), while eager attention's bmm calls run on AMX. Families with
    BERT's eager function get it with `bf16_eager_mask`. Returns a note."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if getattr(base.config, "_attn_implementation", None) != "sdpa" or not hasattr(base, "set_attn_implementation"):
        return None
    family = ".".join(type(base).__module__.split(".")[-2:])  # bert.modeling_bert
    name = "eager"
    if family in BERT_EAGER_FAMILIES:  # BERT's eager attention function with the mask above
        from transformers import AttentionInterface, AttentionMaskInterface
        from transformers.models.bert.modeling_bert import eager_attention_forward

        AttentionInterface.register(CPU_BF16_ATTENTION, eager_attention_forward)
        AttentionMaskInterface.register(CPU_BF16_ATTENTION, bf16_eager_mask)
        name = CPU_BF16_ATTENTION
    try:
        base.set_attn_implementation(name)
    except (ValueError, ImportError, NotImplementedError):  # an architecture without an eager path
        return None
    return ("attention: eager instead of SDPA (faster for bf16 training on CPU)" if name == "eager" else
            "attention: eager with a bf16 mask instead of SDPA (faster for bf16 training on CPU)")
