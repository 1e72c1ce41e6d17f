"""The HTTP server, started for real on a loopback port: every route, the limits, the API key, bad JSON,
micro-batching, an ONNX export served, and the `tuneforge serve` command itself."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from conftest import serve_in_thread, train_tiny_t5  # noqa: E402

import tuneforge  # noqa: E402
from tuneforge.deploy.batcher import MicroBatcher  # noqa: E402
from tuneforge.deploy.serve import ServeSettings  # noqa: E402

KEY = "test-key-123"
AUTH = {"Authorization": f"Bearer {KEY}"}


def running(model, **settings):
    """Serve `model` (a LoadedModel) with uvicorn in a thread on a free loopback port: (url, app)."""
    return serve_in_thread(model, ServeSettings(**settings))


@pytest.fixture(scope="module")
def loaded(trained_run):
    return tuneforge.load(trained_run.path)


@pytest.fixture(scope="module")
def server(loaded):
    with running(loaded, api_key=KEY, max_inputs=8, max_body_bytes=4096, max_batch_size=8, max_wait_ms=200,
                 max_input_tokens=20) as (url, app):
        yield url, app


def test_health_needs_no_key_and_everything_else_does(server):
    url, _ = server
    assert httpx.get(f"{url}/health").json() == {"status": "ok"}
    for method, path in (("GET", "/v1/model"), ("GET", "/openapi.json"), ("GET", "/docs"), ("GET", "/v1/stats"),
                         ("POST", "/v1/classify"), ("GET", "/nowhere")):
        r = httpx.request(method, f"{url}{path}", json={"inputs": "x"} if method == "POST" else None)
        assert r.status_code == 401, (path, r.text)
        assert r.headers["www-authenticate"] == "Bearer"
        r = httpx.request(method, f"{url}{path}", headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401
    assert httpx.get(f"{url}/v1/model", headers={"X-API-Key": KEY}).status_code == 200


def test_model_info_and_openapi(server, trained_run):
    url, _ = server
    info = httpx.get(f"{url}/v1/model", headers=AUTH).json()
    assert info["task"] == "classification" and info["labels"] == ["neg", "pos"]
    assert info["base_model"] == trained_run.info["base_model"] and info["version"] == trained_run.info["id"]
    assert info["route"] == "/v1/classify" and info["limits"]["max_inputs"] == 8
    schema = httpx.get(f"{url}/openapi.json", headers=AUTH).json()
    assert "/v1/classify" in schema["paths"] and "/v1/summarize" not in schema["paths"]
    assert "/health" in schema["paths"] and "/v1/model" in schema["paths"]


def test_openapi_declares_the_limits_errors_and_key(server):
    url, _ = server
    schema = httpx.get(f"{url}/openapi.json", headers=AUTH).json()
    models = schema["components"]["schemas"]
    request = models["ClassifyRequest"]
    assert set(request["properties"]) == {"inputs"} and request["additionalProperties"] is False  # no text_pairs
    one, many = request["properties"]["inputs"]["anyOf"]
    assert one["maxLength"] == 4096 - len('{"inputs": ""}') == many["items"]["maxLength"]
    assert (many["minItems"], many["maxItems"]) == (1, 8)
    assert models["ClassifyLabel"]["properties"]["label"]["enum"] == ["neg", "pos"]
    responses = schema["paths"]["/v1/classify"]["post"]["responses"]
    assert set(responses) == {"200", "401", "413", "422"}
    assert responses["413"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorMessage")
    assert responses["422"]["content"]["application/json"]["schema"]["$ref"].endswith("/HTTPValidationError")
    assert set(schema["paths"]["/v1/model"]["get"]["responses"]) == {"200", "401"}
    assert set(schema["components"]["securitySchemes"]) == {"bearer", "apiKey"}
    assert "security" not in schema["paths"]["/health"]["get"]
    assert schema["paths"]["/v1/stats"]["get"]["security"] == [{"bearer": []}, {"apiKey": []}]


def test_classify_single_and_batch_match_the_python_api(server, loaded):
    url, _ = server
    texts = ["a great film", "the plot was awful", "the movie was quite lovely"]
    expected = loaded.predict(texts)
    r = httpx.post(f"{url}/v1/classify", json={"inputs": texts}, headers=AUTH)
    assert r.status_code == 200, r.text
    body = r.json()
    assert [x["label"] for x in body["results"]] == [x["label"] for x in expected]
    assert body["results"][0]["probability"] == pytest.approx(expected[0]["probability"], abs=1e-5)
    one = httpx.post(f"{url}/v1/classify", json={"inputs": texts[1]}, headers=AUTH).json()
    assert len(one["results"]) == 1 and one["results"][0]["label"] == expected[1]["label"]


def test_limits_and_bad_requests(server):
    url, _ = server
    post = lambda **kw: httpx.post(f"{url}/v1/classify", headers={**AUTH, **kw.pop("headers", {})}, **kw)  # noqa: E731
    r = post(json={"inputs": ["word " * 2000]})
    assert r.status_code == 413 and "4096 bytes" in r.json()["detail"]
    messages = lambda r: " ".join(e["msg"] for e in r.json()["detail"])  # noqa: E731 - FastAPI's 422 shape
    r = post(json={"inputs": ["great"] * 9})
    assert r.status_code == 422 and "at most 8" in messages(r)
    r = post(json={"inputs": []})
    assert r.status_code == 422 and "at least 1" in messages(r)
    r = post(json={"inputs": ["the film was " + "really " * 30 + "great"]})
    assert r.status_code == 422 and "the limit is 20" in messages(r) and "--truncate" in messages(r)
    assert r.json()["detail"] == [{"type": "too_many_tokens", "loc": ["body", "inputs", 0], "msg": messages(r),
                                   "ctx": {"tokens": 36, "limit": 20}}]
    r = post(content=b'{"inputs": ["unterminated', headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"][0]["type"] == "json_invalid"
    r = post(content=b'{"inputs": "\xff\xfe\xfd"}', headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"][0]["type"] == "json_invalid"  # FastAPI's own 400 before
    r = post(json={"texts": ["great"]})
    assert r.status_code == 422  # wrong field name: extra fields are refused and inputs is missing
    r = post(json={"inputs": [1, 2]})
    assert r.status_code == 422
    r = post(json={"inputs": "great", "text_pairs": ["x"]})
    assert r.status_code == 422 and r.json()["detail"][0]["type"] == "extra_forbidden"  # not in the document
    assert httpx.post(f"{url}/v1/summarize", json={"inputs": "x"}, headers=AUTH).status_code == 404


def test_body_limit_counts_bytes_sent_without_a_length(server):
    url, _ = server

    def chunks():
        yield b'{"inputs": ["'
        for _ in range(100):
            yield b"great " * 10
        yield b'"]}'

    r = httpx.post(f"{url}/v1/classify", content=chunks(), headers={**AUTH, "content-type": "application/json"})
    assert r.status_code == 413


def test_concurrent_requests_are_batched_together(server, loaded):
    url, app = server
    batcher = app.state.batcher
    before = sum(batcher.batch_sizes.values())
    texts = ["great film", "awful film", "lovely story", "terrible plot", "superb acting", "lousy ending"]
    with httpx.Client(headers=AUTH) as client, ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda t: client.post(f"{url}/v1/classify", json={"inputs": t}).json(), texts))
    assert [r["results"][0]["label"] for r in results] == [p["label"] for p in loaded.predict(texts)]
    calls = sum(batcher.batch_sizes.values()) - before
    assert calls < len(texts)  # 200 ms of max wait: the six requests share model calls
    stats = httpx.get(f"{url}/v1/stats", headers=AUTH).json()
    assert stats["max_batch_size"] == 8 and max(int(k) for k in stats["batch_sizes"]) > 1


def test_truncation_when_configured(loaded):
    with running(loaded, max_input_tokens=8, truncate=True) as (url, _):
        r = httpx.post(f"{url}/v1/classify", json={"inputs": ["great " + "the film " * 40]})
        assert r.status_code == 200, r.text
        assert httpx.get(f"{url}/v1/model").status_code == 200  # no key configured: open


def test_micro_batcher_limits_and_keys():
    async def scenario():
        calls = []

        def run(key, items):
            calls.append((key, list(items)))
            return [f"{key}:{x}" for x in items]

        batcher = MicroBatcher(run, max_batch=3, max_wait_ms=50)
        batcher.start()
        results = await asyncio.gather(batcher.submit("a", [1, 2]), batcher.submit("a", [3]),
                                       batcher.submit("a", [4, 5]), batcher.submit("b", [6]))
        await batcher.stop()
        return calls, results

    calls, results = asyncio.run(scenario())
    assert results == [["a:1", "a:2"], ["a:3"], ["a:4", "a:5"], ["b:6"]]
    assert all(len(items) <= 3 for _, items in calls)  # never more than max_batch inputs per call
    assert all(len({k}) == 1 for k, _ in calls) and ("b", [6]) in calls


def test_an_onnx_export_served_gives_the_pytorch_labels(trained_run, loaded, tmp_path):
    pytest.importorskip("onnxruntime")
    from conftest import toy_rows

    from tuneforge.deploy.export import export_run

    export_run(trained_run.path, "onnx", output=tmp_path / "onnx", latency_examples=2)
    texts = [t for t, _ in toy_rows(40, 11)]
    expected = [p["label"] for p in loaded.predict(texts)]
    with running(tuneforge.load(tmp_path / "onnx"), max_inputs=64) as (url, _):
        info = httpx.get(f"{url}/v1/model").json()
        assert info["format"] == "onnx" and info["source"] == "export"
        body = httpx.post(f"{url}/v1/classify", json={"inputs": texts}).json()
    assert [r["label"] for r in body["results"]] == expected


@pytest.fixture(scope="module")
def lm_model(tiny_gpt2_lm, tmp_path_factory):
    from conftest import train_tiny_lm

    return tuneforge.load(train_tiny_lm(tiny_gpt2_lm, tmp_path_factory.mktemp("serve_lm"), max_steps=40).path)


def test_generate_route_caps_max_new_tokens(lm_model):
    with running(lm_model, max_new_tokens=5, max_batch_size=4) as (url, _):
        r = httpx.post(f"{url}/v1/generate", json={"inputs": ["the quick brown", "all that"], "max_new_tokens": 50})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["max_new_tokens"] == 5 and len(body["results"]) == 2
        assert body["results"][0]["generated_text"] == lm_model.generate(["the quick brown"], max_new_tokens=5)[0]
        assert httpx.post(f"{url}/v1/generate", json={"inputs": "x", "max_new_tokens": 0}).status_code == 422
        assert httpx.post(f"{url}/v1/classify", json={"inputs": "x"}).status_code == 404
        default = httpx.post(f"{url}/v1/generate", json={"inputs": "the early"}).json()
        assert default["max_new_tokens"] == 5  # the run's 8, capped by the server
        too_long = httpx.post(f"{url}/v1/generate", json={"inputs": "the " * 70}).json()
        assert "the limit is 59" in too_long["detail"][0]["msg"]  # 64 positions, 5 kept for the new tokens
        assert httpx.post(f"{url}/v1/generate", json={"inputs": ""}).json()["detail"][0]["type"] == "string_too_short"
        request = httpx.get(f"{url}/openapi.json").json()["components"]["schemas"]["GenerateRequest"]
        assert set(request["properties"]) == {"inputs", "max_new_tokens"}
        assert "maximum" not in request["properties"]["max_new_tokens"]["anyOf"][0]  # capped at 5, never refused


def test_summarize_route(trained_t5_model):
    with running(trained_t5_model, max_new_tokens=4) as (url, _):
        body = httpx.post(f"{url}/v1/summarize", json={"inputs": ["red cat blue"], "max_new_tokens": 3}).json()
        assert body["max_new_tokens"] == 3
        assert body["results"][0]["generated_text"] == trained_t5_model.summarize(["red cat blue"],
                                                                                  max_new_tokens=3)[0]
        schema = httpx.get(f"{url}/openapi.json").json()
        assert "/v1/summarize" in schema["paths"] and "/v1/classify" not in schema["paths"]


@pytest.fixture(scope="module")
def trained_t5_model(tiny_t5, copy_data, tmp_path_factory):
    return tuneforge.load(train_tiny_t5(tiny_t5, copy_data, tmp_path_factory.mktemp("serve_t5") / "run", 20).path)


def test_serve_command_binds_loopback_and_prints_its_address(trained_run):
    env = {**os.environ, "TUNEFORGE_API_KEY": KEY, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "tuneforge", "serve", str(trained_run.path), "--port", "0",
                             "--log-level", "warning"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, cwd=Path(trained_run.path).parent)
    try:
        line = proc.stdout.readline()
        assert "on http://127.0.0.1:" in line and "API key required" in line, line
        url = line.split(" on ")[1].split()[0]
        deadline = time.monotonic() + 30
        while True:
            try:
                assert httpx.get(f"{url}/health").status_code == 200
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert httpx.get(f"{url}/v1/model").status_code == 401  # the key came from the environment
        r = httpx.post(f"{url}/v1/classify", json={"inputs": ["a lovely film"]}, headers=AUTH)
        assert r.status_code == 200 and json.loads(r.text)["results"][0]["label"] in ("pos", "neg")
    finally:
        proc.terminate()
        proc.wait(20)
