"""`tuneforge export`: a folder ready to ship, verified against the run it came from.

>>> from tuneforge.deploy.export import export_run
>>> report = export_run("runs/my-run", "onnx", quantize="int8")          # doctest: +SKIP
>>> report["agreement"]["value"], report["latency"]["speedup"]           # doctest: +SKIP

An export folder holds the weights (model.safetensors, or model.onnx / encoder.onnx + decoder.onnx), the
Hugging Face config and tokenizer, the run's run_config.yaml, export.json (what was exported, from which
run) and report.json (the verification). LoRA runs export their merged weights (the run folder's root).
`tuneforge.load(EXPORT)` and `tuneforge serve EXPORT` load it; they refuse one whose report did not pass.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from tuneforge.deploy.artifacts import MANIFEST, Artifact, require_safetensors, size_on_disk
from tuneforge.errors import UserError
from tuneforge.tasks import get_spec

FORMATS = ("safetensors", "onnx")
QUANTIZE = ("int8",)
DEFAULT_MIN_AGREEMENT = 0.98


def default_output(run_path: Path, fmt: str, quantize: str | None) -> Path:
    return run_path / "export" / (fmt + (f"-{quantize}" if quantize else ""))


def _prepare_folder(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"--output: {out} is a file; choose a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise UserError(f"--output: {out} already holds files; choose another folder or pass --overwrite")
        if not (out / MANIFEST).exists() and not (out / "report.json").exists():
            raise UserError(f"--output: {out} is not an export folder; refusing to overwrite it")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


SAMPLE_TEXTS = ["the first example text for tracing", "a second, somewhat longer example text for tracing the graph"]


def write_weights(loaded: Any, fmt: str, quantize: str | None, out: Path) -> list[str]:
    """Write the export's weights into `out`; returns the weight file names."""
    model = loaded.model
    if fmt == "safetensors":
        if quantize:
            from tuneforge.deploy.quantize import quantize_torch, save_int8

            save_int8(quantize_torch(model), out)
        else:
            model.save_pretrained(out)
        return sorted(p.name for p in out.glob("*.safetensors"))
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        raise UserError("--format onnx needs onnx, onnxscript and onnxruntime: pip install 'tuneforge[onnx]'") from None
    from tuneforge.deploy.onnx import export_onnx

    cfg = loaded.config
    pairs = bool(cfg.data.text_pair_column) or len(get_spec(cfg.task).input_keys) > 1  # QA: question + context
    use_types = pairs and "token_type_ids" in loaded.tokenizer.model_input_names
    model.config.save_pretrained(out)
    if model.can_generate():
        model.generation_config.save_pretrained(out)
    if not quantize:
        return export_onnx(model, loaded.tokenizer, cfg.task, out, use_types, SAMPLE_TEXTS)
    from tuneforge.deploy.quantize import quantize_onnx

    with tempfile.TemporaryDirectory(prefix="tuneforge-onnx-") as tmp:
        files = export_onnx(model, loaded.tokenizer, cfg.task, Path(tmp), use_types, SAMPLE_TEXTS)
        for name in files:
            quantize_onnx(Path(tmp) / name, out / name)
    return files


def export_run(ref: str | os.PathLike, fmt: str, quantize: str | None = None, output: str | os.PathLike | None = None,
               min_agreement: float = DEFAULT_MIN_AGREEMENT, data_file: str | None = None,
               max_examples: int | None = None, latency_examples: int = 50, overwrite: bool = False
               ) -> dict[str, Any]:
    """Export a finished run, verify it on validation data and write report.json. Raises UserError (after
    writing the report) when agreement is below `min_agreement`."""
    from tuneforge.deploy.artifacts import resolve_artifact
    from tuneforge.inference import LoadedModel
    from tuneforge.runs.record import now as _now
    from tuneforge.runs.record import write_json as _write_json
    from tuneforge.version import __version__

    if fmt not in FORMATS:
        raise UserError(f"--format: {fmt!r} is not one of {', '.join(FORMATS)}")
    if quantize not in (None, *QUANTIZE):
        raise UserError(f"--quantize: {quantize!r} is not one of {', '.join(QUANTIZE)}")
    if not 0.0 <= min_agreement <= 1.0:
        raise UserError(f"--min-agreement: must be between 0 and 1, got {min_agreement}")
    source = resolve_artifact(ref)
    if source.kind != "run":
        raise UserError(f"RUN: {source.path} is already an export; export from the run folder it came from")
    require_safetensors(source.path, "RUN")
    out = Path(output) if output else default_output(source.path, fmt, quantize)
    # both models on the device the export will run on: the CPU for ONNX Runtime and int8, else the best one
    device = "cpu" if fmt == "onnx" or quantize else None
    original = LoadedModel(source, device=device)
    from tuneforge.deploy.verify import validation_data

    prepared = validation_data(original, data_file, max_examples)  # data problems surface before any writing
    _prepare_folder(out, overwrite)
    files = write_weights(original, fmt, quantize, out)
    original.tokenizer.save_pretrained(out)
    shutil.copyfile(source.path / "run_config.yaml", out / "run_config.yaml")
    info = source.info
    manifest = {"format": fmt, "quantize": quantize, "task": source.task, "files": files,
                "run_id": info.get("id"), "source_run": str(source.path.resolve()),
                "base_model": info.get("base_model"),
                "model_revision": info.get("model_revision"), "max_length": info.get("max_length"),
                "lora": "merged weights" if source.config.lora.enabled else None,
                "runtime": "onnxruntime (CPU)" if fmt == "onnx" else "pytorch" + (" (CPU, int8)" if quantize else ""),
                "generation": ("greedy, KV cache" if fmt == "onnx" and get_spec(source.task).generates else None),
                "created_at": _now(), "tuneforge_version": __version__}
    _write_json(out / MANIFEST, manifest)
    exported = LoadedModel(Artifact(out, "export", source.config, manifest, fmt, quantize, files), device=device)
    report = verify_and_report(original, exported, source, out, min_agreement, prepared, latency_examples)
    report = {"format": fmt, "quantize": quantize, "task": source.task, "run": str(source.path),
              "export": str(out), "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              **report}
    _write_json(out / "report.json", report)
    if not report["passed"]:
        a = report["agreement"]
        raise UserError(f"export verification failed: {a['measure']} {a['value']:.4f} is below --min-agreement "
                        f"{min_agreement} (report: {out / 'report.json'}); the export is marked failed and will not "
                        "load")
    return report


def verify_and_report(original: Any, exported: Any, source: Artifact, out: Path, min_agreement: float,
                      prepared: Any, latency_examples: int) -> dict[str, Any]:
    from tuneforge.deploy.verify import verify_export

    report = verify_export(original, exported, min_agreement, prepared, latency_examples)
    before, after = size_on_disk(source.path), size_on_disk(out)
    report["size_bytes"] = {"original": before, "exported": after, "ratio": after / before if before else None}
    return report


def render_report(report: dict[str, Any]) -> str:
    """A few lines for the terminal."""
    a, m, lat, size = report["agreement"], report["metrics"], report.get("latency") or {}, report["size_bytes"]
    what = report["format"] + (f" {report['quantize']}" if report["quantize"] else "")
    lines = [f"export {what} -> {report['export']}",
             f"  {a['measure']}: {a['value']:.4f} (required {a['min_required']}), max logit diff "
             f"{a['max_logit_diff']:.4g}"]
    for key, change in m["change"].items():
        lines.append(f"  {key}: {m['original'][key]:.4f} -> {m['exported'][key]:.4f} ({change:+.4f})")
    lines.append(f"  size: {size['original'] / 2**20:.1f} MiB -> {size['exported'] / 2**20:.1f} MiB")
    if lat:
        lines.append(f"  latency (batch 1, p50): {lat['original']['p50_ms']:.2f} ms -> {lat['exported']['p50_ms']:.2f} "
                     f"ms ({lat['speedup']:.2f}x)")
    lines.append("  verification: " + ("passed" if report["passed"] else "FAILED"))
    return "\n".join(lines)
