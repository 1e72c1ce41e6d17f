"""ONNX export with torch.onnx (the torch.export-based exporter), and ONNX Runtime models that stand in for the
PyTorch model in the tasks' own predict and evaluation code.

What is exported, per ONNX class (each task names its class, TaskSpec.onnx_class; the class writes the graphs
with its `export` and runs them; batch and sequence length dynamic, fp32, opset 18):
  OnnxClassifier  model.onnx    (input_ids, attention_mask[, token_type_ids]) -> logits
  OnnxSeq2Seq     encoder.onnx  (input_ids, attention_mask) -> encoder_hidden_states
                  decoder.onnx  (decoder_input_ids, encoder_hidden_states, encoder_attention_mask) -> logits
  OnnxCausalLM    model.onnx    (input_ids, attention_mask, position_ids) -> logits
The decoders have no KV cache: every generated token runs the decoder over the whole prefix. Generation with
an ONNX export is greedy (num_beams and sampling settings are not applied); `max_new_tokens`, EOS and stop
strings are. optimum's exporter is not used: it does not support transformers 5.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

OPSET = 18


@contextlib.contextmanager
def _quiet_export() -> Iterator[None]:
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript", "torch")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _export(module: Any, args: tuple[Any, ...], names: list[str], outputs: list[str], path: Path) -> None:
    import torch

    dim = torch.export.Dim.DYNAMIC
    shapes = {name: {0: dim, 1: dim} for name in names}
    with _quiet_export(), torch.no_grad():
        program = torch.onnx.export(module, args, input_names=names, output_names=outputs, dynamic_shapes=shapes,
                                    opset_version=OPSET, dynamo=True, verbose=False, report=False)
        program.save(str(path))


def _sample_batch(tokenizer: Any, texts: list[str]) -> dict[str, Any]:
    """Two rows of different length (one padded), so the traced graph keeps the attention mask path."""
    texts = (texts + ["a short example", "a somewhat longer example text for tracing the model"])[:2]
    enc = tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=32)
    if bool(enc["attention_mask"].all()):
        enc = tokenizer([texts[0], texts[1] + " and more words"], return_tensors="pt", padding=True,
                        truncation=True, max_length=32)
    return enc


def export_onnx(model: Any, tokenizer: Any, task: str, folder: Path, use_token_types: bool,
                sample_texts: list[str]) -> list[str]:
    """Write the ONNX graph(s) of `model` (fp32, eval mode) into `folder` with the ONNX class the task declares
    (TaskSpec.onnx_class); returns the file names."""
    from tuneforge.tasks import get_spec, load_declared

    model = model.float().cpu().eval()
    enc = _sample_batch(tokenizer, sample_texts)
    return load_declared(get_spec(task).onnx_class).export(model, enc["input_ids"], enc["attention_mask"], folder,
                                                           use_token_types)


# ---- ONNX Runtime stand-ins for the PyTorch model ------------------------------------------------------

def _session(path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    # no busy-waiting between runs: spinning threads would steal the CPU from tokenization, the server's event
    # loop and (when verifying) the PyTorch model timed alongside
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _np(tensor: Any) -> np.ndarray:
    return tensor.detach().cpu().numpy().astype(np.int64) if hasattr(tensor, "detach") else np.asarray(tensor)


class OnnxModel:
    """Duck-types the parts of a transformers model the tasks use: __call__(...).logits, config,
    generation_config, device, eval()/train(), and generate() (greedy) for the generative tasks."""

    def __init__(self, folder: Path, config: Any, generation_config: Any) -> None:
        import torch

        self.folder, self.config, self.generation_config = folder, config, generation_config
        self.device = torch.device("cpu")
        self.training = False

    def eval(self) -> OnnxModel:
        return self

    def train(self, mode: bool = True) -> OnnxModel:
        return self

    def to(self, *args: Any, **kwargs: Any) -> OnnxModel:
        return self

    @staticmethod
    def _out(logits: np.ndarray) -> Any:
        import torch

        return SimpleNamespace(logits=torch.from_numpy(np.ascontiguousarray(logits)))

    def _max_new_tokens(self, generation_config: Any) -> int:
        g = generation_config or self.generation_config
        return int(getattr(g, "max_new_tokens", None) or 20)

    def _eos(self, generation_config: Any) -> set[int]:
        g = generation_config or self.generation_config
        eos = getattr(g, "eos_token_id", None)
        if eos is None:
            eos = getattr(self.config, "eos_token_id", None)
        return set(eos if isinstance(eos, (list, tuple)) else [] if eos is None else [eos])


class OnnxClassifier(OnnxModel):
    @staticmethod
    def export(model: Any, ids: Any, mask: Any, folder: Path, use_token_types: bool) -> list[str]:
        """Write this layout's ONNX graph(s) of `model`, traced on the sample batch (ids, mask)."""
        import torch

        names = ["input_ids", "attention_mask"] + (["token_type_ids"] if use_token_types else [])

        class Classifier(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any = None) -> Any:
                extra = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
                return self.model(input_ids=input_ids, attention_mask=attention_mask, **extra).logits

        args = (ids, mask) + ((torch.zeros_like(ids),) if use_token_types else ())
        _export(Classifier(), args, names, ["logits"], folder / "model.onnx")
        return ["model.onnx"]

    def __init__(self, folder: Path, config: Any, generation_config: Any = None) -> None:
        super().__init__(folder, config, generation_config)
        self.session = _session(folder / "model.onnx")
        self.inputs = [i.name for i in self.session.get_inputs()]

    def __call__(self, input_ids: Any, attention_mask: Any = None, token_type_ids: Any = None, **_: Any) -> Any:
        ids = _np(input_ids)
        feed = {"input_ids": ids, "attention_mask": _np(attention_mask) if attention_mask is not None
                else np.ones_like(ids)}
        if "token_type_ids" in self.inputs:
            feed["token_type_ids"] = _np(token_type_ids) if token_type_ids is not None else np.zeros_like(ids)
        return self._out(self.session.run(["logits"], feed)[0])


class OnnxSeq2Seq(OnnxModel):
    @staticmethod
    def export(model: Any, ids: Any, mask: Any, folder: Path, use_token_types: bool) -> list[str]:
        """Write this layout's ONNX graph(s) of `model`, traced on the sample batch (ids, mask)."""
        import torch
        from transformers.modeling_outputs import BaseModelOutput

        class Encoder(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.encoder = model.get_encoder()

            def forward(self, input_ids: Any, attention_mask: Any) -> Any:
                return self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

        class Decoder(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, decoder_input_ids: Any, encoder_hidden_states: Any, encoder_attention_mask: Any) -> Any:
                return self.model(encoder_outputs=BaseModelOutput(last_hidden_state=encoder_hidden_states),
                                  attention_mask=encoder_attention_mask, decoder_input_ids=decoder_input_ids,
                                  use_cache=False).logits

        _export(Encoder(), (ids, mask), ["input_ids", "attention_mask"], ["encoder_hidden_states"],
                folder / "encoder.onnx")
        with torch.no_grad():
            hidden = Encoder()(ids, mask)
        start = model.config.decoder_start_token_id or 0
        decoder_ids = torch.full((ids.shape[0], 3), start, dtype=torch.long)
        decoder_ids[:, 1:] = ids[:, 1:3]
        _export(Decoder(), (decoder_ids, hidden, mask),
                ["decoder_input_ids", "encoder_hidden_states", "encoder_attention_mask"], ["logits"],
                folder / "decoder.onnx")
        return ["encoder.onnx", "decoder.onnx"]

    def __init__(self, folder: Path, config: Any, generation_config: Any) -> None:
        super().__init__(folder, config, generation_config)
        self.encoder = _session(folder / "encoder.onnx")
        self.decoder = _session(folder / "decoder.onnx")
        self.start = config.decoder_start_token_id if config.decoder_start_token_id is not None else 0
        self.pad = config.pad_token_id if config.pad_token_id is not None else 0

    def _encode(self, input_ids: Any, attention_mask: Any) -> tuple[np.ndarray, np.ndarray]:
        ids = _np(input_ids)
        mask = _np(attention_mask) if attention_mask is not None else np.ones_like(ids)
        return self.encoder.run(None, {"input_ids": ids, "attention_mask": mask})[0], mask

    def _decode(self, decoder_ids: np.ndarray, hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return self.decoder.run(["logits"], {"decoder_input_ids": decoder_ids, "encoder_hidden_states": hidden,
                                             "encoder_attention_mask": mask})[0]

    def prepare_decoder_input_ids_from_labels(self, labels: Any) -> Any:
        import torch

        shifted = torch.full_like(labels, self.start)
        shifted[:, 1:] = labels[:, :-1]
        return shifted.masked_fill(shifted == -100, self.pad)

    def __call__(self, input_ids: Any, attention_mask: Any = None, decoder_input_ids: Any = None, **_: Any) -> Any:
        hidden, mask = self._encode(input_ids, attention_mask)
        return self._out(self._decode(_np(decoder_input_ids), hidden, mask))

    def generate(self, input_ids: Any, attention_mask: Any = None, generation_config: Any = None, **_: Any) -> Any:
        import torch

        hidden, mask = self._encode(input_ids, attention_mask)
        eos = self._eos(generation_config)
        out = np.full((hidden.shape[0], 1), self.start, dtype=np.int64)
        done = np.zeros(hidden.shape[0], dtype=bool)
        for _ in range(self._max_new_tokens(generation_config)):
            nxt = self._decode(out, hidden, mask)[:, -1].argmax(-1).astype(np.int64)
            nxt[done] = self.pad
            out = np.concatenate([out, nxt[:, None]], axis=1)
            done |= np.isin(nxt, list(eos))
            if done.all():
                break
        return torch.from_numpy(out)


class OnnxCausalLM(OnnxModel):
    @staticmethod
    def export(model: Any, ids: Any, mask: Any, folder: Path, use_token_types: bool) -> list[str]:
        """Write this layout's ONNX graph(s) of `model`, traced on the sample batch (ids, mask)."""
        import torch

        class CausalLM(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, input_ids: Any, attention_mask: Any, position_ids: Any) -> Any:
                return self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                  use_cache=False).logits

        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        _export(CausalLM(), (ids, mask, positions), ["input_ids", "attention_mask", "position_ids"], ["logits"],
                folder / "model.onnx")
        return ["model.onnx"]

    def __init__(self, folder: Path, config: Any, generation_config: Any) -> None:
        super().__init__(folder, config, generation_config)
        self.session = _session(folder / "model.onnx")

    def _logits(self, ids: np.ndarray, mask: np.ndarray, positions: np.ndarray | None = None) -> np.ndarray:
        if positions is None:
            positions = np.clip(mask.cumsum(-1) - 1, 0, None)
        return self.session.run(["logits"], {"input_ids": ids, "attention_mask": mask,
                                             "position_ids": positions.astype(np.int64)})[0]

    def __call__(self, input_ids: Any, attention_mask: Any = None, position_ids: Any = None, **_: Any) -> Any:
        ids = _np(input_ids)
        mask = _np(attention_mask) if attention_mask is not None else np.ones_like(ids)
        return self._out(self._logits(ids, mask, _np(position_ids) if position_ids is not None else None))

    def generate(self, input_ids: Any, attention_mask: Any = None, generation_config: Any = None, **_: Any) -> Any:
        import torch

        ids = _np(input_ids)
        mask = _np(attention_mask) if attention_mask is not None else np.ones_like(ids)
        eos = self._eos(generation_config)
        pad = self.config.pad_token_id if self.config.pad_token_id is not None else (min(eos) if eos else 0)
        done = np.zeros(ids.shape[0], dtype=bool)
        for _ in range(self._max_new_tokens(generation_config)):
            nxt = self._logits(ids, mask)[:, -1].argmax(-1).astype(np.int64)
            nxt[done] = pad
            ids = np.concatenate([ids, nxt[:, None]], axis=1)
            mask = np.concatenate([mask, (~done).astype(np.int64)[:, None]], axis=1)
            done |= np.isin(nxt, list(eos))
            if done.all():
                break
        return torch.from_numpy(ids)


def load_onnx_model(art: Any) -> OnnxModel:
    """The ONNX Runtime model of an export folder (CPU), with the Hugging Face config saved beside it."""
    from transformers import AutoConfig, GenerationConfig

    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        from tuneforge.errors import UserError

        raise UserError("EXPORT: running an ONNX export needs onnxruntime: pip install 'tuneforge[onnx]'") from None
    config = AutoConfig.from_pretrained(art.path)
    generation = GenerationConfig.from_pretrained(art.path) if (art.path / "generation_config.json").exists() \
        else None
    from tuneforge.tasks import get_spec, load_declared

    cls = load_declared(get_spec(art.task).onnx_class)
    return cls(art.path, config, generation)
