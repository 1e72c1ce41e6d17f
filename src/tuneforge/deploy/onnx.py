"""ONNX export with torch.onnx (the torch.export-based exporter), and ONNX Runtime models that stand in for the
PyTorch model in the tasks' own predict and evaluation code.

What is exported, per ONNX class (each task names its class, TaskSpec.onnx_class; the class writes the graphs
with its `export` and runs them; batch and sequence length dynamic, fp32, opset 18):
  OnnxClassifier  model.onnx    (input_ids, attention_mask[, token_type_ids]) -> logits
  OnnxQuestionAnswering  model.onnx  (input_ids, attention_mask[, token_type_ids]) -> start_logits, end_logits
  OnnxSeq2Seq     encoder.onnx  (input_ids, attention_mask) -> encoder_hidden_states
                  decoder.onnx  (decoder_input_ids, encoder_hidden_states, encoder_attention_mask,
                                 past_key_values.{i}.key/.value) -> logits, present.{i}.key/.value
  OnnxCausalLM    model.onnx    (input_ids, attention_mask, position_ids, past_key_values.{i}.key/.value)
                                -> logits, present.{i}.key/.value
KV cache: past/present tensors are (batch, kv heads, past length, head dim), one key and one value per layer
(the decoder's self-attention for seq2seq; its cross-attention keys are recomputed from the encoder states each
step). The past length is dynamic and may be 0, so one graph serves the prompt (an empty past), every later
token (the past of the step before) and the whole-sequence logits verification compares. The causal-LM
attention_mask covers past and new tokens; position_ids only the new ones. The graphs are traced in forward
wrappers that build a transformers DynamicCache (EncoderDecoderCache for seq2seq) from the flat tensors and
flatten the cache the model returns. `export(..., kv_cache=False)` writes the old graphs without a cache (for
comparisons, bench/export_kv.py); exports without past_key_values inputs still load and decode the slow way.

Generation with an ONNX export is greedy (num_beams and sampling settings are not applied): the prompt once,
then one token per step on the cache; `max_new_tokens`, EOS (pad after it, like transformers), forced BOS/EOS
tokens and stop strings are applied. A causal-LM batch may be padded on either side: each row is moved to the
right end first, so every row continues from its own last token. optimum's exporter is not used: it does not
support transformers 5.
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


def _export(module: Any, args: tuple[Any, ...], names: list[str], outputs: list[str], path: Path,
            shapes: Any = None) -> None:
    """`shapes`: torch.export dynamic_shapes, by default batch and sequence (dims 0 and 1) of every input."""
    import torch

    dim = torch.export.Dim.DYNAMIC
    shapes = shapes or {name: {0: dim, 1: dim} for name in names}
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

    def _forced(self, generation_config: Any, step: int, steps: int, bos: bool) -> int | None:
        """The token transformers' forced-BOS (first step, `bos`: encoder-decoders) or forced-EOS (last of
        `steps`) logits processor puts at `step`, if any."""
        g = generation_config or self.generation_config
        forced = getattr(g, "forced_eos_token_id", None) if step == steps - 1 else None
        forced = getattr(g, "forced_bos_token_id", None) if bos and step == 0 else forced
        return min(forced) if isinstance(forced, (list, tuple)) else forced

    def _pad(self, generation_config: Any, eos: set[int]) -> int:
        """What finished rows get, as in transformers: the generation config's pad token, the model's, EOS."""
        pad = getattr(generation_config or self.generation_config, "pad_token_id", None)
        pad = pad if pad is not None else getattr(self.config, "pad_token_id", None)
        return int(pad) if pad is not None else (min(eos) if eos else 0)


class OnnxClassifier(OnnxModel):
    """model.onnx (input_ids, attention_mask[, token_type_ids]) -> the head's OUTPUTS (a classifier's logits)."""

    OUTPUTS: tuple[str, ...] = ("logits",)

    @classmethod
    def export(cls, model: Any, ids: Any, mask: Any, folder: Path, use_token_types: bool) -> list[str]:
        """Write this layout's ONNX graph of `model`, traced on the sample batch (ids, mask)."""
        import torch

        names = ["input_ids", "attention_mask"] + (["token_type_ids"] if use_token_types else [])
        outputs = cls.OUTPUTS

        class Encoder(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any = None) -> Any:
                extra = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
                out = self.model(input_ids=input_ids, attention_mask=attention_mask, **extra)
                return tuple(getattr(out, name) for name in outputs)

        args = (ids, mask) + ((torch.zeros_like(ids),) if use_token_types else ())
        _export(Encoder(), args, names, list(outputs), folder / "model.onnx")
        return ["model.onnx"]

    def __init__(self, folder: Path, config: Any, generation_config: Any = None) -> None:
        super().__init__(folder, config, generation_config)
        self.session = _session(folder / "model.onnx")
        self.inputs = [i.name for i in self.session.get_inputs()]

    def _run(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> list[np.ndarray]:
        ids = _np(input_ids)
        feed = {"input_ids": ids, "attention_mask": _np(attention_mask) if attention_mask is not None
                else np.ones_like(ids)}
        if "token_type_ids" in self.inputs:
            feed["token_type_ids"] = _np(token_type_ids) if token_type_ids is not None else np.zeros_like(ids)
        return self.session.run(list(self.OUTPUTS), feed)

    def __call__(self, input_ids: Any, attention_mask: Any = None, token_type_ids: Any = None, **_: Any) -> Any:
        return self._out(self._run(input_ids, attention_mask, token_type_ids)[0])


class OnnxQuestionAnswering(OnnxClassifier):
    """model.onnx (input_ids, attention_mask[, token_type_ids]) -> start_logits, end_logits (extractive QA)."""

    OUTPUTS = ("start_logits", "end_logits")

    def __call__(self, input_ids: Any, attention_mask: Any = None, token_type_ids: Any = None, **_: Any) -> Any:
        import torch

        start, end = self._run(input_ids, attention_mask, token_type_ids)
        return SimpleNamespace(start_logits=torch.from_numpy(np.ascontiguousarray(start)),
                               end_logits=torch.from_numpy(np.ascontiguousarray(end)))


def _kv_names(prefix: str, layers: int) -> list[str]:
    return [f"{prefix}.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]


def _flat_cache(cache: Any) -> list[Any]:
    return [t for layer in cache.layers for t in (layer.keys, layer.values)]


def _dynamic_cache(flat: tuple[Any, ...]) -> Any:
    """A transformers DynamicCache holding the flat (key, value, key, value, ...) tensors; zero-length tensors
    are an empty cache (a plain DynamicLayer per layer: no sliding-window layers)."""
    from transformers import DynamicCache

    return DynamicCache([(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)])


def _past_shapes(session: Any) -> list[tuple[int, int]]:
    """(heads, head_dim) of each past key/value input of a cache graph, in input order ([] without a cache)."""
    return [(i.shape[1], i.shape[3]) for i in session.get_inputs() if i.name.startswith("past_key_values.")]


def _past_feed(shapes: list[tuple[int, int]], batch: int, past: list[np.ndarray] | None) -> dict[str, np.ndarray]:
    """The past key/value inputs of a cache graph (`shapes` from _past_shapes): `past`, or an empty cache."""
    if past is None:
        past = [np.zeros((batch, h, 0, d), np.float32) for h, d in shapes]
    return dict(zip(_kv_names("past_key_values", len(shapes) // 2), past))


class OnnxSeq2Seq(OnnxModel):
    @staticmethod
    def export(model: Any, ids: Any, mask: Any, folder: Path, use_token_types: bool, kv_cache: bool = True
               ) -> list[str]:
        """Write this layout's ONNX graphs of `model`, traced on the sample batch (ids, mask): the decoder with a
        self-attention KV cache unless `kv_cache` is False (the old graph, kept for comparisons)."""
        import torch
        from transformers import DynamicCache, EncoderDecoderCache
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

            def forward(self, decoder_input_ids: Any, encoder_hidden_states: Any, encoder_attention_mask: Any,
                        *past: Any) -> Any:
                # an empty cross-attention cache: its keys and values are recomputed from the encoder states
                cache = EncoderDecoderCache(_dynamic_cache(past), DynamicCache()) if kv_cache else None
                out = self.model(encoder_outputs=BaseModelOutput(last_hidden_state=encoder_hidden_states),
                                 attention_mask=encoder_attention_mask, decoder_input_ids=decoder_input_ids,
                                 cache=cache, use_cache=kv_cache)
                return (out.logits, *_flat_cache(out.cache.self_attention_cache)) if kv_cache else out.logits

        _export(Encoder(), (ids, mask), ["input_ids", "attention_mask"], ["encoder_hidden_states"],
                folder / "encoder.onnx")
        with torch.no_grad():
            hidden = Encoder()(ids, mask)
        start = model.config.decoder_start_token_id or 0
        decoder_ids = torch.full((ids.shape[0], 4), start, dtype=torch.long)
        decoder_ids[:, 1:] = ids[:, 1:4].repeat(1, 3)[:, :3]  # repeat: a sample text of fewer than 4 tokens
        names = ["decoder_input_ids", "encoder_hidden_states", "encoder_attention_mask"]
        if not kv_cache:
            _export(Decoder(), (decoder_ids, hidden, mask), names, ["logits"], folder / "decoder.onnx")
            return ["encoder.onnx", "decoder.onnx"]
        with torch.no_grad():  # a step of two tokens on the cache of two (torch.export specialises sizes 0 and 1)
            past = _flat_cache(model(encoder_outputs=BaseModelOutput(last_hidden_state=hidden), attention_mask=mask,
                                     decoder_input_ids=decoder_ids[:, :2], use_cache=True).cache.self_attention_cache)
        layers, dim = len(past) // 2, torch.export.Dim.DYNAMIC
        _export(Decoder(), (decoder_ids[:, 2:], hidden, mask, *past), names + _kv_names("past_key_values", layers),
                ["logits"] + _kv_names("present", layers), folder / "decoder.onnx",
                shapes=({0: dim, 1: dim},) * 3 + (tuple({0: dim, 2: dim} for _ in past),))
        return ["encoder.onnx", "decoder.onnx"]

    def __init__(self, folder: Path, config: Any, generation_config: Any) -> None:
        super().__init__(folder, config, generation_config)
        self.encoder = _session(folder / "encoder.onnx")
        self.decoder = _session(folder / "decoder.onnx")
        self.past = _past_shapes(self.decoder)  # [] for an export without a cache
        self.outputs = [o.name for o in self.decoder.get_outputs()]
        self.start = config.decoder_start_token_id if config.decoder_start_token_id is not None else 0
        self.pad = config.pad_token_id if config.pad_token_id is not None else 0

    def _encode(self, input_ids: Any, attention_mask: Any) -> tuple[np.ndarray, np.ndarray]:
        ids = _np(input_ids)
        mask = _np(attention_mask) if attention_mask is not None else np.ones_like(ids)
        return self.encoder.run(None, {"input_ids": ids, "attention_mask": mask})[0], mask

    def _decode(self, decoder_ids: np.ndarray, hidden: np.ndarray, mask: np.ndarray,
                past: list[np.ndarray] | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
        """Logits of `decoder_ids` (the tokens after `past`, the self-attention cache of the earlier ones) and the
        new cache."""
        feed = {"decoder_input_ids": decoder_ids, "encoder_hidden_states": hidden, "encoder_attention_mask": mask,
                **_past_feed(self.past, decoder_ids.shape[0], past)}
        logits, *present = self.decoder.run(self.outputs, feed)
        return logits, present

    def prepare_decoder_input_ids_from_labels(self, labels: Any) -> Any:
        import torch

        shifted = torch.full_like(labels, self.start)
        shifted[:, 1:] = labels[:, :-1]
        return shifted.masked_fill(shifted == -100, self.pad)

    def __call__(self, input_ids: Any, attention_mask: Any = None, decoder_input_ids: Any = None, **_: Any) -> Any:
        hidden, mask = self._encode(input_ids, attention_mask)
        return self._out(self._decode(_np(decoder_input_ids), hidden, mask)[0])

    def generate(self, input_ids: Any, attention_mask: Any = None, generation_config: Any = None,
                 use_cache: bool = True, **_: Any) -> Any:
        """Greedy decoding, one decoder token per step on the self-attention cache (`use_cache=False`, or an
        export without a cache: the whole decoder prefix every step)."""
        import torch

        hidden, mask = self._encode(input_ids, attention_mask)
        eos = self._eos(generation_config)
        out = np.full((hidden.shape[0], 1), self.start, dtype=np.int64)
        done = np.zeros(hidden.shape[0], dtype=bool)
        cached, past, pad = bool(self.past) and use_cache, None, self._pad(generation_config, eos)
        steps = self._max_new_tokens(generation_config)
        for i in range(steps):
            logits, present = self._decode(out[:, -1:] if past is not None else out, hidden, mask, past)
            forced = self._forced(generation_config, i, steps, bos=True)
            nxt = logits[:, -1].argmax(-1).astype(np.int64) if forced is None else np.full(len(out), forced)
            nxt[done] = pad
            out = np.concatenate([out, nxt[:, None]], axis=1)
            done |= np.isin(nxt, list(eos))
            if done.all():
                break
            past = present if cached else None
        return torch.from_numpy(out)


class OnnxCausalLM(OnnxModel):
    @staticmethod
    def export(model: Any, ids: Any, mask: Any, folder: Path, use_token_types: bool, kv_cache: bool = True
               ) -> list[str]:
        """Write this layout's ONNX graph of `model`, traced on the sample batch (ids, mask): with a KV cache
        (past_key_values.* in, present.* out) unless `kv_cache` is False (the old graph, kept for comparisons)."""
        import torch

        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        names = ["input_ids", "attention_mask", "position_ids"]
        if not kv_cache:
            class CausalLM(torch.nn.Module):
                def __init__(self) -> None:
                    super().__init__()
                    self.model = model

                def forward(self, input_ids: Any, attention_mask: Any, position_ids: Any) -> Any:
                    return self.model(input_ids=input_ids, attention_mask=attention_mask,
                                      position_ids=position_ids, use_cache=False).logits

            _export(CausalLM(), (ids, mask, positions), names, ["logits"], folder / "model.onnx")
            return ["model.onnx"]

        class CachedCausalLM(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, input_ids: Any, attention_mask: Any, position_ids: Any, *past: Any) -> Any:
                out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                 cache=_dynamic_cache(past), use_cache=True)
                return (out.logits, *_flat_cache(out.cache))

        if ids.shape[1] < 4:  # past and new tokens of >= 2 each: torch.export specialises sizes 0 and 1
            ids, mask, positions = ids.repeat(1, 2), mask.repeat(1, 2), positions.repeat(1, 2)
        cut = ids.shape[1] // 2  # trace a step of the second half on the cache of the first
        with torch.no_grad():
            past = _flat_cache(model(input_ids=ids[:, :cut], attention_mask=mask[:, :cut],
                                     position_ids=positions[:, :cut], use_cache=True).cache)
        layers = len(past) // 2
        dim = torch.export.Dim.DYNAMIC
        _export(CachedCausalLM(), (ids[:, cut:], mask, positions[:, cut:], *past),
                names + _kv_names("past_key_values", layers), ["logits"] + _kv_names("present", layers),
                folder / "model.onnx", shapes=({0: dim, 1: dim},) * 3 + (tuple({0: dim, 2: dim} for _ in past),))
        return ["model.onnx"]

    def __init__(self, folder: Path, config: Any, generation_config: Any) -> None:
        super().__init__(folder, config, generation_config)
        self.session = _session(folder / "model.onnx")
        self.past = _past_shapes(self.session)  # [] for an export without a cache
        self.outputs = [o.name for o in self.session.get_outputs()]

    def _run(self, ids: np.ndarray, mask: np.ndarray, positions: np.ndarray, past: list[np.ndarray] | None
             ) -> tuple[np.ndarray, list[np.ndarray]]:
        """Logits of `ids` (the tokens after `past`, the cache of the earlier ones; None: none) and the new
        cache. `mask` covers past and new tokens."""
        feed = {"input_ids": ids, "attention_mask": mask, "position_ids": positions.astype(np.int64),
                **_past_feed(self.past, ids.shape[0], past)}
        logits, *present = self.session.run(self.outputs, feed)
        return logits, present

    def __call__(self, input_ids: Any, attention_mask: Any = None, position_ids: Any = None, **_: Any) -> Any:
        ids = _np(input_ids)
        mask = _np(attention_mask) if attention_mask is not None else np.ones_like(ids)
        positions = _np(position_ids) if position_ids is not None else np.clip(mask.cumsum(-1) - 1, 0, None)
        return self._out(self._run(ids, mask, positions, None)[0])

    def generate(self, input_ids: Any, attention_mask: Any = None, generation_config: Any = None,
                 use_cache: bool = True, **_: Any) -> Any:
        """Greedy decoding: the prompt once, then one token per step on the KV cache (`use_cache=False`, or
        an export without a cache: the whole sequence every step). Returns the prompt as given followed by
        the new tokens, pad after a row's EOS, like transformers' generate."""
        import torch

        prompt = _np(input_ids)
        mask = _np(attention_mask) if attention_mask is not None else np.ones_like(prompt)
        # each row's tokens moved to the right end (left padding), so that every row's next token comes from
        # its own last token, whichever side the batch was padded on
        order = np.argsort(mask, axis=1, kind="stable")
        seq, mask = np.take_along_axis(prompt, order, 1), np.take_along_axis(mask, order, 1)
        eos = self._eos(generation_config)
        pad = self._pad(generation_config, eos)
        cached = bool(self.past) and use_cache
        done = np.zeros(prompt.shape[0], dtype=bool)
        step, past, new, steps = seq, None, [], self._max_new_tokens(generation_config)
        for i in range(steps):
            positions = np.clip(mask.cumsum(-1) - 1, 0, None)[:, -step.shape[1]:]
            logits, present = self._run(step, mask, positions, past)
            forced = self._forced(generation_config, i, steps, bos=False)
            nxt = logits[:, -1].argmax(-1).astype(np.int64) if forced is None else np.full(len(seq), forced)
            nxt[done] = pad
            new.append(nxt)
            mask = np.concatenate([mask, (~done).astype(np.int64)[:, None]], axis=1)
            done |= np.isin(nxt, list(eos))
            if done.all():
                break
            if cached:
                step, past = nxt[:, None], present
            else:
                step = seq = np.concatenate([seq, nxt[:, None]], axis=1)
        tokens = np.stack(new, axis=1) if new else np.zeros((prompt.shape[0], 0), np.int64)
        return torch.from_numpy(np.concatenate([prompt, tokens], axis=1))


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
