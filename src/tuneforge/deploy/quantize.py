"""int8 dynamic quantization: weights of nn.Linear layers stored as int8 with one scale per output channel,
activations quantized on the fly at run time (CPU).

PyTorch (safetensors exports): `torch.ao.quantization.quantize_dynamic` with per-channel weights. Its packed
modules cannot be saved as safetensors, so the file holds each quantized weight as an int8 tensor plus a
float32 `<name>.weight_scale` vector; loading builds the model from its config, quantizes it the same way and
puts the stored int8 weights back, so nothing is re-quantized and no pickle is read.

ONNX exports: `onnxruntime.quantization.quantize_dynamic` (QInt8 weights, per channel) on the exported graph.

The output embedding (often tied to the input embedding) stays a float layer: quantizing it costs accuracy
and saves little time. Large embedding tables are stored as int8 rows with one scale each (on disk only:
they are turned back into float when loaded), which is where most of a small model's bytes are.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

INT8_FILE = "model.safetensors"
QUANT_CONFIG = "quantization.json"


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """torch.ao quantization works but warns that it is deprecated on every call."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", message=".*quantiz.*")
        yield


def quantizable_linears(model: Any) -> list[str]:
    """Names of the nn.Linear modules to quantize: all but the output embedding."""
    import torch

    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return [name for name, mod in model.named_modules()
            if type(mod) is torch.nn.Linear and mod is not output]


def quantize_torch(model: Any) -> Any:
    """Dynamic int8 quantization of the model's nn.Linear layers (a new model; the input is not changed)."""
    import torch
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    names = set(quantizable_linears(model))
    with _quiet():
        q = quantize_dynamic(model.cpu(), {name: per_channel_dynamic_qconfig for name in names},
                             dtype=torch.qint8, inplace=False)
    return q.eval()


def _quantized_modules(model: Any) -> dict[str, Any]:
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    return {name: mod for name, mod in model.named_modules() if isinstance(mod, DynamicLinear)}


def save_int8(model: Any, folder: Path) -> None:
    """Save a quantize_torch model as safetensors (int8 weights + scales) with its config."""
    import torch
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    with _quiet():
        quantized = _quantized_modules(model)
        for name, mod in quantized.items():
            w, b = mod.weight(), mod.bias()
            tensors[f"{name}.weight"] = w.int_repr().contiguous()
            tensors[f"{name}.weight_scale"] = w.q_per_channel_scales().float().contiguous()
            if b is not None:
                tensors[f"{name}.bias"] = b.detach().float().contiguous()
    embeddings = {f"{name}.weight" for name, mod in model.named_modules() if isinstance(mod, torch.nn.Embedding)}
    seen: set[int] = set()
    for key, value in model.state_dict().items():
        if not isinstance(value, torch.Tensor) or value.is_quantized or key.split("._packed_params")[0] in quantized:
            continue
        if any(key.startswith(f"{name}.") for name in quantized):
            continue
        ptr = value.data_ptr()
        if ptr in seen and value.numel():  # a tied copy: from_config ties it again
            continue
        seen.add(ptr)
        if key in embeddings and value.dtype == torch.float32 and value.numel() >= 1 << 16:
            # on disk only: int8 rows with one scale each, back to float on load (lookups stay float)
            scale = (value.detach().abs().amax(dim=1, keepdim=True) / 127.0).clamp(min=1e-12)
            tensors[key] = torch.round(value.detach() / scale).clamp(-127, 127).to(torch.int8).contiguous()
            tensors[key + "_row_scale"] = scale.squeeze(1).float().contiguous()
            continue
        tensors[key] = value.detach().contiguous().clone()
    save_file(tensors, str(folder / INT8_FILE), metadata={"format": "pt", "tuneforge_quantization": "int8-dynamic"})
    model.config.save_pretrained(folder)
    if getattr(model, "generation_config", None) is not None and model.can_generate():
        model.generation_config.save_pretrained(folder)
    (folder / QUANT_CONFIG).write_text(json.dumps({"method": "dynamic-int8-per-channel",
                                                   "layers": sorted(quantized)}, indent=2) + "\n")


def load_int8(auto_class: Any, folder: Path) -> Any:
    """Rebuild a model saved by save_int8: float skeleton from config, quantized like at export, weights set."""
    import torch
    from safetensors.torch import load_file
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic
    from transformers import AutoConfig, GenerationConfig

    layers = json.loads((folder / QUANT_CONFIG).read_text())["layers"]
    config = AutoConfig.from_pretrained(folder)
    model = auto_class.from_config(config).eval()
    if model.can_generate() and (folder / "generation_config.json").exists():
        model.generation_config = GenerationConfig.from_pretrained(folder)
    state = load_file(str(folder / INT8_FILE))
    packed = {k: state.pop(k) for k in [k for k in state if k.rsplit(".", 1)[0] in layers]}
    for key in [k for k in state if k.endswith("_row_scale")]:
        weight = key.removesuffix("_row_scale")
        state[weight] = state[weight].float() * state.pop(key)[:, None]
    result = model.load_state_dict(state, strict=False)  # everything but the quantized layers
    if result.unexpected_keys:
        raise ValueError(f"int8 export: unexpected weights {result.unexpected_keys[:3]}")
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    with _quiet():
        model = quantize_dynamic(model, {name: per_channel_dynamic_qconfig for name in layers}, dtype=torch.qint8,
                                 inplace=False)
        quantized = _quantized_modules(model)
        missing = sorted(set(layers) - set(quantized))
        if missing:
            raise ValueError(f"int8 export: layers {missing[:3]} were not quantized on load")
        for name, mod in quantized.items():
            scale = packed[f"{name}.weight_scale"].double()
            weight = torch._make_per_channel_quantized_tensor(
                packed[f"{name}.weight"], scale, torch.zeros(len(scale), dtype=torch.int64), 0)
            mod.set_weight_bias(weight, packed.get(f"{name}.bias"))
    return model.eval()


def quantize_onnx(source: Path, target: Path) -> None:
    """ONNX Runtime dynamic quantization: int8 weights (per channel) for MatMul/Gemm and int8 embedding tables
    (Gather), activations quantized at run time."""
    import logging

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Without the exporter's shape hints (value_info): onnxruntime 1.30 rewrites Gemm as MatMul with a transposed
    # weight but keeps the old hint, and its own shape inference then fails ("Inferred shape and existing shape
    # differ"). The quantizer infers shapes itself. Written next to the source so external weight files resolve.
    model = onnx.load(str(source), load_external_data=False)
    del model.graph.value_info[:]
    hintless = source.with_name(source.stem + ".nohints.onnx")
    onnx.save(model, str(hintless))
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # "consider pre-processing" advice, printed on every call
    try:
        # reduce_range (7-bit weights): on x86 CPUs without VNNI, ONNX Runtime's u8 x s8 kernel sums pairs of
        # products in int16 and saturates with full-range weights (255 * 127 * 2 > 32767); a CI machine got 1.98
        # for 3.08 on a 32-wide Gemm. With |w| <= 63 the pair sums fit, on every CPU.
        quantize_dynamic(str(hintless), str(target), weight_type=QuantType.QInt8, per_channel=True,
                         reduce_range=True, op_types_to_quantize=["MatMul", "Gemm", "Gather"])
    finally:
        root.setLevel(level)
        hintless.unlink(missing_ok=True)
