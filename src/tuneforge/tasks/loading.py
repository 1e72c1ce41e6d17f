"""Load tokenizers and models by hub id or local path, with one-line errors and the resolved revision.

>>> from tuneforge.tasks.loading import load_tokenizer
>>> tok = load_tokenizer(cfg.model)                  # doctest: +SKIP
>>> revision, commit = pin_revision(cfg.model)        # doctest: +SKIP
>>> model = load_model(AutoModelForSequenceClassification, cfg.model, revision, num_labels=2)  # doctest: +SKIP

Both go through the real `from_pretrained`; when the hub cannot be reached the error says so and suggests
a local path.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from tuneforge.config.schema import ModelConfig
from tuneforge.errors import UserError


def quiet_transformers() -> None:
    """Silence load reports and progress bars; tuneforge prints what matters itself."""
    import huggingface_hub
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    huggingface_hub.utils.disable_progress_bars()


def _looks_local(name: str) -> bool:
    return name.startswith((".", "/", "~")) or os.sep in name.strip("/").split("/", 1)[-1] or Path(name).exists()


def _explain(err: Exception, name: str, what: str) -> UserError:
    text = f"{err} {err.__cause__ or ''}"
    if _looks_local(name) and not Path(name).expanduser().exists():
        return UserError(f"model.model_name_or_path: local folder not found: {name!r}")
    if ("does not appear to have" in text or "no file named" in text) and "safetensors" in text:
        return UserError(f"model.model_name_or_path: {name!r} has no safetensors weights (older repositories often "
                         "ship only pickle .bin files, and loading a pickle can run code); pass --allow-pickle "
                         "(model.allow_pickle=true) for a source you trust, or convert the weights to safetensors")
    unknown = re.search(r"model type `([^`]+)` but Transformers does not recognize", text)
    if unknown:
        return UserError(f"model.model_name_or_path: {name!r} has model_type {unknown.group(1)!r}, which the installed "
                         "transformers does not know; upgrade transformers, or fix model_type in its config.json")
    if Path(name).expanduser().is_dir():
        return UserError(f"model.model_name_or_path: {name!r} has no loadable {what} "
                         f"({str(err).splitlines()[0][:200]}); it needs config.json, weights and tokenizer files")
    if any(s in text for s in ("couldn't connect", "outgoing traffic has been disabled", "offline",
                               "ConnectionError", "Max retries", "Temporary failure")):
        return UserError(f"model.model_name_or_path: cannot reach the Hugging Face hub to load {name!r} "
                         "(offline?); download the model elsewhere and pass its local folder path")
    if "is not a valid model identifier" in text or "Repository Not Found" in text or "404" in text:
        return UserError(f"model.model_name_or_path: {name!r} is neither a local folder nor a model on the "
                         "Hugging Face hub; check the spelling (private models need `hf auth login`)")
    return UserError(f"model.model_name_or_path: cannot load {what} from {name!r}: "
                     f"{str(err).splitlines()[0][:300]}")


def pin_revision(model: ModelConfig) -> tuple[str, str | None]:
    """Resolve a hub revision (branch or tag) to its commit once, so tokenizer and weights come from the same
    commit and the run records it. Returns (revision to pass to from_pretrained, commit hash or None)."""
    name = model.model_name_or_path or ""
    if Path(name).expanduser().exists():
        return model.revision, None
    try:
        from transformers.utils.hub import resolve_revision

        revision = resolve_revision(name, model.revision, cache_dir=model.cache_dir)
    except Exception:  # noqa: BLE001 - best effort, like transformers itself: loading reports the real problem
        return model.revision, None
    commit = getattr(revision, "resolved", None)
    if commit is None and re.fullmatch(r"[0-9a-f]{40}", str(revision)):
        commit = str(revision)
    return revision, commit


def load_tokenizer(model: ModelConfig, revision: str | None = None) -> Any:
    from transformers import AutoTokenizer

    quiet_transformers()
    name = model.model_name_or_path or ""
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, revision=revision or model.revision, cache_dir=model.cache_dir,
                                                  trust_remote_code=model.trust_remote_code)
    except (OSError, ValueError) as err:
        raise _explain(err, name, "tokenizer") from None
    if not getattr(tokenizer, "is_fast", True):
        raise UserError(f"model.model_name_or_path: {name!r} has only a slow (Python) tokenizer; tuneforge "
                        "needs a fast tokenizer (tokenizer.json)")
    return tokenizer


def load_model(auto_class: Any, model: ModelConfig, revision: str | None = None, tokenizer: Any = None,
               **kwargs: Any) -> Any:
    """from_pretrained with one-line errors; `loaded.tuneforge_new_keys` lists the parameters the checkpoint
    did not have (new heads) or that had to grow (embeddings resized for a tokenizer with added tokens),
    which LoRA must train in full."""
    quiet_transformers()
    name = model.model_name_or_path or ""
    folder = model_folder(name, revision or model.revision, model.cache_dir)
    if folder is not None:
        check_model_folder(folder)
        if not model.allow_pickle and not any(folder.glob("*.safetensors*")) and any(
                f.suffix in PICKLE_SUFFIXES for f in folder.iterdir()):
            pickles = sorted(f.name for f in folder.iterdir() if f.suffix in PICKLE_SUFFIXES)
            raise UserError(f"model.model_name_or_path: {name!r} has only pickle weights ({', '.join(pickles[:3])}), "
                            "and loading a pickle can run code; convert them to safetensors, or pass --allow-pickle "
                            "(model.allow_pickle=true) for a source you trust")
    try:
        loaded, info = auto_class.from_pretrained(
            name, revision=revision or model.revision, cache_dir=model.cache_dir,
            trust_remote_code=model.trust_remote_code, output_loading_info=True,
            use_safetensors=None if model.allow_pickle else True, **kwargs)
    except (OSError, ValueError) as err:
        raise _explain(err, name, "model") from None
    except Exception as err:  # torch's weights_only unpickler refusing a crafted file, a damaged safetensors file
        if type(err).__name__ == "SafetensorError":
            raise UserError(f"model.model_name_or_path: the weights of {name!r} cannot be read ({str(err)[:120]}); "
                            "the file is damaged or cut short: download or copy it again") from None
        if "weights_only" in str(err) or "Unpickl" in type(err).__name__:
            raise UserError(f"model.model_name_or_path: {name!r}: a pickle weights file holds objects other than "
                            "tensors and was refused (it may be crafted to run code); use safetensors weights"
                            ) from None
        raise
    mismatched = [m[0] if isinstance(m, (tuple, list)) else m for m in info.get("mismatched_keys", [])]
    loaded.tuneforge_new_keys = sorted(set(info.get("missing_keys", [])) | set(mismatched))
    if tokenizer is not None:
        loaded.tuneforge_new_keys = sorted(set(loaded.tuneforge_new_keys) | set(fit_vocab(loaded, tokenizer, name)))
    return loaded


def fit_vocab(model: Any, tokenizer: Any, name: str = "") -> list[str]:
    """Grow the embedding matrix when the tokenizer's *added* tokens (special or chat tokens) run past it; an id
    past the table is an index error on CPU and a device assert on GPU. A tokenizer whose base vocabulary alone
    is larger belongs to another model: an error. Never shrinks: many models pad their table past the tokenizer
    on purpose (T5, or for speed). Returns the names of the resized parameters."""
    embeddings = model.get_input_embeddings()
    if embeddings is None or len(tokenizer) <= embeddings.num_embeddings:
        return []
    rows = embeddings.num_embeddings
    if getattr(tokenizer, "vocab_size", 0) > rows:
        raise UserError(f"model.model_name_or_path: the tokenizer of {name!r} has a {tokenizer.vocab_size}-token "
                        f"vocabulary but the model's embedding table only {rows} rows; tokenizer and weights come "
                        "from different models; use the tokenizer the model was trained with")
    try:
        model.resize_token_embeddings(len(tokenizer))
    except NotImplementedError:
        raise UserError(f"model.model_name_or_path: the tokenizer of {name!r} has {len(tokenizer)} tokens but the "
                        f"model's embedding table only {rows} rows, and this architecture cannot be resized; "
                        "use the tokenizer the model was trained with") from None
    grown = {id(model.get_input_embeddings().weight)}
    output = model.get_output_embeddings()
    if output is not None:
        grown.add(id(output.weight))
    return [n for n, p in model.named_parameters(remove_duplicate=False) if id(p) in grown]


PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".pkl", ".ckpt"}


def model_folder(name: str, revision: str | None, cache_dir: str | None) -> Path | None:
    """The local folder the weights come from: the path itself, or the hub cache snapshot when cached."""
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(name, "config.json", revision=revision, cache_dir=cache_dir)
    except Exception:  # noqa: BLE001 - not a valid repo id, or no cache: loading reports it
        return None
    return Path(cached).parent if isinstance(cached, str) else None


def check_model_folder(folder: Path) -> None:
    """Refuse files that lead out of the model folder: symlinks pointing elsewhere and sharded-index entries
    with absolute paths or `..`. A hub cache snapshot links into its repository's blobs/, so for one the
    repository folder (models--org--name) counts as the model folder."""
    import json

    root = folder.resolve()
    if folder.parent.name == "snapshots":
        root = folder.parent.parent.resolve()
    for file in folder.rglob("*"):
        target = file.resolve()
        if target != root and root not in target.parents:
            raise UserError(f"model.model_name_or_path: {file} links outside the model folder (to {target}); "
                            "refusing to load it: copy the real files into the folder")
    for index in folder.glob("*.index.json"):
        try:
            shards = set(json.loads(index.read_text()).get("weight_map", {}).values())
        except (ValueError, AttributeError):
            raise UserError(f"model.model_name_or_path: {index} is not a valid shard index (JSON with a "
                            "weight_map)") from None
        for shard in shards:
            target = (folder / str(shard)).resolve()
            if Path(str(shard)).is_absolute() or ".." in Path(str(shard)).parts or root not in target.parents:
                raise UserError(f"model.model_name_or_path: {index.name} names shard {shard!r} outside the model "
                                "folder; refusing to load it (the index may be tampered with)")


def position_limit(model_config: Any) -> int | None:
    """The hard length limit of learned position embeddings; None for relative positions (T5)."""
    limits = [v for k in ("max_position_embeddings", "n_positions", "max_sequence_length")
              if isinstance(v := getattr(model_config, k, None), int) and v > 0]
    return min(limits) if limits else None


def resolve_length(requested: int | None, key: str, tokenizer: Any, model_config: Any, cap: int) -> int:
    """An explicit length is honoured up to the model's position limit (beyond it: an error, not a silent cut);
    without one, the model's own limit capped at `cap` (a safe default for memory)."""
    hard = position_limit(model_config)
    if requested:
        if hard and requested > hard:
            raise UserError(f"data.{key}: {requested} tokens is longer than the model accepts ({hard} positions); "
                            f"use at most {hard}")
        return requested
    return model_max_length(tokenizer, model_config, cap)


def model_max_length(tokenizer: Any, model_config: Any, cap: int = 512) -> int:
    """The longest input the model takes: tokenizer limit and position embeddings, capped at `cap`."""
    limits = [cap, getattr(tokenizer, "model_max_length", cap) or cap]
    positions = getattr(model_config, "max_position_embeddings", None)
    if positions:
        limits.append(positions)
    return int(min(limits))
