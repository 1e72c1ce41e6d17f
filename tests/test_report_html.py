"""report.html: self-contained, and it renders in headless Chromium with every image loaded."""

from __future__ import annotations

import html
import re
import shutil
import subprocess

import pytest

from tuneforge.cli import main

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


def test_report_is_self_contained(trained_run):
    page = (trained_run.path / "report.html").read_text()
    assert "http://" not in page and "https://" not in page  # no external resource of any kind
    images = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,', page)
    for expected in ("Training and validation loss", "Learning-rate schedule", "Confusion matrix", "F1 per class",
                     "Input-length histogram with the truncation point"):
        assert expected in images
    assert "Learning-rate finder" not in images  # none ran for this run


def test_report_command_rebuilds_report_and_card(trained_run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(trained_run.path, copy, ignore=shutil.ignore_patterns("checkpoints", "*.safetensors"))
    (copy / "report.html").unlink()
    (copy / "README.md").unlink()
    # what the range test of `learning_rate: auto` writes into the run (engine/lr_finder.py LRFindResult.write)
    (copy / "lr_find.csv").write_text("step,learning_rate,loss,smoothed_loss\n0,1e-06,0.7,0.7\n1,1e-05,0.69,0.695\n"
                                      "2,0.0001,0.5,0.62\n3,0.001,0.9,0.7\n")
    assert main(["report", str(copy)]) == 0
    page = (copy / "report.html").read_text()
    assert 'alt="Learning-rate finder"' in page
    assert (copy / "README.md").read_text() == (trained_run.path / "README.md").read_text()


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install chromium); "
                                             ".ci/run installs it in CI")
def test_report_renders_in_headless_chromium(trained_run):
    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--virtual-time-budget=5000", "--dump-dom", (trained_run.path / "report.html").as_uri()],
        capture_output=True, text=True, timeout=120)
    dom = result.stdout
    body = re.search(r"<body[^>]*>", dom)
    assert body, result.stderr[-2000:]
    n = int(re.search(r'data-images="(\d+)"', body.group(0)).group(1))
    loaded = int(re.search(r'data-images-loaded="(\d+)"', body.group(0)).group(1))
    assert n >= 5 and loaded == n  # the page script saw every embedded image decode
    text = html.unescape(re.sub(r"<[^>]+>", " ", dom))
    test = trained_run.metrics["test"]
    assert f"{test['accuracy']:.4f}" in text and f"{test['f1_macro']:.4f}" in text
    assert trained_run.info["id"] in text
