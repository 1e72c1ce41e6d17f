"""Choose mixed precision: bf16 on GPUs that support it, fp16 with loss scaling on older GPUs, fp32 on CPU.

>>> from tuneforge.engine.precision import resolve_mixed_precision
>>> resolve_mixed_precision("bf16", "cpu")
('bf16', None)
"""

from __future__ import annotations


def resolve_mixed_precision(requested: str, device_type: str, bf16_supported: bool = False,
                            fp16_safe: bool = True) -> tuple[str, str | None]:
    """Return (accelerate mixed_precision value, warning or None). `fp16_safe=False` marks models whose
    activations overflow fp16 (T5 family): auto never picks fp16 for them and asking for it warns."""
    if requested == "auto":
        if device_type == "cuda":
            return ("bf16" if bf16_supported else "fp16" if fp16_safe else "no"), None
        return "no", None  # CPU autocast is opt-in until the performance work measures it per model
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
    'mixed precision: no (fp32) (auto: on CPU; autocast is opt-in there with mixed_precision=bf16)'
    """
    name = {"no": "no (fp32)", "fp16": "fp16 with dynamic loss scaling", "bf16": "bf16"}[chosen]
    if requested != "auto":
        return f"mixed precision: {name} (as configured)" if requested == chosen else f"mixed precision: {name}"
    if device_type != "cuda":
        why = "on CPU; autocast is opt-in there with mixed_precision=bf16"
    elif chosen == "bf16":
        why = "this GPU supports bf16: fp32 range, no loss scaling needed"
    elif chosen == "fp16":
        why = "this GPU lacks bf16; fp16 needs loss scaling against gradient underflow"
    else:
        why = "this GPU lacks bf16 and this model family overflows in fp16"
    return f"mixed precision: {name} (auto: {why})"
