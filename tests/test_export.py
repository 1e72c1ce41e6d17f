"""Exports: safetensors and ONNX, fp32 and int8, for the three tasks, each verified on validation data."""

from __future__ import annotations

import copy
import importlib.util
import json
import shutil

import pytest
import torch
from conftest import one_line_error, train_tiny_lm

import tuneforge
from tuneforge.deploy.export import export_run
from tuneforge.errors import UserError

onnx_deps = pytest.mark.skipif(any(importlib.util.find_spec(m) is None
                                   for m in ("onnx", "onnxruntime", "onnxscript")),
                               reason="needs the onnx extra (pip install 'tuneforge[onnx]')")


def _texts(n: int = 12) -> list[str]:
    from conftest import toy_rows

    return [t for t, _ in toy_rows(n, 7)]


def test_safetensors_export_matches_the_run_exactly(trained_run, tmp_path):
    out = tmp_path / "st"
    report = export_run(trained_run.path, "safetensors", output=out, latency_examples=3)
    assert report["passed"] and report["agreement"]["value"] == 1.0
    assert report["agreement"]["max_logit_diff"] < 1e-5
    assert report["metrics"]["change"] == {"accuracy": 0.0, "f1_macro": 0.0}
    assert report["validation"]["rows"] == 80  # the run's own validation file
    assert json.loads((out / "report.json").read_text())["passed"] is True
    manifest = json.loads((out / "export.json").read_text())
    assert manifest["format"] == "safetensors" and manifest["task"] == "classification"
    assert (out / "model.safetensors").exists() and not list(out.glob("*.bin"))
    assert {"size_bytes", "latency"} <= set(report) and report["latency"]["original"]["calls"] == 3
    texts = _texts()
    assert tuneforge.load(out).predict(texts) == tuneforge.load(trained_run.path).predict(texts)


def test_int8_safetensors_export_is_smaller_and_loads_quantized(trained_run, tmp_path):
    out = tmp_path / "int8"
    report = export_run(trained_run.path, "safetensors", quantize="int8", output=out, min_agreement=0.9,
                        latency_examples=3)
    assert report["passed"] and report["agreement"]["value"] >= 0.9
    assert report["size_bytes"]["exported"] < report["size_bytes"]["original"]
    loaded = tuneforge.load(out)
    assert loaded.device.type == "cpu" and loaded.describe()["quantize"] == "int8"
    kinds = {type(m).__name__ for m in loaded.model.modules()}
    assert "Linear" in kinds and any("quantized" in type(m).__module__ for m in loaded.model.modules())
    # the file holds int8 weights, not pickles; reloading gives the very model that was verified
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), "pt") as fh:
        dtypes = {fh.get_tensor(k).dtype for k in fh.keys()}  # noqa: SIM118 - safe_open has no __iter__
    assert torch.int8 in dtypes
    a = loaded.predict(_texts())
    b = tuneforge.load(out).predict(_texts())
    assert a == b


@onnx_deps
@pytest.mark.parametrize("quantize", [None, "int8"])
def test_onnx_classification_export(trained_run, tmp_path, quantize):
    out = tmp_path / f"onnx-{quantize}"
    report = export_run(trained_run.path, "onnx", quantize=quantize, output=out, min_agreement=0.9,
                        latency_examples=3)
    assert report["passed"] and (out / "model.onnx").exists()
    if quantize is None:
        assert report["agreement"]["value"] == 1.0 and report["agreement"]["max_logit_diff"] < 1e-4
    else:  # a model this tiny is mostly graph, not weights: size is checked on MiniLM in the benchmark
        assert report["size_bytes"]["exported"] == (out / "model.onnx").stat().st_size
        ops = {node.op_type for node in __import__("onnx").load(str(out / "model.onnx")).graph.node}
        assert {"DynamicQuantizeLinear", "MatMulInteger"} <= ops
    exported = tuneforge.load(out)
    assert exported.describe()["format"] == "onnx"
    texts = _texts(30)
    original = [r["label"] for r in tuneforge.load(trained_run.path).predict(texts)]
    labels = [r["label"] for r in exported.predict(texts)]
    assert sum(a == b for a, b in zip(original, labels)) >= (30 if quantize is None else 27)


def test_failed_verification_is_loud_and_the_export_will_not_load(trained_run, tmp_path, monkeypatch, capsys):
    import tuneforge.deploy.verify as verify

    real = verify.VERIFY_METRICS["classes"]  # the comparison classification declares (TaskSpec.verify_metrics)

    def worse(*args, **kwargs):
        result = real(*args, **kwargs)
        return {**result, "agreement": 0.5}

    monkeypatch.setitem(verify.VERIFY_METRICS, "classes", worse)
    out = tmp_path / "bad"
    with pytest.raises(UserError, match=r"below --min-agreement 0\.98"):
        export_run(trained_run.path, "safetensors", output=out, latency_examples=2)
    report = json.loads((out / "report.json").read_text())
    assert report["passed"] is False and report["agreement"]["value"] == 0.5
    error = one_line_error(capsys, ["predict", str(out), "--text", "great film"])
    assert "failed verification" in error
    # and the CLI says so in one line too
    error = one_line_error(capsys, ["export", str(trained_run.path), "--format", "safetensors", "--output",
                                    str(tmp_path / "bad2"), "--latency-examples", "2"])
    assert "export verification failed" in error


def test_export_cli_refuses_to_overwrite_and_checks_options(trained_run, tmp_path, capsys):
    from tuneforge.cli import main

    out = tmp_path / "cli"
    assert main(["export", str(trained_run.path), "--format", "safetensors", "--output", str(out),
                 "--latency-examples", "2", "--max-examples", "20"]) == 0
    printed = capsys.readouterr().out
    assert "label agreement: 1.0000" in printed and "verification: passed" in printed
    assert json.loads((out / "report.json").read_text())["validation"]["rows"] == 20
    error = one_line_error(capsys, ["export", str(trained_run.path), "--format", "safetensors", "--output", str(out)])
    assert "already holds files" in error and "--overwrite" in error
    assert "between 0 and 1" in one_line_error(capsys, ["export", str(trained_run.path), "--format", "safetensors",
                                                        "--min-agreement", "2"])
    assert "already an export" in one_line_error(capsys, ["export", str(out), "--format", "onnx"])


def test_export_verifies_on_another_file_when_the_run_data_moved(trained_run, toy_data, tmp_path, capsys):
    run = tmp_path / "moved"
    shutil.copytree(trained_run.path, run, ignore=shutil.ignore_patterns("checkpoints", "export"))
    config = (run / "run_config.yaml").read_text().replace(str(toy_data["validation"]), str(tmp_path / "gone.csv"))
    (run / "run_config.yaml").write_text(config)
    error = one_line_error(capsys, ["export", str(run), "--format", "safetensors"])
    assert "--data FILE" in error
    report = export_run(run, "safetensors", data_file=str(toy_data["test"]), latency_examples=2)
    assert report["passed"] and report["validation"]["rows"] == 80


def test_pickled_weights_are_refused_in_one_line(trained_run, tmp_path, capsys):
    from safetensors.torch import load_file

    run = tmp_path / "pickled"
    shutil.copytree(trained_run.path, run, ignore=shutil.ignore_patterns("checkpoints", "export"))
    state = load_file(str(run / "model.safetensors"))
    (run / "model.safetensors").unlink()
    torch.save(state, run / "pytorch_model.bin")
    commands = [["predict", str(run), "--text", "great"], ["export", str(run), "--format", "onnx"]]
    if all(importlib.util.find_spec(m) for m in ("fastapi", "uvicorn")):  # else serve's error names those first
        commands.append(["serve", str(run), "--port", "0"])
    for argv in commands:
        error = one_line_error(capsys, argv)
        assert "pickled weights (pytorch_model.bin)" in error and "safetensors only" in error


def test_lora_run_exports_its_merged_weights(tiny_bert, toy_data, tmp_path):
    from conftest import base_overrides

    run = tuneforge.train(None, base_overrides(tiny_bert, toy_data, tmp_path / "lora", num_train_epochs=1) +
                          ["lora.enabled=true", "lora.r=4"])
    report = export_run(run.path, "safetensors", output=tmp_path / "out", latency_examples=2)
    assert report["passed"] and report["agreement"]["value"] == 1.0
    manifest = json.loads((tmp_path / "out" / "export.json").read_text())
    assert manifest["lora"] == "merged weights"
    assert not any("lora" in k for k in tuneforge.load(tmp_path / "out").model.state_dict())


# ---- generative tasks -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def t5_run(tiny_t5, copy_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("export_t5") / "run"
    items = {"task": "seq2seq", "model_name_or_path": str(tiny_t5), "train_file": str(copy_data["train"]),
             "validation_file": str(copy_data["validation"]), "output_dir": str(out), "report_to": "none",
             "seed": 0, "max_target_length": 16, "preprocessing_cache_dir": str(out.parent / "cache"),
             "learning_rate": 3e-3, "max_steps": 30, "num_beams": 1, "max_new_tokens": 12,
             "max_train_samples": 300}
    return tuneforge.train(None, [f"{k}={v}" for k, v in items.items()])


@pytest.fixture(scope="module")
def lm_run(tiny_gpt2_lm, tmp_path_factory):
    return train_tiny_lm(tiny_gpt2_lm, tmp_path_factory.mktemp("export_lm"), max_steps=60)


@onnx_deps
def test_onnx_seq2seq_export_encoder_decoder_greedy(t5_run, tmp_path):
    out = tmp_path / "t5"
    report = export_run(t5_run.path, "onnx", output=out, latency_examples=3, max_examples=20)
    assert report["passed"] and report["agreement"]["measure"].startswith("next-token agreement")
    assert report["agreement"]["value"] == 1.0 and report["agreement"]["max_logit_diff"] < 1e-3
    assert report["agreement"]["same_generated_text"] == 1.0 and "greedy" in report["agreement"]["decoding"]
    assert set(report["metrics"]["change"]) == {"rouge1", "rouge2", "rougeL"}
    assert sorted(p.name for p in out.glob("*.onnx")) == ["decoder.onnx", "encoder.onnx"]
    texts = ["red cat blue", "dog sun moon tree"]
    assert tuneforge.load(out).summarize(texts) == tuneforge.load(t5_run.path).summarize(texts)


def test_int8_seq2seq_export(t5_run, tmp_path):
    report = export_run(t5_run.path, "safetensors", quantize="int8", output=tmp_path / "q", min_agreement=0.5,
                        latency_examples=2, max_examples=10)
    assert report["passed"] and "num_beams=1" in report["agreement"]["decoding"]
    assert tuneforge.load(tmp_path / "q").summarize(["red cat"], max_new_tokens=3)


@onnx_deps
def test_onnx_causal_lm_export_and_generate(lm_run, tmp_path):
    out = tmp_path / "lm"
    report = export_run(lm_run.path, "onnx", output=out, latency_examples=2)
    assert report["passed"] and report["agreement"]["value"] == 1.0
    assert abs(report["metrics"]["change"]["perplexity"]) < 1e-3
    prompts = ["the quick brown", "all that"]
    exported, run = tuneforge.load(out), tuneforge.load(lm_run.path)
    assert exported.generate(prompts) == run.generate(prompts)
    assert json.loads((out / "export.json").read_text())["generation"] == "greedy, KV cache"
    # token for token: the export's cache decoding and the run's own greedy generate, on a left-padded batch
    assert exported.model.past  # the graph takes past_key_values.* (a KV cache)
    enc = run.tokenizer(prompts + ["a"], return_tensors="pt", padding=True, padding_side="left")
    gen = copy.deepcopy(run.model.generation_config)
    gen.update(do_sample=False, num_beams=1)
    with torch.no_grad():
        expected = run.model.generate(**enc, generation_config=gen)
    assert torch.equal(exported.model.generate(**enc, generation_config=gen), expected)
    int8 = export_run(lm_run.path, "onnx", quantize="int8", output=tmp_path / "lm8", min_agreement=0.5,
                      latency_examples=2)
    assert int8["passed"] and int8["agreement"]["tokens"] > 0


@onnx_deps
def test_int8_onnx_quantization_survives_the_exporters_shape_hints(tmp_path):
    """torch's exporter writes shape hints (value_info) for weights too; onnxruntime 1.30 transposed a Gemm's
    weight in place (Gemm -> MatMul) under the old hint, and its own shape inference then failed."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from tuneforge.deploy.quantize import quantize_onnx

    w = np.random.default_rng(0).standard_normal((2, 32)).astype(np.float32)  # nn.Linear(32, 2): out x in
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w"], ["y"], transB=1)], "classifier",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])], [numpy_helper.from_array(w, "w")],
        value_info=[helper.make_tensor_value_info("w", TensorProto.FLOAT, [2, 32])])
    source = tmp_path / "model.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(source))
    quantize_onnx(source, tmp_path / "int8.onnx")
    x = np.random.default_rng(1).standard_normal((3, 32)).astype(np.float32)
    y = ort.InferenceSession(str(tmp_path / "int8.onnx")).run(None, {"x": x})[0]
    reference = x @ w.T
    assert y.shape == (3, 2) and np.abs(y - reference).max() < 0.05 * np.abs(reference).max()  # int8 error
    # 7-bit weights: full-range int8 weights saturate ONNX Runtime's int16 pair sums on CPUs without VNNI
    weights = [numpy_helper.to_array(t) for t in onnx.load(str(tmp_path / "int8.onnx")).graph.initializer
               if t.data_type == TensorProto.INT8]
    assert weights and all(np.abs(w).max() <= 64 for w in weights)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["int8.onnx", "model.onnx"]  # its hint-free copy is gone
