"""The model card: README.md in the run folder, in the Hugging Face format (YAML metadata header + sections).

>>> from tuneforge.runs.model_card import render_model_card
>>> print(render_model_card(Path("runs/my-run"))[:60])      # doctest: +SKIP
---
base_model: bert-base-uncased
library_name: transformers

Written last at the end of training (peft's save_pretrained writes a README.md of its own) and by
`tuneforge report RUN`. It holds only aggregate facts about the data (row counts, label shares, token
lengths), never example text, because it is uploaded by push_to_hub.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tuneforge.evaluate.diagnosis import render
from tuneforge.runs.record import is_run, read_info, read_json
from tuneforge.runs.report import METRIC_ROWS, metric_columns
from tuneforge.tasks import get_spec

HYPERPARAMETERS = ("learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size",
                   "gradient_accumulation_steps", "warmup_steps", "weight_decay", "lr_scheduler_type",
                   "max_grad_norm", "seed", "metric_for_best_model")


PROBLEM_USE = {  # what the model does, for the classification problem types other than single-label
    "multi_label_classification": "Assigns any subset of its {n_labels} labels ({labels}) to a text{pair}: a label is "
                                  "predicted when its sigmoid score reaches the label's own decision threshold, "
                                  "tuned on the validation split (`label_thresholds` in config.json).",
    "regression": "Predicts a number, {target}, for a text{pair}, in the training target's units (the scale is "
                  "folded into the final layer: plain transformers returns the value as the single logit).",
}


def _front_matter(readme: Path) -> dict[str, Any]:
    text = readme.read_text(encoding="utf-8") if readme.is_file() else ""
    if text.startswith("---"):
        parts = text.split("---", 2)
        if len(parts) == 3:
            try:
                return yaml.safe_load(parts[1]) or {}
            except yaml.YAMLError:
                return {}
    return {}


def hub_base_model(name: str | None) -> tuple[str | None, str | None]:
    """(hub id of the base model or None, its license when known). A local folder that is itself a tuneforge
    run points back to that run's base model; another local folder has no hub id."""
    if not name:
        return None, None
    path = Path(name)
    if path.exists():
        info = read_info(path) if is_run(path) else None
        meta = _front_matter(path / "README.md")
        if info and info.get("base_model") and info["base_model"] != name:
            base, license_ = hub_base_model(info["base_model"])
            return base, meta.get("license") or license_
        return None, meta.get("license")
    return name, None


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else ("-" if v is None else str(v))


def render_model_card(run_dir: Path) -> str:
    from huggingface_hub import ModelCardData

    info = read_info(run_dir) if is_run(run_dir) else {}
    config = yaml.safe_load((run_dir / "run_config.yaml").read_text(encoding="utf-8"))
    metrics = read_json(run_dir / "metrics.json") or {}
    report = read_json(run_dir / "data_report.json") or {}
    task = config["task"]
    spec = get_spec(task)  # pipeline tag, card metrics, intended use and usage example, as the task declares them
    data, training = config.get("data", {}), config.get("training", {})
    base, license_ = hub_base_model(info.get("base_model"))
    card = ModelCardData(base_model=base, license=license_, library_name="transformers",
                         pipeline_tag=spec.pipeline_tag or None, tags=["tuneforge", task],
                         datasets=[data["dataset_name"]] if data.get("dataset_name") else None,
                         metrics=list(spec.card_metrics) or None)
    name = info.get("id") or run_dir.name
    base_text = f"[{base}](https://huggingface.co/{base})" if base else f"`{info.get('base_model')}`"
    source = data.get("dataset_name") or data.get("train_file") or "local data"
    out = ["---", card.to_yaml(), "---", "", f"# {name}", "",
           f"A {task.replace('_', ' ')} model fine-tuned from {base_text} on `{source}` with tuneforge.", ""]

    out += ["## Intended use and limitations", ""]
    labels = list(report.get("splits", {}).get("train", {}).get("label_counts") or {})
    problem = data.get("problem_type")  # classification's problem types (transformers' spellings)
    if problem in PROBLEM_USE:
        out.append(PROBLEM_USE[problem].format(n_labels=len(labels), labels=", ".join(labels),
                                               target=data.get("label_column"),
                                               pair=" pair" if data.get("text_pair_column") else ""))
    elif spec.card_use:
        out.append(spec.card_use.format(
            n_labels=len(labels), labels=", ".join(labels), pair=" pair" if data.get("text_pair_column") else "",
            prefix=" prefixed with " + repr(data["source_prefix"]) if data.get("source_prefix") else ""))
    max_len = info.get("max_length")
    longer = (f"inputs longer than {max_len} tokens are read in overlapping windows ({data.get('stride')} tokens "
              "shared), never truncated" if spec.windows else f"inputs longer than {max_len} tokens are truncated")
    out += ["", f"It was trained and evaluated only on the data below; {longer}. Check it on data from your own use "
            "before relying on it.", ""]
    notes = render(metrics.get("diagnosis") or [])
    if notes:
        out += ["Found at the end of training:", "", *[f"- {n}" for n in notes], ""]

    out += ["## Training data", "", "| split | rows | source | tokens p50 / p95 / max | truncated |",
            "|---|---|---|---|---|"]
    for split, s in (report.get("splits") or {}).items():
        t = s.get("token_lengths") or {}
        lengths = " / ".join(_fmt(t.get(k)) if not isinstance(t.get(k), float) else f"{t[k]:.0f}"
                             for k in ("p50", "p95", "max")) if t else "-"
        trunc = f"{s['truncated_percent']:.1f}%" if s.get("truncated_percent") is not None else "-"
        out.append(f"| {split} | {s.get('rows_kept')} | {str(s.get('source', '')).replace('|', '/')} | "
                   f"{lengths} | {trunc} |")
    counts = (report.get("splits") or {}).get("train", {}).get("label_counts") or {}
    if counts:
        total = sum(counts.values()) or 1
        out += ["", "Training labels: " + ", ".join(f"{k} {v} ({100 * v / total:.0f}%)" for k, v in counts.items())
                + "."]
    out += ["", f"Data fingerprint: `{info.get('data_fingerprint', '')}`.", ""]

    out += ["## Training procedure", "", "| hyperparameter | value |", "|---|---|"]
    out += [f"| {k} | {training[k]:g} |" if isinstance(training[k], float) else f"| {k} | {_fmt(training[k])} |"
            for k in HYPERPARAMETERS if k in training]
    out.append(f"| mixed_precision | {info.get('mixed_precision', '-')} |")
    lora = config.get("lora") or {}
    if lora.get("enabled"):
        out.append(f"| LoRA | r={lora.get('r')}, alpha={lora.get('lora_alpha')}, dropout={lora.get('lora_dropout')} |")
    train = metrics.get("train") or {}
    out += ["", f"Trained for {train.get('global_step', '?')} optimizer steps ({train.get('epoch', '?')} epochs) on "
            f"{info.get('device', '?')}; the model kept is the one of step {metrics.get('best_step', '?')} "
            f"(best {metrics.get('metric_for_best_model') or 'loss'} on validation).", ""]

    columns = metric_columns(metrics)
    if columns:
        rows = [m for m in METRIC_ROWS if any(isinstance(c.get(m), (int, float)) for c in columns.values())]
        out += ["## Results", "", "| metric | " + " | ".join(columns) + " |",
                "|---|" + "---|" * len(columns)]
        out += [f"| {m} | " + " | ".join(_fmt(c.get(m)) for c in columns.values()) + " |" for m in rows]
        out.append("")

    usage = f'pipeline("{spec.pipeline_tag}", model="<hub id or path of {name}>")("{spec.card_example}")'
    code = spec.card_usage.format(name=name) if spec.card_usage else f"from transformers import pipeline\n\n{usage}"
    out += ["## How to use", "", "```python", code, "```", ""]
    versions = info.get("versions") or {}
    if versions:
        out += ["## Framework versions", ""] + [f"- {k} {v}" for k, v in versions.items()] + [""]
    return "\n".join(out)


def write_model_card(run_dir: Path) -> Path:
    path = Path(run_dir) / "README.md"
    path.write_text(render_model_card(Path(run_dir)), encoding="utf-8")
    return path
