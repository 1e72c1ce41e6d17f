"""GPU benchmark: tuneforge vs plain transformers.Trainer recipes on one GPU, same model, data and device.

    python bench/gpu_check.py                 # both cases, 3 recipes each: about 5 minutes on one H100
    python bench/gpu_check.py --recipes tutorial trainer+ tuneforge tuneforge-compile  # + compiled: ~7 minutes
    python bench/gpu_check.py --smoke         # tiny models, a few steps: checks the script itself (CPU is fine)

Cases (random-init models: throughput does not depend on the weights; no hub access is needed):
  gpt2    GPT-2 124M causal LM on generated documents of varied length (median ~300 tokens, long tail)
          tutorial   Trainer, pad every document to 512, batch 4, fp32 (the guide's recipe)
          trainer+   Trainer, dynamic padding, group_by_length, bf16, fused AdamW, batch 32
          tuneforge  defaults, eager (what torch_compile=auto gives runs under 1000 steps, as these 75 are):
                     packing into 1024-token blocks, bf16, fused AdamW, batch 16
          tuneforge-compile   torch_compile=true, its automatic scope (what auto gives runs of 1000+ steps):
                     the whole model with its loss here (one shape), each repeated layer for bert (varied lengths)
          tuneforge-model, tuneforge-blocks   torch_compile=true with the scope forced, to compare the two
          tuneforge-profile   defaults, 2 x warm-up steps under torch.profiler: the top kernels go to stderr
          tuneforge-mem       defaults at the tutorial's tokens per step (batch 2 x 1024 = its 4 x 512): peak memory
                     (evaluation at the same batch, so its logits do not set the peak)
          tuneforge-mem-compile   the same, compiled (what auto gives runs of 1000+ steps)
  bert    BERT-base classification on generated reviews (~70 tokens)
          tutorial   Trainer, pad to 512, batch 16, fp32
          trainer+   Trainer, dynamic padding, group_by_length, bf16, fused AdamW, batch 32
          tuneforge  defaults, batch 32
          tuneforge-compile, tuneforge-model, tuneforge-blocks, tuneforge-profile   as for gpt2
          tuneforge-mem       defaults at the tutorial's 16 rows per step: peak memory
          tuneforge-mem-compile   the same, compiled
Each recipe runs a fixed number of optimizer steps after warm-up (compile happens in warm-up) and reports
real (non-pad) tokens/s, samples/s, MFU (GPU only), peak GPU memory, the warm-up time (compile included) and
the eval loss after the same number of steps: a sanity check that training works, not a quality comparison
(the recipes see different numbers of tokens per step; docs/BENCHMARKS.md compares quality at equal epochs
on CPU). MFU = (6N + 12 L d T) x real tokens/s / 989 TFLOP/s (dense bf16 peak of an H100/H200 SXM).

Each recipe runs in its own process, so peak memory and compile caches do not leak between recipes.
The tokenizers are trained here on the generated text (byte-level BPE / WordPiece), sized like the real ones.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
PEAK_FLOPS = 989e12
_VOCABULARY = ("the a of to and in is was for on that with as by at from this be are it an or have not which one "
         "their were all we when there can more if out so up said what its about into than them only other "
         "new some could time these two may then first any like now my over such our man me even most made "
         "after also did many before must through back years where much your way well down should because "
         "each just those people how too little state good very make world still own see men work long get "
         "here between both life being under never day same another know while last might us great old year "
         "off come since against go came right used take three weather river market garden train school")
WORDS = _VOCABULARY.split()


def documents(n: int, seed: int, median: int) -> list[str]:
    """n documents with a log-normal length spread around `median` words (a realistic long tail)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        length = max(8, min(4 * median, int(rng.lognormvariate(0, 0.6) * median)))
        out.append(" ".join(rng.choice(WORDS) for _ in range(length)) + ".")
    return out


def build_case(case: str, folder: Path, smoke: bool) -> dict:
    """Tokenizer + random-init model saved to `folder`; returns what the recipes need."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    corpus = documents(200 if smoke else 2000, 0, 40 if smoke else 300)
    if case == "gpt2":
        from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=2000, special_tokens=["<|endoftext|>"],
                                                            initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
        PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>",
                                model_max_length=1024).save_pretrained(folder)
        # smoke: as many positions as the block (as GPT-2's 1024), so a position past the table fails here too
        config = GPT2Config(n_embd=64, n_layer=2, n_head=2, n_positions=128) if smoke else GPT2Config()
        GPT2LMHeadModel(config).save_pretrained(folder)  # 50257-row embedding as in GPT-2: realistic FLOPs
        layers, width, seq = config.n_layer, config.n_embd, (128 if smoke else 1024)
    else:
        from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.train_from_iterator(corpus, trainers.WordPieceTrainer(
            vocab_size=2000, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]))
        cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
        tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[
            ("[CLS]", cls), ("[SEP]", sep)])
        PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                sep_token="[SEP]", mask_token="[MASK]", model_max_length=512).save_pretrained(folder)
        config = BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128) \
            if smoke else BertConfig()
        BertForSequenceClassification(config).save_pretrained(folder)
        layers, width, seq = config.num_hidden_layers, config.hidden_size, (64 if smoke else 128)
    return {"layers": layers, "width": width, "seq": seq}


def write_data(case: str, folder: Path, smoke: bool) -> tuple[Path, Path]:
    n_train, n_eval = (64, 16) if smoke else ((6000, 300) if case == "gpt2" else (20000, 1000))
    median = 40 if smoke else (300 if case == "gpt2" else 60)
    if case == "gpt2":
        train, val = folder / "train.jsonl", folder / "val.jsonl"
        for path, docs in ((train, documents(n_train, 1, median)), (val, documents(n_eval, 2, median))):
            path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
        return train, val
    train, val = folder / "train.jsonl", folder / "val.jsonl"
    for path, docs in ((train, documents(n_train, 1, median)), (val, documents(n_eval, 2, median))):
        path.write_text("".join(json.dumps({"text": d, "label": "pos" if (len(d) // 7) % 2 else "neg"}) + "\n"
                                for d in docs))
    return train, val


# ---- one recipe per process ----------------------------------------------------------------------------

def run_trainer(case: str, recipe: str, model: Path, train: Path, val: Path, steps: int, warmup: int,
                smoke: bool) -> dict:
    import torch
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorForLanguageModeling,
        DataCollatorWithPadding,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    tok = AutoTokenizer.from_pretrained(model)
    tutorial = recipe == "tutorial"
    length = 512 if not smoke else 64
    padding = "max_length" if tutorial else False
    # plain lists of features (Trainer takes any indexable dataset): tokenizing is outside the timed window, and
    # the GPU machine needs no `datasets` wheel (and its pyarrow/fsspec pins)
    rows = {name: [json.loads(x) for x in path.read_text().splitlines()] for name, path in
            (("train", train), ("validation", val))}
    if case == "gpt2":
        tok.pad_token = tok.eos_token

        def features(part: list[dict]) -> list[dict]:
            enc = tok([r["text"] + tok.eos_token for r in part], truncation=True, max_length=length, padding=padding)
            return [{k: enc[k][i] for k in ("input_ids", "attention_mask")} for i in range(len(part))]

        net = AutoModelForCausalLM.from_pretrained(model)
        collator = DataCollatorForLanguageModeling(tok, mlm=False)
        batch = 4 if tutorial else 32
    else:
        label = {"neg": 0, "pos": 1}

        def features(part: list[dict]) -> list[dict]:
            enc = tok([r["text"] for r in part], truncation=True, max_length=length, padding=padding)
            return [{**{k: enc[k][i] for k in enc}, "labels": label[r["label"]]} for i, r in enumerate(part)]

        net = AutoModelForSequenceClassification.from_pretrained(model, num_labels=2)
        collator = DataCollatorWithPadding(tok, return_tensors="pt") if not tutorial else None
        batch = 16 if tutorial else 32
    enc = {name: features(part) for name, part in rows.items()}
    if smoke:
        batch = 4
    real = {"tokens": 0, "samples": 0}

    class Clock(TrainerCallback):
        start = end = None
        began = time.perf_counter()

        def on_train_begin(self, args, state, control, **kw):
            Clock.began = time.perf_counter()

        def on_step_begin(self, args, state, control, **kw):
            if state.global_step == warmup:
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                Clock.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            Clock.end = time.perf_counter()

    def count(module, args, kwargs):  # real tokens = attention-mask ones, counted after warm-up
        if module.training and Clock.start is not None:
            mask = kwargs.get("attention_mask")
            real["tokens"] += int(mask.sum()) if mask is not None else kwargs["input_ids"].numel()
            real["samples"] += kwargs["input_ids"].shape[0]

    # a hook, not a wrapped forward: Trainer inspects forward's signature to pick dataset columns
    net.register_forward_pre_hook(count, with_kwargs=True)
    cuda = torch.cuda.is_available()
    args = TrainingArguments(
        output_dir=str(train.parent / f"trainer-{recipe}"), per_device_train_batch_size=batch,
        per_device_eval_batch_size=batch, max_steps=warmup + steps, learning_rate=5e-5, report_to="none",
        save_strategy="no", logging_steps=10**6, use_cpu=not cuda, dataloader_num_workers=2 if cuda else 0,
        bf16=cuda and not tutorial, optim="adamw_torch" if tutorial else "adamw_torch_fused",
        train_sampling_strategy="random" if tutorial else "group_by_length")
    trainer = Trainer(model=net, args=args, train_dataset=enc["train"], eval_dataset=enc["validation"],
                      data_collator=collator, callbacks=[Clock()])
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    seconds = Clock.end - Clock.start
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    eval_loss = trainer.evaluate()["eval_loss"]
    return {"tokens_per_s": real["tokens"] / seconds, "samples_per_s": real["samples"] / seconds,
            "peak_gib": peak, "eval_loss": eval_loss, "warmup_s": Clock.start - Clock.began}


def run_tuneforge(case: str, model: Path, train: Path, val: Path, steps: int, warmup: int, smoke: bool,
                  scope: str | None, batch: int | None = None, eval_batch: int | None = None) -> dict:
    """tuneforge's defaults with torch_compile off (scope None), on ("auto": its own choice of scope) or on with
    the scope forced ("model", "blocks"); `batch` overrides the batch size (16 blocks for gpt2, 32 rows for
    bert), `eval_batch` the evaluation batch."""
    import torch

    import tuneforge
    from tuneforge.engine import compiling

    compile_ = scope is not None
    if scope in ("model", "blocks"):
        compiling.SCOPE = scope
    cuda = torch.cuda.is_available()
    batch = 4 if smoke else batch or (16 if case == "gpt2" else 32)
    out = Path(tempfile.mkdtemp(dir=train.parent, prefix=f"tuneforge-{scope or 'eager'}-{batch}-")) / "run"
    common = [f"per_device_eval_batch_size={eval_batch}"] if eval_batch else []
    common += [f"model_name_or_path={model}", f"train_file={train}", f"validation_file={val}", f"output_dir={out}",
              f"preprocessing_cache_dir={train.parent / 'cache'}", f"max_steps={warmup + steps}",
              f"logging_steps={warmup}", "eval_strategy=steps", f"eval_steps={warmup + steps}", "save_strategy=no",
              "load_best_model_at_end=false",
              "report_to=none", "learning_rate=5e-5", "warmup_steps=0", f"torch_compile={str(compile_).lower()}"]
    if case == "gpt2":
        common += ["task=causal_lm", f"block_size={128 if smoke else 1024}",
                   f"per_device_train_batch_size={batch}"]
    else:
        common += ["task=classification", f"per_device_train_batch_size={batch}",
                   f"max_length={64 if smoke else 512}"]
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    run = tuneforge.train(None, common)
    records = [json.loads(x) for x in (run.path / "metrics.jsonl").read_text().splitlines()]
    timed = [r for r in records if "tokens_per_second" in r and r["step"] > warmup]
    first = next(r for r in records if "samples_per_second" in r and r["step"] == warmup)
    seconds = [warmup * batch / r["samples_per_second"] for r in timed]  # each record covers `warmup` steps
    samples = warmup * batch * len(timed)
    tokens = sum(r["tokens_per_second"] * s for r, s in zip(timed, seconds))
    seconds = sum(seconds)
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    eval_loss = run.metrics["eval"]["loss"]  # evaluated once after the last step, outside the timed window
    return {"tokens_per_s": tokens / seconds, "samples_per_s": samples / seconds, "peak_gib": peak,
            "eval_loss": eval_loss, "warmup_s": warmup * batch / first["samples_per_second"]}


def profile_tuneforge(case: str, model: Path, train: Path, val: Path, warmup: int, smoke: bool) -> dict:
    """tuneforge defaults for 2 x `warmup` steps under torch.profiler; prints the costliest kernels and ops
    (device time, and host time: where small GPU batches are host-bound) to stderr. Throughput includes the
    profiler's overhead."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    cuda = torch.cuda.is_available()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        result = run_tuneforge(case, model, train, val, warmup, warmup, smoke, None)
    events = prof.key_averages()
    for key in (["cuda_time_total"] if cuda else []) + ["self_cpu_time_total"]:
        print(f"--- {case} tuneforge, {2 * warmup} steps + model load + eval, sorted by {key}", file=sys.stderr)
        print(events.table(sort_by=key, row_limit=30, max_name_column_width=60), file=sys.stderr)
    return result


def child(args: argparse.Namespace) -> int:
    folder = Path(args.work)
    meta = json.loads((folder / "meta.json").read_text())
    train, val = folder / "train.jsonl", folder / "val.jsonl"
    if args.recipe == "tuneforge-profile":
        result = profile_tuneforge(args.case, folder / "model", train, val, args.warmup, args.smoke)
    elif args.recipe.startswith("tuneforge"):
        scope = {"tuneforge-compile": "auto", "tuneforge-mem-compile": "auto", "tuneforge-model": "model",
                 "tuneforge-blocks": "blocks"}.get(args.recipe)
        # tuneforge-mem(-compile): the tutorial's tokens per step (gpt2: 2 x 1024 = its 4 x 512) or rows per step
        # (bert: 16), evaluating at that batch too (peak memory is read after the final evaluation)
        batch = (2 if args.case == "gpt2" else 16) if args.recipe.startswith("tuneforge-mem") else None
        result = run_tuneforge(args.case, folder / "model", train, val, args.steps, args.warmup, args.smoke, scope,
                               batch, eval_batch=batch)
    else:
        result = run_trainer(args.case, args.recipe, folder / "model", train, val, args.steps, args.warmup,
                             args.smoke)
    n = meta["params"]
    flops_per_token = 6 * n + 12 * meta["layers"] * meta["width"] * meta["seq"]
    result["mfu"] = flops_per_token * result["tokens_per_s"] / PEAK_FLOPS
    print("RESULT " + json.dumps(result))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny models and few steps (checks the script)")
    parser.add_argument("--cases", nargs="*", default=["gpt2", "bert"])
    parser.add_argument("--recipes", nargs="*", default=["tutorial", "trainer+", "tuneforge"],
                        choices=["tutorial", "trainer+", "tuneforge", "tuneforge-compile", "tuneforge-model",
                                 "tuneforge-blocks", "tuneforge-profile", "tuneforge-mem", "tuneforge-mem-compile"],
                        help="tuneforge-compile (torch_compile=true) adds 10-30 s of compilation per case; "
                             "tuneforge-model on bert took over 90 s")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="stop starting recipes after this many seconds (each child is also cut off there)")
    parser.add_argument("--child-timeout-s", type=float, default=300, help="cut off one recipe after this long")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--stderr-log", help="append each recipe's stderr (its last 20000 characters) to this file")
    parser.add_argument("--steps", type=int, default=None, help="timed optimizer steps after warm-up")
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--recipe", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.steps = args.steps or (4 if args.smoke else 60)  # a multiple of warmup: tuneforge logs every warmup steps
    args.warmup = args.warmup or (2 if args.smoke else 15)
    if args.child:
        return child(args)
    import torch

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    began, rows = time.perf_counter(), []
    for case in args.cases:
        work = Path(tempfile.mkdtemp(prefix=f"tuneforge-gpu-{case}-"))
        meta = build_case(case, work / "model", args.smoke)
        meta["params"] = _count_params(work / "model")
        (work / "meta.json").write_text(json.dumps(meta))
        write_data(case, work, args.smoke)
        for recipe in args.recipes:
            left = args.budget_s - (time.perf_counter() - began) if args.budget_s else None
            if left is not None and left < 20:
                print(f"{case}/{recipe}: skipped, the --budget-s is spent", flush=True)
                rows.append((case, recipe, None, 0.0))
                continue
            cmd = [sys.executable, __file__, "--child", "--case", case, "--recipe", recipe, "--work", str(work),
                   "--steps", str(args.steps), "--warmup", str(args.warmup)] + (["--smoke"] if args.smoke else [])
            started = time.perf_counter()
            try:
                compiles = recipe.endswith(("compile", "model", "blocks"))
                env = {**os.environ, **({"TORCH_LOGS": "recompiles"} if compiles else {})}
                proc = subprocess.run(cmd, capture_output=True, text=True, env=env,
                                      timeout=min(left, args.child_timeout_s) if left else args.child_timeout_s)
                out, err, rc = proc.stdout, proc.stderr, proc.returncode
            except subprocess.TimeoutExpired as e:
                out, err, rc = _text(e.stdout), _text(e.stderr), "timeout"
            if args.stderr_log:
                with open(args.stderr_log, "a") as fh:
                    fh.write(f"===== {case}/{recipe} (rc {rc}) =====\n{out[-5000:]}\n{err[-20000:]}\n")
            line = next((x for x in out.splitlines() if x.startswith("RESULT ")), None)
            result = json.loads(line[7:]) if line else None
            rows.append((case, recipe, result, time.perf_counter() - started))
            if result is None:
                print(f"{case}/{recipe} failed (rc {rc}):\n{err[-3000:]}", file=sys.stderr, flush=True)
            else:
                print(f"{case}/{recipe} done in {rows[-1][3]:.0f} s: {json.dumps(result)}", flush=True)
    print(f"\n{device}, torch {torch.__version__}, {args.steps} timed steps after {args.warmup} warm-up steps")
    print(f"{'case':<6}{'recipe':<17}{'tokens/s':>11}{'samples/s':>11}{'MFU':>7}{'peak GiB':>10}{'eval loss':>11}"
          f"{'vs tutorial':>13}{'warm-up s':>11}{'wall s':>8}")
    tutorial = {c: r["tokens_per_s"] for c, name, r, _ in rows if name == "tutorial" and r}
    for case, recipe, r, wall in rows:
        if r is None:
            print(f"{case:<6}{recipe:<17}{'failed':>11}")
            continue
        ratio = f"{r['tokens_per_s'] / tutorial[case]:.1f}x" if case in tutorial else "-"
        peak = f"{r['peak_gib']:.1f}" if r["peak_gib"] is not None else "-"
        print(f"{case:<6}{recipe:<17}{r['tokens_per_s']:>11.0f}{r['samples_per_s']:>11.1f}{100 * r['mfu']:>6.1f}%"
              f"{peak:>10}{r['eval_loss']:>11.3f}{ratio:>13}{r['warmup_s']:>11.1f}{wall:>8.0f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": device, "torch": torch.__version__, "steps": args.steps,
                                               "warmup": args.warmup, "rows": [
            {"case": c, "recipe": n, "result": r, "wall_s": w} for c, n, r, w in rows]}, indent=1))
    return 0 if all(r for _, _, r, _ in rows) else 1


def _text(value: bytes | str | None) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else (value or "")


def _count_params(folder: Path) -> int:
    from safetensors import safe_open

    total = 0
    with safe_open(str(folder / "model.safetensors"), "pt") as fh:
        for key in fh.keys():  # noqa: SIM118 - safe_open is not a mapping
            shape = fh.get_slice(key).get_shape()
            n = 1
            for s in shape:
                n *= s
            total += n
    return total


if __name__ == "__main__":
    sys.exit(main())
