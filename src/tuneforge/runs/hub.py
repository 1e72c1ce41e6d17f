"""Upload a finished run to the Hugging Face Hub: a curated set of files, never training state or text.

>>> from tuneforge.runs.hub import curated_files
>>> curated_files(Path("runs/my-run"))          # doctest: +SKIP
['README.md', 'config.json', 'model.safetensors', 'run_config.yaml', 'tokenizer.json', 'tokenizer_config.json']

What goes up: final weights (and the LoRA adapter folder), tokenizer files, config.json,
generation_config.json, run_config.yaml and the model card. What never does: checkpoints/ (optimizer,
scheduler and RNG state), logs/, metrics.jsonl, the data report, error analysis, eval/ and report.html (these
quote training and evaluation text). The files are hard-linked into a staging folder and that folder is
uploaded whole, so what is staged is exactly what is published.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import tempfile
from pathlib import Path

from tuneforge.errors import ConfigError, UserError
from tuneforge.runs.record import Run

ROOT_PATTERNS = (
    "*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin", "pytorch_model.bin.index.json",
    "config.json", "generation_config.json", "run_config.yaml", "README.md",
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.txt",
    "vocab.json", "merges.txt", "*.model", "chat_template.jinja", "chat_template.json",
)
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin")


def require_token() -> str:
    from huggingface_hub import get_token

    token = get_token()
    if not token:
        raise ConfigError("training.push_to_hub: no Hugging Face token found; set HF_TOKEN or run "
                          "`hf auth login` (or set push_to_hub=false)")
    return token


def curated_files(run_dir: Path) -> list[str]:
    """Relative paths of the files push_to_hub uploads (sorted)."""
    out = [p.name for p in run_dir.iterdir()
           if p.is_file() and any(fnmatch.fnmatch(p.name, pat) for pat in ROOT_PATTERNS)]
    adapter = run_dir / "adapter"
    if adapter.is_dir():
        out += [f"adapter/{name}" for name in ADAPTER_FILES if (adapter / name).is_file()]
    return sorted(out)


def push_run(run_dir: Path, hub_model_id: str | None = None, private: bool | None = None) -> str:
    """Create (or reuse) the hub repository and upload the curated files; returns the repository URL."""
    from huggingface_hub import HfApi

    run = Run(Path(run_dir))
    t = run.config.training
    if run.info.get("status") != "finished":
        raise UserError(f"push: {run_dir} has status {run.info.get('status')!r}; only finished runs are uploaded")
    token = require_token()
    repo_id = hub_model_id or t.hub_model_id or run.info.get("id") or Path(run_dir).name
    files = curated_files(run.path)
    if "README.md" not in files:
        raise UserError(f"push: {run_dir} has no model card (README.md); rebuild it with `tuneforge report RUN`")
    api = HfApi(token=token)
    staging = Path(tempfile.mkdtemp(prefix=".hub-upload-", dir=run.path))  # same filesystem: hard links work
    try:
        for rel in files:
            target = staging / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(run.path / rel, target)
            except OSError:
                shutil.copy2(run.path / rel, target)
        try:
            url = api.create_repo(repo_id, private=private if private is not None else t.hub_private_repo,
                                  exist_ok=True)
            api.upload_folder(repo_id=url.repo_id, folder_path=staging,
                              commit_message=f"tuneforge run {run.info.get('id')}")
        except Exception as err:  # noqa: BLE001 - network/auth errors become one line; the run is safe on disk
            raise UserError(f"push_to_hub: upload to {repo_id!r} failed ({type(err).__name__}: "
                            f"{str(err).splitlines()[0] if str(err) else ''}); the run is saved in {run_dir}, "
                            f"retry with `tuneforge push {run_dir}`") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return str(url)
