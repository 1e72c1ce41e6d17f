"""Hub code paths, exercised offline: `datasets.load_dataset` on a local folder, and clear one-line errors
when a hub id cannot be reached."""

from __future__ import annotations

import pytest
from conftest import toy_rows

from tuneforge.cli import main
from tuneforge.config import load_config
from tuneforge.tasks import get_task


def test_dataset_name_goes_through_load_dataset_with_classlabel_names(tmp_path):
    import datasets

    features = datasets.Features({"text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["neg", "pos"])})
    for split, seed in (("train", 1), ("validation", 2)):
        rows = toy_rows(40, seed)
        ds = datasets.Dataset.from_dict({"text": [t for t, _ in rows],
                                         "label": [0 if y == "neg" else 1 for _, y in rows]}, features=features)
        ds.to_parquet(str(tmp_path / f"{split}.parquet"))
    cfg = load_config(None, ["task=classification", "model_name_or_path=m", f"dataset_name={tmp_path}"])
    data = get_task("classification").prepare_data(cfg)
    assert data.label_names == ["neg", "pos"]  # ClassLabel ids became their names
    assert set(data.splits) == {"train", "validation"}
    assert len(data.splits["validation"]) == 40  # the dataset's own validation split, not a held-out one
    assert data.splits["train"].where(0).startswith("hub dataset")


def test_unreachable_hub_dataset_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code = main(["train", "task=classification", "model_name_or_path=m", "dataset_name=someone/not-here-xyz"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert "not-here-xyz" in err and "train_file" in err  # says what failed and suggests a local file


@pytest.mark.parametrize("name,expected", [
    ("someone/not-a-real-model-xyz", "hub"),
    ("./no/such/folder", "local folder not found"),
])
def test_unreachable_or_missing_model_is_one_line(toy_data, tmp_path, capsys, monkeypatch, name, expected):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code = main(["train", "task=classification", f"model_name_or_path={name}", f"train_file={toy_data['train']}",
                 f"output_dir={tmp_path / 'out'}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert expected in err and name in err
    assert not (tmp_path / "out").exists()  # no half-written run folder


def test_hub_model_id_loads_from_cache_and_records_the_commit(tiny_bert, toy_data, tmp_path, monkeypatch):
    """A hub id goes through the real from_pretrained path (served from an offline hub cache laid out as
    huggingface_hub writes it); the run records the commit the branch resolved to."""
    import shutil

    import tuneforge

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--acme--tiny-bert"
    shutil.copytree(tiny_bert, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    run = tuneforge.train(None, [
        "task=classification", "model_name_or_path=acme/tiny-bert", f"cache_dir={tmp_path / 'hub'}",
        f"train_file={toy_data['train']}", "max_train_samples=64", "num_train_epochs=1", "report_to=none",
        f"output_dir={tmp_path / 'run'}", f"preprocessing_cache_dir={tmp_path / 'cache'}"])
    assert run.info["model_revision"] == commit
    assert run.info["base_model"] == "acme/tiny-bert"


def test_a_streamed_dataset_fetches_only_the_rows_it_keeps(tmp_path):
    """dataset_streaming: load_dataset(streaming=True) on a local folder (the same code path as the hub); with
    max_train_samples / max_eval_samples only that many rows are read, from a shuffle buffer for train; they land
    in a JSON Lines file in the cache, labels as names; without caps the rows equal the downloaded dataset's."""
    import datasets

    features = datasets.Features({"text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["neg", "pos"])})
    source = {}
    (tmp_path / "dataset").mkdir()
    for split, seed in (("train", 1), ("validation", 2)):
        rows = toy_rows(60, seed)
        source[split] = rows
        ds = datasets.Dataset.from_dict({"text": [t for t, _ in rows],
                                         "label": [0 if y == "neg" else 1 for _, y in rows]}, features=features)
        ds.to_parquet(str(tmp_path / "dataset" / f"{split}.parquet"))
    cache = tmp_path / "cache"
    base = ["task=classification", "model_name_or_path=m", f"dataset_name={tmp_path / 'dataset'}",
            f"preprocessing_cache_dir={cache}"]
    capped = load_config(None, [*base, "dataset_streaming=true", "max_train_samples=25", "max_eval_samples=10"])
    data = get_task("classification").prepare_data(capped)
    streamed = list((cache / "streamed").rglob("train.jsonl"))
    assert len(streamed) == 1 and len(streamed[0].read_text().splitlines()) == 25  # only 25 rows were fetched
    assert len(data.splits["train"]) <= 25 and len(data.splits["validation"]) == 10
    train_texts = set(data.splits["train"].columns["text"])
    assert train_texts <= {t for t, _ in source["train"]}
    assert train_texts != {t for t, _ in source["train"][:25]}  # the shuffle buffer, not the first 25
    assert list(data.splits["validation"].columns["text"]) == [t for t, _ in source["validation"][:10]]
    assert set(data.label_names) == {"neg", "pos"}
    whole = get_task("classification").prepare_data(load_config(None, [*base, "dataset_streaming=true"]))
    downloaded = get_task("classification").prepare_data(load_config(None, base))
    for split in ("train", "validation"):
        assert list(whole.splits[split].columns["text"]) == list(downloaded.splits[split].columns["text"])
        assert list(whole.splits[split].columns["label"]) == list(downloaded.splits[split].columns["label"])
    assert whole.fingerprint == downloaded.fingerprint
