"""The server's OpenAPI document is its contract: schemathesis (`schemathesis run URL/openapi.json --checks all`,
with the project's schemathesis.toml) against `tuneforge serve` on a tiny run of each task, a text-pair
classifier included, finds no failure and no server error.

A second, strict pass serves with --truncate, where no token limit can refuse a request, and accepts no 422 for
a request the document says is valid: schemathesis.toml accepts 422 for the token limit, which would otherwise
also hide a schema that offers more than the server takes (the `text_pairs` of a single-text classifier once).
"""

from __future__ import annotations

import contextlib
import csv
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("schemathesis")
httpx = pytest.importorskip("httpx")

from conftest import serve_in_thread, train_tiny_t5  # noqa: E402

import tuneforge  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "schemathesis.toml"
KEY = "contract-key"
EXAMPLES = 25  # per operation and phase: a few seconds per task on 2 CPU cores
STRICT_CONFIG = """
[[operations]]
include-method = "POST"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "413"]
checks.negative_data_rejection.expected-statuses = ["401", "413", "422"]
"""


def schemathesis_command() -> list[str]:
    exe = Path(sys.executable).with_name("schemathesis")
    return [str(exe)] if exe.exists() else [sys.executable, "-c", "from schemathesis.cli import schemathesis; "
                                                                   "schemathesis()"]


@contextlib.contextmanager
def serving(run_path: Path, log: Path, *args: str) -> Iterator[str]:
    """`tuneforge serve RUN --port 0` (the real command, with an API key) until the block ends; yields its URL."""
    env = {**os.environ, "TUNEFORGE_API_KEY": KEY, "PYTHONUNBUFFERED": "1"}
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "tuneforge", "serve", str(run_path), "--port", "0",
                                 "--log-level", "warning", *args], stdout=subprocess.PIPE, stderr=err, text=True,
                                env=env, cwd=log.parent)
        try:
            line = proc.stdout.readline()
            assert " on http://127.0.0.1:" in line, (line, log.read_text())
            url = line.split(" on ")[1].split()[0]
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{url}/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline and proc.poll() is None, log.read_text()
                time.sleep(0.1)
            yield url
        finally:
            proc.terminate()
            proc.wait(30)


def run_schemathesis(url: str, config: Path, folder: Path) -> None:
    cmd = [*schemathesis_command(), "--config-file", str(config), "run", f"{url}/openapi.json", "--checks", "all",
           "-H", f"Authorization: Bearer {KEY}", "--max-examples", str(EXAMPLES), "--seed", "0",
           "--generation-database", "none", "--no-color"]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=folder, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "No issues found" in output, output[-6000:]


@pytest.fixture(scope="module")
def pair_run(tiny_bert, tmp_path_factory):
    """A text-pair classifier (text_pair_column): its request schema must require text_pairs."""
    from conftest import base_overrides, toy_rows

    folder = tmp_path_factory.mktemp("contract_pairs")
    data = {}
    for split, n, seed in (("train", 64, 1), ("validation", 32, 2)):
        data[split] = folder / f"{split}.csv"
        with open(data[split], "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["text", "second", "label"])
            writer.writerows((text, "the film", label) for text, label in toy_rows(n, seed))
    return tuneforge.train(None, base_overrides(tiny_bert, data, folder / "run", max_steps=2,
                                                text_pair_column="second"))


@pytest.fixture(scope="module")
def multilabel_run(tiny_bert, tmp_path_factory):
    """A multi-label classifier: results carry `labels` (a set, label enum) and `scores`."""
    from conftest import base_overrides, multilabel_rows, write_jsonl

    folder = tmp_path_factory.mktemp("contract_multilabel")
    data = {"train": write_jsonl(folder / "train.jsonl", multilabel_rows(64, 1)),
            "validation": write_jsonl(folder / "validation.jsonl", multilabel_rows(16, 2))}
    return tuneforge.train(None, base_overrides(tiny_bert, data, folder / "run", max_steps=2))


@pytest.fixture(scope="module")
def regression_run(tiny_bert, tmp_path_factory):
    """A regression model: results carry `score` only."""
    from conftest import base_overrides, regression_rows, write_jsonl

    folder = tmp_path_factory.mktemp("contract_regression")
    data = {"train": write_jsonl(folder / "train.jsonl", regression_rows(64, 1)),
            "validation": write_jsonl(folder / "validation.jsonl", regression_rows(16, 2))}
    return tuneforge.train(None, base_overrides(tiny_bert, data, folder / "run", max_steps=2, label_column="score",
                                                problem_type="regression"))


@pytest.fixture(scope="module")
def lm_run(tiny_gpt2_lm, tmp_path_factory):
    from conftest import train_tiny_lm

    return train_tiny_lm(tiny_gpt2_lm, tmp_path_factory.mktemp("contract_lm"), max_steps=2)


@pytest.fixture(scope="module")
def seq2seq_run(tiny_t5, copy_data, tmp_path_factory):
    return train_tiny_t5(tiny_t5, copy_data, tmp_path_factory.mktemp("contract_t5") / "run", max_steps=2)


@pytest.fixture(scope="module")
def ner_run(tiny_bert, tmp_path_factory):
    """A token classifier with windows of 16 tokens: /v1/entities takes inputs of any length."""
    from conftest import write_jsonl

    folder = tmp_path_factory.mktemp("contract_ner")
    rows = [{"tokens": ["we", "met", "ada", "in", "paris", "the", "movie", "was", "great", "today", "and", "then"],
             "ner_tags": ["O", "O", "B-PER", "O", "B-LOC", "O", "O", "O", "O", "O", "O", "O"]}] * 16
    path = write_jsonl(folder / "train.jsonl", rows)
    items = {"task": "token_classification", "model_name_or_path": str(tiny_bert), "train_file": str(path),
             "validation_file": str(path), "output_dir": str(folder / "run"), "max_length": 16, "stride": 4,
             "max_steps": 2, "report_to": "none", "preprocessing_cache_dir": str(folder / "cache")}
    return tuneforge.train(None, [f"{k}={v}" for k, v in items.items()])


@pytest.fixture(scope="module")
def qa_run(tiny_bert, tmp_path_factory):
    """Question answering with windows of 24 tokens: /v1/answer takes questions and contexts of any length (a
    question too long for a window is a 422)."""
    from conftest import qa_rows, write_jsonl

    folder = tmp_path_factory.mktemp("contract_qa")
    path = write_jsonl(folder / "train.jsonl", qa_rows(16, 1))
    items = {"task": "question_answering", "model_name_or_path": str(tiny_bert), "train_file": str(path),
             "validation_file": str(path), "output_dir": str(folder / "run"), "max_length": 24, "stride": 6,
             "max_steps": 2, "report_to": "none", "preprocessing_cache_dir": str(folder / "cache")}
    return tuneforge.train(None, [f"{k}={v}" for k, v in items.items()])


RUNS = {"classification": "trained_run", "classification_pairs": "pair_run",
        "classification_multilabel": "multilabel_run", "classification_regression": "regression_run",
        "seq2seq": "seq2seq_run",
        "causal_lm": "lm_run", "token_classification": "ner_run", "question_answering": "qa_run"}


@pytest.mark.parametrize("kind", list(RUNS))
def test_schemathesis_finds_nothing(kind, request, tmp_path):
    run = request.getfixturevalue(RUNS[kind])
    with serving(run.path, tmp_path / "serve.log") as url:
        schema = httpx.get(f"{url}/openapi.json", headers={"X-API-Key": KEY}).json()
        body = schema["components"]["schemas"]
        requests = [name for name in body if name.endswith("Request")]
        assert len(requests) == 1  # only the served task's route
        assert ("text_pairs" in body[requests[0]]["properties"]) == (kind == "classification_pairs")
        run_schemathesis(url, CONFIG, tmp_path)
    assert "Traceback" not in (tmp_path / "serve.log").read_text()


@contextlib.contextmanager
def serving_in_process(run_path: Path, **settings: object) -> Iterator[str]:
    """The same app in a uvicorn thread of this process (no second start of torch)."""
    from tuneforge.deploy.serve import ServeSettings

    with serve_in_thread(tuneforge.load(run_path), ServeSettings(api_key=KEY, **settings)) as (url, _):
        yield url


@pytest.mark.parametrize("kind", ["classification", "causal_lm", "token_classification"])
def test_schemathesis_strict_with_truncation(kind, request, tmp_path):
    """No 422 for a schema-valid request when inputs are truncated (classifiers and encoder-decoders truncate in
    the model's predict alike; causal LMs have the server cut prompts; a token classifier windows inputs of any
    length, --truncate or not). The pair classifier is left out: equal
    numbers of inputs and text_pairs is a rule JSON Schema cannot express. --max-new-tokens 16 leaves a causal
    LM's prompt at least 48 of its 64 positions, so every prompt can be cut to fit."""
    run = request.getfixturevalue(RUNS[kind])
    strict = tmp_path / "strict.toml"
    strict.write_text(STRICT_CONFIG)
    with serving_in_process(run.path, truncate=True, max_new_tokens=16) as url:
        run_schemathesis(url, strict, tmp_path)
