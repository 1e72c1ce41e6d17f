"""Command line: a thin dispatch to library functions.

    tuneforge config classification > run.yaml
    tuneforge train run.yaml learning_rate=3e-5 num_train_epochs=2
    tuneforge lr-find run.yaml --output lr_find/
    tuneforge tune run.yaml --n-trials 20 learning_rate='log(1e-5, 1e-3)'
    tuneforge predict runs/<id> --text "the parcel never arrived"
    tuneforge summarize runs/<id> --input articles.jsonl --output summaries.jsonl
    tuneforge generate runs/<id> --prompt "Once upon a time"
    tuneforge evaluate runs/<id> --data test.csv
    tuneforge report runs/<id>
    tuneforge runs list --task classification
    tuneforge runs compare runs/<a> runs/<b>
    tuneforge export runs/<id> --format onnx --quantize int8
    tuneforge serve runs/<id> --port 8000
    tuneforge demo

Errors a user can cause print one line and exit with code 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from tuneforge.errors import Interrupted, PeerLost, UserError


def _cmd_config(args: argparse.Namespace) -> int:
    from tuneforge.config import render_config

    sys.stdout.write(render_config(args.task))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    if args.nproc is not None:  # the same command in N processes on this machine (torchrun's launcher)
        from tuneforge.runs.launch import launch_local

        argv = ["train", *([args.config] if args.config else []), *args.overrides,
                *(["--resume", args.resume] if args.resume else []), *(["--allow-pickle"] if args.allow_pickle else [])]
        return launch_local(args.nproc, argv)
    from tuneforge.runs.train import train

    items = list(args.overrides)
    config = args.config
    if config is not None and "=" in config:  # no file, only overrides
        items.insert(0, config)
        config = None
    if args.resume:
        items.append(f"resume_from_checkpoint={args.resume}")
    if args.allow_pickle:
        items.append("allow_pickle=true")
    train(config, items)
    return 0


def _cmd_tune(args: argparse.Namespace) -> int:
    from tuneforge.tune import tune

    items, config = list(args.overrides), args.config
    if config is not None and "=" in config:
        items.insert(0, config)
        config = None
    tune(config, items, n_trials=args.n_trials, timeout=args.timeout, storage=args.storage,
         study_name=args.study_name, pruner=args.pruner, threads=args.threads, heartbeat=args.heartbeat,
         nproc=args.nproc)
    return 0


def _cmd_lr_find(args: argparse.Namespace) -> int:
    from tuneforge.runs.lr_find import find_lr

    items, config = list(args.overrides), args.config
    if config is not None and "=" in config:
        items.insert(0, config)
        config = None
    find_lr(config, items, args.output)
    return 0


def _read_inputs(path: str, column: str, pair_column: str | None,
                 keys: tuple[str, str] = ("data.text_column", "data.text_pair_column")
                 ) -> tuple[list[str], list[str] | None]:
    from tuneforge.data.checks import require_columns
    from tuneforge.data.readers import read_file

    table = read_file(path, "--input")
    if path.endswith(".txt"):
        if pair_column:
            raise UserError(f"--input {path}: this model reads text pairs ({column}, {pair_column}); "
                            "give a .csv/.jsonl with both columns")
        column = "text"
    require_columns(table, {keys[0]: column, keys[1]: pair_column})

    def values(name: str) -> list[str]:
        return ["" if v is None else str(v) for v in table.columns[name]]

    return values(column), values(pair_column) if pair_column else None


def _cmd_predict(args: argparse.Namespace) -> int:
    if not args.text and not args.input:
        raise UserError(f"{args.command}: give --{args.input_flag} \"...\" (repeatable) or --input FILE")
    from tuneforge.deploy.artifacts import resolve_artifact
    from tuneforge.tasks import get_spec

    run = resolve_artifact(args.run)
    data = run.config.data
    texts, pairs = list(args.text or []), list(args.text_pair or [])
    declared = get_spec(run.config.task).input_keys  # the task's input columns (QA: question, context)
    if declared:
        keys = (f"data.{declared[0]}", f"data.{declared[1]}")
        column, pair_column = getattr(data, declared[0]), getattr(data, declared[1])
    else:
        keys = ("data.text_column", "data.text_pair_column")
        column = data.prompt_column if data.data_format == "prompt_completion" else data.text_column
        pair_column = data.text_pair_column
    if pair_column and len(pairs) != len(texts):
        raise UserError(f"predict: this model reads text pairs ({column}, {pair_column}); give one --text-pair "
                        "(or --context) per --text")
    if args.input:
        more, more_pairs = _read_inputs(args.input, column, pair_column, keys)
        texts, pairs = texts + more, pairs + (more_pairs or [])
    from tuneforge.inference import LoadedModel

    if getattr(args, "require_task", None) and run.config.task != args.require_task:
        raise UserError(f"{args.command}: {run.path} is a {run.config.task} run; use `tuneforge predict`")
    results = LoadedModel(run).predict(texts, pairs or None, batch_size=args.batch_size)
    rows = [{"text": t, **_flat(r)} for t, r in zip(texts, results)]
    if args.output:
        _write_predictions(args.output, rows)
        print(f"wrote {len(rows)} predictions to {args.output}")
    else:
        for row in rows:
            print("\t".join(str(_cell(v)) for k, v in row.items() if k != "text") + "\t" + row["text"])
    return 0


def _flat(result: dict[str, Any]) -> dict[str, Any]:
    """The printable part of a prediction: label and probability; a multi-label set and its scores; a
    regression value; or the generated text."""
    if "label" in result:
        return {"label": result["label"], "probability": round(result["probability"], 4)}
    if "answer" in result:  # question answering: the span and its character offsets in the context
        return {"answer": result["answer"], "start": result["start"], "end": result["end"],
                "score": round(result["score"], 4)}
    if "labels" in result:  # multi-label: the predicted set (per-label thresholds) and every label's score
        return {"labels": result["labels"], "scores": {k: round(v, 4) for k, v in result["scores"].items()}}
    if "score" in result:  # regression
        return {"score": result["score"]}
    if "entities" in result:  # token classification: [{entity_group, word, start, end, score}, ...]
        return {"entities": result["entities"]}
    return {"generated_text": result["generated_text"]}


def _cell(value: Any) -> Any:
    """A CSV cell or a printed field: lists and mappings (multi-label labels and scores) as JSON."""
    import json

    return json.dumps(value, ensure_ascii=False) if isinstance(value, (list, dict)) else value


def _write_predictions(path: str, rows: list[dict[str, Any]]) -> None:
    import csv
    import json

    with open(path, "w", encoding="utf-8", newline="") as fh:
        if path.endswith((".jsonl", ".json")):
            fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        else:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["text"],
                                    delimiter="\t" if path.endswith(".tsv") else ",")
            writer.writeheader()
            writer.writerows({k: _cell(v) for k, v in r.items()} for r in rows)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from tuneforge.inference import evaluate_run
    from tuneforge.runs.report import print_metrics

    metrics = evaluate_run(args.run, args.data, args.name, args.split)
    print_metrics({"model": metrics})
    print(f"metrics and error analysis in {metrics['output_dir']}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from tuneforge.runs.outputs import finish_run
    from tuneforge.runs.record import resolve

    run = resolve(args.run, args.root)
    finish_run(run)
    print(f"wrote {run.path / 'report.html'} and {run.path / 'README.md'}")
    return 0


def _cmd_runs(args: argparse.Namespace) -> int:
    from tuneforge.runs import registry, report

    if args.action == "list":
        report.print_runs(registry.list_runs(args.root, args.task, args.status))
    elif args.action == "show":
        report.print_run(args.run, args.root)
    else:
        report.print_comparison(registry.compare_runs(args.runs, args.root))
    return 0


def _cmd_push(args: argparse.Namespace) -> int:
    from tuneforge.runs.hub import push_run
    from tuneforge.runs.record import resolve

    run = resolve(args.run, args.root, require=None)  # push_run refuses an unfinished run with its own message
    print(f"pushed to {push_run(run.path, args.hub_model_id, args.private or None)}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from tuneforge.deploy.export import export_run, render_report

    report = export_run(args.run, args.format, args.quantize, args.output, args.min_agreement, args.data,
                        args.max_examples, args.latency_examples, args.overwrite)
    print(render_report(report))
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from tuneforge.deploy.serve import ServeSettings, serve

    settings = ServeSettings(host=args.host, port=args.port, api_key=args.api_key, max_batch_size=args.max_batch_size,
                             max_wait_ms=args.max_wait_ms, max_body_bytes=args.max_body_bytes,
                             max_inputs=args.max_inputs, max_input_tokens=args.max_input_tokens,
                             truncate=args.truncate, max_new_tokens=args.max_new_tokens)
    serve(args.run, settings, log_level=args.log_level)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from tuneforge.demo import run_demo

    run_demo(args.output_dir, quick=args.quick, task=args.task)
    return 0


class _OneLineParser(argparse.ArgumentParser):
    """Usage errors follow the house rule too: one line, exit code 2 (`--help` still shows usage)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {self.prog}: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    from tuneforge.tasks import Verb, all_specs, task_names

    parser = _OneLineParser(prog="tuneforge", description="Fine-tune pretrained transformers.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_OneLineParser)
    commands: dict[str, Callable[[argparse.Namespace], int]] = {}

    p = sub.add_parser("train", help="train a model from a YAML config and key=value overrides",
                       description="Train: defaults < CONFIG (YAML) < key=value overrides. "
                                   "`tuneforge config TASK` lists every key with its default.")
    p.add_argument("config", nargs="?", help="YAML config file (optional when every key is given as overrides)")
    p.add_argument("overrides", nargs="*", help="key=value, e.g. learning_rate=3e-5 training.seed=1")
    p.add_argument("--resume", metavar="auto|PATH", help="continue from a checkpoint (needs output_dir)")
    p.add_argument("--allow-pickle", action="store_true",
                   help="also load pickle weights (.bin/.pt) with torch's weights_only loader; trusted sources only")
    p.add_argument("--nproc", type=int, metavar="N",
                   help="train in N processes on this machine (DDP; same as torchrun --nproc_per_node N -m "
                        "tuneforge train ...; docs/distributed.md)")
    commands["train"] = _cmd_train

    p = sub.add_parser("tune", help="hyperparameter search with Optuna: each trial an isolated training run",
                       description="Search the config's `search` section (or key=EXPR overrides: log(LOW, HIGH), "
                                   "float(LOW, HIGH[, step=S]), int(LOW, HIGH[, step=S]), choice(A, B, ...)) for the "
                                   "best validation metric_for_best_model. Running the same command again continues "
                                   "the study. See docs/tune.md.")
    p.add_argument("config", nargs="?", help="YAML config file with a search section")
    p.add_argument("overrides", nargs="*", help="key=value or key=EXPR, e.g. learning_rate='log(1e-5, 1e-3)'")
    p.add_argument("--n-trials", type=int, default=20, help="finished (complete or pruned) trials of the study in "
                                                            "all, over every run of the command (default: 20)")
    p.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    p.add_argument("--storage", help="Optuna storage URL shared by several workers, e.g. postgresql://u:p@host/db "
                                     "(default: sqlite in the study folder)")
    p.add_argument("--study-name", help="default: task, model and a hash of the config and search space")
    p.add_argument("--pruner", choices=("median", "hyperband", "none"), default="median",
                   help="stop unpromising trials early (default: median)")
    p.add_argument("--threads", type=int, help="CPU threads per trial (default: every core; give a share of them "
                                               "when several workers run on one machine)")
    p.add_argument("--heartbeat", type=int, default=60, help="seconds between a trial's heartbeats; a trial silent "
                                                             "for twice this is failed and retried (default: 60)")
    p.add_argument("--nproc", type=int, metavar="N", help="each trial trains in N processes on this machine (DDP, "
                                                          "as `tuneforge train --nproc N`)")
    commands["tune"] = _cmd_tune

    p = sub.add_parser("lr-find", help="learning-rate range test: writes lr_find.csv and lr_find.png, suggests a rate",
                       description="Ramp the learning rate exponentially from lr_find_min_lr to lr_find_max_lr over "
                                   "lr_find_num_steps steps of real training, stop when the loss diverges, restore "
                                   "the weights; suggest a tenth of the rate at the smoothed-loss minimum.")
    p.add_argument("config", nargs="?", help="YAML config file (the training config)")
    p.add_argument("overrides", nargs="*", help="key=value, e.g. lr_find_num_steps=200")
    p.add_argument("--output", default="lr_find", help="folder for lr_find.csv and lr_find.png (default: lr_find)")
    commands["lr-find"] = _cmd_lr_find

    p = sub.add_parser("config", help="print a complete, commented config for a task")
    p.add_argument("task", choices=task_names())
    commands["config"] = _cmd_config

    # `predict` for every task, then each task's own verb that declares a command (summarize, generate)
    predict = Verb("predict", "predict with a finished run (labels, or generated text)", batch_size=64)
    for verb, task in [(predict, None)] + [(s.verb, s.name) for s in all_specs() if s.verb and s.verb.help]:
        p = sub.add_parser(verb.name, help=verb.help)
        p.add_argument("run", help="run folder (or run id under ./runs)")
        p.add_argument(f"--{verb.input}", dest="text", action="append", help=f"a {verb.input} (repeatable)")
        if task is None:
            p.add_argument("--text-pair", "--context", dest="text_pair", action="append",
                           help="second text, for models trained on pairs (question answering: the context)")
        p.add_argument("--input", help="file of inputs: .txt (one per line), .csv/.tsv/.jsonl/.json/.parquet")
        p.add_argument("--output", help="write results to .csv/.tsv/.jsonl instead of printing")
        p.add_argument("--batch-size", type=int, default=verb.batch_size)
        p.set_defaults(require_task=task, input_flag=verb.input, **({} if task is None else {"text_pair": None}))
        commands[verb.name] = _cmd_predict

    p = sub.add_parser("evaluate", help="evaluate a finished run on labelled data")
    p.add_argument("run", help="run folder (or run id under ./runs)")
    p.add_argument("--data", help="labelled file with the training columns")
    p.add_argument("--split", choices=["test", "validation"],
                   help="without --data: the run's own test or validation file")
    p.add_argument("--name", help="name of the evaluation (default: the file or split name); results in eval/NAME/")
    commands["evaluate"] = _cmd_evaluate

    p = sub.add_parser("report", help="rebuild a run's report.html and model card (README.md)")
    p.add_argument("run", help="run folder (or run id under --root)")
    p.add_argument("--root", default="runs", help="folder holding the runs (default: runs)")
    commands["report"] = _cmd_report

    p = sub.add_parser("runs", help="list, show and compare runs")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION", parser_class=_OneLineParser)
    a = actions.add_parser("list", help="a table of every run (status, headline metric, lineage)")
    a.add_argument("--task", help="only runs of this task")
    a.add_argument("--status", choices=["running", "finished", "failed", "interrupted"], help="only this status")
    b = actions.add_parser("show", help="one run: record, metrics and config")
    b.add_argument("run", help="run folder or id")
    c = actions.add_parser("compare", help="config differences and metric deltas, side by side")
    c.add_argument("runs", nargs="+", metavar="RUN", help="two or more run folders or ids")
    for q in (a, b, c):
        q.add_argument("--root", default="runs", help="folder holding the runs (default: runs)")
    commands["runs"] = _cmd_runs

    p = sub.add_parser("push", help="upload a finished run (weights, tokenizer, configs, card) to the Hugging Face Hub")
    p.add_argument("run", help="run folder (or run id under --root)")
    p.add_argument("--hub-model-id", help="repository, e.g. me/my-model (default: hub_model_id, else the run id)")
    p.add_argument("--private", action="store_true", help="create the repository as private")
    p.add_argument("--root", default="runs", help="folder holding the runs (default: runs)")
    commands["push"] = _cmd_push

    from tuneforge.deploy.export import DEFAULT_MIN_AGREEMENT

    p = sub.add_parser("export", help="export a run (safetensors or ONNX, optionally int8), verified on its "
                                      "validation data",
                       description="Write a folder ready to ship and verify it against the run on the run's "
                                   "validation data: agreement, metric change, size and latency go to "
                                   "report.json. Fails (exit 2) when agreement is below --min-agreement.")
    p.add_argument("run", help="run folder (or run id under ./runs)")
    p.add_argument("--format", required=True, choices=["safetensors", "onnx"])
    p.add_argument("--quantize", choices=["int8"], help="dynamic int8 quantization of the linear layers (CPU)")
    p.add_argument("--output", help="export folder (default: RUN/export/FORMAT[-int8])")
    p.add_argument("--min-agreement", type=float, default=DEFAULT_MIN_AGREEMENT,
                   help=f"fail below this agreement with the original model (default {DEFAULT_MIN_AGREEMENT})")
    p.add_argument("--data", help="labelled file to verify on instead of the run's validation data")
    p.add_argument("--max-examples", type=int, help="verify on at most this many validation examples")
    p.add_argument("--latency-examples", type=int, default=50, help="batch-1 calls timed per model (default 50)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing export folder")
    commands["export"] = _cmd_export

    p = sub.add_parser("serve", help="serve a run or an export over HTTP (FastAPI on uvicorn)",
                       description="HTTP inference server: GET /health, GET /v1/model, GET /v1/stats, POST "
                                   "/v1/classify | /v1/summarize | /v1/generate (by task). Binds to 127.0.0.1 "
                                   "unless --host says otherwise.")
    p.add_argument("run", help="run folder, run id under ./runs, or export folder")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--api-key", help="require this key on every route but /health (default: env TUNEFORGE_API_KEY)")
    p.add_argument("--max-batch-size", type=int, default=16, help="inputs per model call (default 16)")
    p.add_argument("--max-wait-ms", type=float, default=5.0,
                   help="how long a request waits for others to batch with (default 5)")
    p.add_argument("--max-body-bytes", type=int, default=1 << 20, help="larger request bodies get 413 (default 1 MiB)")
    p.add_argument("--max-inputs", type=int, default=64, help="inputs per request, more get 422 (default 64)")
    p.add_argument("--max-input-tokens", type=int, help="tokens per input, more get 422 (default: the model's limit)")
    p.add_argument("--truncate", action="store_true", help="truncate inputs over --max-input-tokens instead of 422")
    p.add_argument("--max-new-tokens", type=int, default=256, help="cap on max_new_tokens per request (default 256)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    commands["serve"] = _cmd_serve

    p = sub.add_parser("demo", help="fine-tune all-MiniLM-L6-v2 on a generated support-ticket dataset (offline)",
                       description="Offline demo on generated support tickets. classification: fine-tune "
                                   "all-MiniLM-L6-v2 to tell the intent; seq2seq: warm-start a bert2bert "
                                   "encoder-decoder from it and fine-tune it to summarize each ticket in one "
                                   "sentence (not T5: no pretrained seq2seq model is available offline).")
    from tuneforge.demo.runner import TASKS as DEMO_TASKS

    p.add_argument("--task", choices=DEMO_TASKS, default=DEMO_TASKS[0],
                   help=f"which demo to run (default: {DEMO_TASKS[0]})")
    p.add_argument("--output-dir", default=None, help="run folder (default: runs/<id>)")
    p.add_argument("--quick", action="store_true", help="one short epoch on fewer rows (smoke test)")
    commands["demo"] = _cmd_demo
    parser.set_defaults(_commands=commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from tuneforge.engine.distributed import env_rank

    rank = env_rank()  # under a launcher the main process (rank 0) prints; the others only what is theirs alone
    try:
        return args._commands[args.command](args)
    except UserError as err:
        if not err.shared:
            print(f"error: {f'[rank {rank}] ' if rank else ''}{err}", file=sys.stderr)
        return err.exit_code
    except Interrupted as err:
        if not rank:
            print(f"interrupted: {err}", file=sys.stderr)
        return err.exit_code
    except PeerLost as err:  # printed by one process of the run (engine/watchdog.py)
        if not err.shared:
            print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        if not rank:
            print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
