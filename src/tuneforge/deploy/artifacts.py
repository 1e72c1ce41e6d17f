"""What can be loaded for inference: a finished run folder, or an export folder written by `tuneforge export`.

>>> from tuneforge.deploy.artifacts import resolve_artifact
>>> art = resolve_artifact("runs/my-run/export/onnx-int8")     # doctest: +SKIP
>>> art.kind, art.format, art.quantize                          # doctest: +SKIP
('export', 'onnx', 'int8')

Weights load from safetensors (or ONNX graphs) only: a folder whose weights are pickles (pytorch_model.bin,
*.pt) is refused with one line, because unpickling runs arbitrary code.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tuneforge.config import RunConfig, load_config
from tuneforge.errors import UserError

MANIFEST = "export.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


@dataclass
class Artifact:
    """A loadable model folder: `kind` is "run" or "export"; `format` "safetensors" or "onnx"."""

    path: Path
    kind: str
    config: RunConfig
    info: dict[str, Any]  # run.json for a run, export.json for an export
    format: str = "safetensors"
    quantize: str | None = None
    files: list[str] = field(default_factory=list)

    @property
    def task(self) -> str:
        return self.config.task

    @property
    def max_length(self) -> int | None:
        return self.info.get("max_length")

    @property
    def run_id(self) -> str:
        return self.info.get("run_id") or self.info.get("id") or self.path.name

    @property
    def base_model(self) -> str | None:
        return self.info.get("base_model")


def resolve_artifact(ref: str | os.PathLike) -> Artifact:
    """An export folder (has export.json), else a finished run as runs/record.py `resolve` finds it."""
    path = Path(ref)
    if (path / MANIFEST).exists():
        return _export_artifact(path)
    from tuneforge.runs.record import resolve

    run = resolve(ref)
    return Artifact(run.path, "run", run.config, run.info)


def _export_artifact(path: Path) -> Artifact:
    info = json.loads((path / MANIFEST).read_text())
    report_file = path / "report.json"
    report = json.loads(report_file.read_text()) if report_file.exists() else {}
    if not report:
        raise UserError(f"EXPORT: {path} has no report.json; the export did not finish verification (export again)")
    if not report.get("passed"):
        agreement = report.get("agreement", {})
        raise UserError(f"EXPORT: {path} failed verification ({agreement.get('measure', 'agreement')} "
                        f"{agreement.get('value')} below the required {agreement.get('min_required')}); "
                        "see its report.json, or export again with a lower --min-agreement if that is acceptable")
    config = load_config(yaml.safe_load((path / "run_config.yaml").read_text()))
    return Artifact(path, "export", config, info, info["format"], info.get("quantize"), info.get("files", []))


def weight_files(folder: Path) -> list[Path]:
    """The model weight files of a folder (safetensors, ONNX graphs and their external data)."""
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and (p.suffix in (".safetensors", ".onnx") or p.name.endswith(".onnx.data")))


def size_on_disk(folder: Path) -> int:
    return sum(p.stat().st_size for p in weight_files(folder))


def require_safetensors(folder: Path, what: str) -> None:
    """Refuse pickled weights with one line; say what to do when there are no weights at all."""
    if any(folder.glob("*.safetensors")) or (folder / "model.safetensors.index.json").exists():
        return
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise UserError(f"{what}: {folder} holds pickled weights ({', '.join(pickles[:3])}); tuneforge loads "
                        "safetensors only (re-save with model.save_pretrained(folder), which writes safetensors)")
    if (folder / "adapter").is_dir():
        raise UserError(f"{what}: {folder} is a LoRA run saved without merged weights (lora.merge_weights=false); "
                        "train with lora.merge_weights=true to export or serve it")
    raise UserError(f"{what}: {folder} has no model weights (model.safetensors)")


def load_torch_model(art: Artifact, device: Any = None) -> Any:
    """The PyTorch model of a run or a safetensors export (int8 exports are rebuilt quantized, CPU only)."""
    import torch

    from tuneforge.tasks import get_task
    from tuneforge.tasks.loading import quiet_transformers

    quiet_transformers()
    require_safetensors(art.path, "EXPORT" if art.kind == "export" else "RUN")
    auto = get_task(art.task).auto_class()
    if art.quantize == "int8":
        from tuneforge.deploy.quantize import load_int8

        return load_int8(auto, art.path)
    model = auto.from_pretrained(art.path, use_safetensors=True)
    return model.to(device or torch.device("cpu")).eval()


def load_model(art: Artifact, device: str | None = None) -> tuple[Any, Any]:
    """(model, device) for the artifact's backend: torch on the best device, or ONNX Runtime / int8 on CPU."""
    import torch

    if art.format == "onnx":
        from tuneforge.deploy.onnx import load_onnx_model

        return load_onnx_model(art), torch.device("cpu")
    if art.quantize:
        if device and device != "cpu":
            raise UserError(f"device: an int8 export runs on CPU only, not {device!r}")
        dev = torch.device("cpu")
    else:
        dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return load_torch_model(art, dev), dev
