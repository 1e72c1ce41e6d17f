"""CPU benchmark: greedy decoding speed of a causal-LM ONNX export with and without the KV cache, and PyTorch's.

    OMP_NUM_THREADS=1 python bench/export_kv.py                 # a random-init GPT-2 (6 layers, width 384, 8k vocab)
    OMP_NUM_THREADS=1 python bench/export_kv.py --run runs/<id>   # the model of an existing causal-LM run
    python bench/export_kv.py --new-tokens 16 --repeats 1         # smoke test of the script itself

Nothing is trained. The same model is exported twice with tuneforge's own exporter (`OnnxCausalLM.export`):
  old export   kv_cache=False: (input_ids, attention_mask, position_ids) -> logits; every new token re-runs the
               whole sequence (the only graph before issue 21)
  new export   the KV-cache graph: past_key_values.* in, present.* out; the prompt once, then one token a step
and both are decoded by `OnnxCausalLM.generate` (ONNX Runtime, CPU), next to PyTorch's `model.generate` of the same
model (greedy, its own DynamicCache). Each decodes exactly `--new-tokens` tokens from a fixed 16-token prompt (EOS
is switched off, so no row stops early), at batch 1 and batch 4 (the prompt four times); tokens/s = batch x new
tokens / seconds, the median of `--repeats` timed calls after one warm-up call, variants interleaved per round.
PyTorch and ONNX Runtime get the same thread count (OMP_NUM_THREADS, default 1). Run it alone on the machine.
Target (issue 21): the new export at least 3x the old export's tokens/s at 128 new tokens.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PROMPT_TOKENS = 16


def build_model(vocab: int, layers: int, width: int, heads: int, positions: int):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=vocab, n_positions=positions, n_embd=width, n_layer=layers, n_head=heads,
                        bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(config)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", help="a finished causal-LM run (default: build a random-init GPT-2)")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--batches", default="1,4", help="comma-separated batch sizes")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per variant and batch (median)")
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--width", type=int, default=384)
    parser.add_argument("--heads", type=int, default=6)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--out", help="where the two exports go (default: a temporary folder)")
    args = parser.parse_args()

    import onnxruntime as ort
    import torch

    import tuneforge.deploy.onnx as onnx_mod
    from tuneforge.deploy.onnx import OnnxCausalLM

    threads = int(os.environ.get("OMP_NUM_THREADS", "1"))
    torch.set_num_threads(threads)
    session = onnx_mod._session

    def same_threads(path: Path):  # tuneforge's session options, at the thread count PyTorch gets
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    onnx_mod._session = same_threads
    if args.run:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(args.run)
        what = f"the model of run {args.run}"
    else:
        positions = PROMPT_TOKENS + args.new_tokens + 8
        model = build_model(args.vocab, args.layers, args.width, args.heads, positions)
        what = (f"random-init GPT-2: {args.layers} layers, width {args.width}, {args.heads} heads, vocab {args.vocab}, "
                f"{positions} positions")
    model = model.float().eval()
    limit = getattr(model.config, "n_positions", None) or getattr(model.config, "max_position_embeddings", None)
    if limit and limit < PROMPT_TOKENS + args.new_tokens:
        sys.exit(f"--run: the model has {limit} positions, fewer than the {PROMPT_TOKENS}-token prompt + "
                 f"{args.new_tokens} new tokens; pass a smaller --new-tokens")
    params = sum(p.numel() for p in model.parameters()) / 1e6
    # EOS off: every row decodes exactly --new-tokens tokens, in PyTorch and ONNX alike
    model.config.eos_token_id = None
    gen = copy.deepcopy(model.generation_config)
    gen.update(max_new_tokens=args.new_tokens, min_new_tokens=None, do_sample=False, num_beams=1, eos_token_id=None,
               pad_token_id=0, bos_token_id=None)
    model.generation_config = gen

    work = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="tuneforge-bench-kv-"))
    g = torch.Generator().manual_seed(1)
    sample = torch.randint(1, model.config.vocab_size, (2, 12), generator=g)
    sample_mask = torch.ones_like(sample)
    sample_mask[0, 8:] = 0
    exports = {}
    for name, kv in (("old export", False), ("new export", True)):
        folder = work / name.replace(" ", "-")
        folder.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        OnnxCausalLM.export(model, sample, sample_mask, folder, False, kv_cache=kv)
        exports[name] = OnnxCausalLM(folder, model.config, gen)
        print(f"{name}: exported in {time.perf_counter() - start:.1f} s -> {folder}", flush=True)
    onnx_mod._session = session

    def pytorch(ids, mask):
        with torch.inference_mode():
            return model.generate(input_ids=ids, attention_mask=mask, generation_config=gen)

    def onnx(name: str):
        return lambda ids, mask: exports[name].generate(ids, mask, generation_config=gen)

    variants = {"pytorch generate": pytorch, "old export": onnx("old export"), "new export": onnx("new export")}
    prompt = torch.randint(1, model.config.vocab_size, (1, PROMPT_TOKENS), generator=torch.Generator().manual_seed(2))
    batches = [int(b) for b in args.batches.split(",")]
    seconds: dict[tuple[str, int], list[float]] = {}
    identical: dict[int, bool] = {}
    for batch in batches:
        ids = prompt.repeat(batch, 1)
        mask = torch.ones_like(ids)
        outputs = {}
        for name, fn in variants.items():  # warm-up, and the tokens each produces
            outputs[name] = fn(ids, mask)
            assert outputs[name].shape == (batch, PROMPT_TOKENS + args.new_tokens), outputs[name].shape
        identical[batch] = all(bool(torch.equal(o, outputs["pytorch generate"])) for o in outputs.values())
        for _ in range(args.repeats):
            for name, fn in variants.items():
                start = time.perf_counter()
                fn(ids, mask)
                seconds.setdefault((name, batch), []).append(time.perf_counter() - start)
        print(f"batch {batch}: done", flush=True)

    print(f"\nmodel: {what} ({params:.1f}M parameters), fp32; prompt {PROMPT_TOKENS} tokens, {args.new_tokens} new "
          f"tokens (EOS off), greedy; {threads} thread(s) for PyTorch and ONNX Runtime; torch {torch.__version__}, "
          f"onnxruntime {ort.__version__}; median of {args.repeats} timed calls")
    print("\n| decoding | batch | seconds | tokens/s | vs old export | tokens identical to PyTorch |")
    print("|---|---|---|---|---|---|")
    ratios = {}
    for batch in batches:
        old = statistics.median(seconds[("old export", batch)])
        for name in variants:
            s = statistics.median(seconds[(name, batch)])
            ratios[(name, batch)] = old / s
            print(f"| {name} | {batch} | {s:.3f} | {batch * args.new_tokens / s:.1f} | {old / s:.2f}x | "
                  f"{'yes' if identical[batch] else 'NO'} |")
    met = all(ratios[("new export", b)] >= 3.0 for b in batches)
    print(f"\ntarget (new export >= 3x the old export at {args.new_tokens} new tokens): {'met' if met else 'NOT met'}")
    command = " ".join(["OMP_NUM_THREADS=" + str(threads), "python", "bench/export_kv.py", *sys.argv[1:]])
    print(f"command: {command}")
    return 0 if all(identical.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
