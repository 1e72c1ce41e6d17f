"""Shared fixtures: a tiny BERT built offline (random init from a config, WordPiece tokenizer trained here)
and a learnable toy classification set. Trained runs are shared per session to keep the suite fast."""

from __future__ import annotations

import contextlib
import csv
import os
import random
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

POSITIVE = ["great", "excellent", "wonderful", "superb", "lovely", "fantastic"]
NEGATIVE = ["awful", "terrible", "horrible", "dreadful", "lousy", "abysmal"]
NEUTRAL = ["the", "movie", "plot", "actor", "scene", "film", "story", "ending", "was", "really", "quite", "a"]


def toy_rows(n: int, seed: int) -> list[tuple[str, str]]:
    """Sentiment decided by one polar word hidden among neutral filler of varying length (uneven lengths)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.choice(["pos", "neg"])
        words = [rng.choice(NEUTRAL) for _ in range(rng.randint(2, 14))]
        words.insert(rng.randint(0, len(words)), rng.choice(POSITIVE if label == "pos" else NEGATIVE))
        rows.append((" ".join(words), label))
    return rows


def write_csv(path: Path, rows: list[tuple[str, str]], header: tuple[str, str] = ("text", "label")) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def cpu_accelerator():
    """An Accelerator on the CPU whatever earlier tests left: accelerate keeps one device per process and
    refuses cpu=True once a GPU state exists (as on a GPU machine)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    return Accelerator(cpu=True)


def one_line_error(capsys, argv: list[str]) -> str:
    """Run the CLI in-process; assert exit code 2 and exactly one `error:` line on stderr, no traceback."""
    from tuneforge.cli import main

    rc = main(argv)
    captured = capsys.readouterr()
    assert rc == 2, captured
    assert "Traceback" not in captured.err
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """A 2-layer, hidden-32 BERT with a WordPiece tokenizer trained on the toy vocabulary."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny_bert")
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    corpus = [t for t, _ in toy_rows(400, 0)] + ["a b c d e f g h i j k l m n o p q r s t u v w x y z"]
    tok.train_from_iterator(corpus, trainers.WordPieceTrainer(
        vocab_size=200, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", model_max_length=64)
    fast.save_pretrained(folder)
    config = BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, type_vocab_size=2)
    torch_seed()  # the same weights whichever test builds the fixture first
    BertForSequenceClassification(config).save_pretrained(folder)
    return folder


# the multi-process tests (test_distributed, test_fsdp, test_deepspeed): 97 = 6 x 16 + 1 training rows, so the last
# global batch has one row and one process gets none; 41 validation rows, which no process count divides evenly
MP_TRAIN_ROWS, MP_VAL_ROWS = 97, 41


@pytest.fixture(scope="session")
def mp_data(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("mp_data")
    return {"train": write_csv(folder / "train.csv", toy_rows(MP_TRAIN_ROWS, 1)),
            "validation": write_csv(folder / "validation.csv", toy_rows(MP_VAL_ROWS, 2))}


@pytest.fixture(scope="session")
def no_dropout_bert(tiny_bert, tmp_path_factory) -> Path:
    """tiny_bert with dropout 0: processes draw their dropout masks from their own streams, so only a model
    without dropout can end with the weights of one process."""
    return without_dropout(tiny_bert, tmp_path_factory.mktemp("bert_no_dropout") / "model")


@pytest.fixture(scope="session")
def small_bert(tiny_bert, tmp_path_factory) -> Path:
    """tiny_bert's tokenizer on a BERT of hidden 64 / 4 heads (2 layers), for the toy runs whose score a test
    bounds from below. At hidden 32 / 2 heads those runs either solved the toy or stalled, by seed and by the
    CPU's float sums (QA: 2 of 6 seeds solved it; multi-label: micro-F1 0.65-0.87); at 64 / 4 every seed tried
    (0-5) reached QA F1 >= 0.98 and multi-label micro-F1 >= 0.81."""
    import shutil

    from transformers import BertConfig, BertForSequenceClassification

    folder = tmp_path_factory.mktemp("small_bert")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (tiny_bert / name).exists():
            shutil.copy(tiny_bert / name, folder)
    config = BertConfig.from_pretrained(tiny_bert)
    config.hidden_size, config.num_attention_heads, config.intermediate_size = 64, 4, 128
    torch_seed()
    BertForSequenceClassification(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def toy_data(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("toy_data")
    return {"train": write_csv(folder / "train.csv", toy_rows(320, 1)),
            "validation": write_csv(folder / "validation.csv", toy_rows(80, 2)),
            "test": write_csv(folder / "test.csv", toy_rows(80, 3))}


def base_overrides(model: Path, data: dict[str, Path], out: Path, **extra: object) -> list[str]:
    items = {"task": "classification", "model_name_or_path": str(model), "train_file": str(data["train"]),
             "validation_file": str(data["validation"]), "output_dir": str(out), "learning_rate": 3e-3,
             "num_train_epochs": 4, "per_device_train_batch_size": 16, "report_to": "none", "seed": 0,
             "preprocessing_cache_dir": str(out.parent / "cache")}
    items.update(extra)
    return [f"{k}={v}" for k, v in items.items()]


@pytest.fixture(scope="session")
def trained_run(tiny_bert, toy_data, tmp_path_factory):
    """One trained classification run shared by the tests that only read it."""
    import tuneforge

    out = tmp_path_factory.mktemp("runs") / "toy"
    return tuneforge.train(None, base_overrides(tiny_bert, toy_data, out, test_file=str(toy_data["test"])))


WORDS = ["red", "blue", "green", "cat", "dog", "sun", "moon", "tree", "fish", "bird", "rock", "star"]


def copy_rows(n: int, seed: int) -> list[dict[str, str]]:
    """A toy text-to-text task a tiny model can learn: the target is the source's words, reversed."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(2, 5))]
        rows.append({"text": " ".join(words), "summary": " ".join(reversed(words))})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    import json

    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_t5(tmp_path_factory) -> Path:
    """A 2-layer T5 (d_model 64) with a Unigram (SentencePiece-style) tokenizer trained here."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

    folder = tmp_path_factory.mktemp("tiny_t5")
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    rng = random.Random(0)  # varied word forms, or the Unigram trainer keeps only characters
    corpus = ["summarize: " + " ".join(rng.choice(WORDS) + rng.choice(["", "s", "ed", "er"]) for _ in range(8))
              for _ in range(3000)]
    tok.train_from_iterator(corpus, trainers.UnigramTrainer(vocab_size=80, special_tokens=["<pad>", "</s>", "<unk>"],
                                                            unk_token="<unk>"))
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    from tokenizers import decoders

    tok.decoder = decoders.Metaspace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                   model_max_length=64)
    fast.save_pretrained(folder)
    config = T5Config(vocab_size=tok.get_vocab_size(), d_model=64, d_ff=128, d_kv=16, num_layers=2,
                      num_decoder_layers=2, num_heads=4, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
                      dropout_rate=0.0, task_specific_params={"summarization": {"prefix": "summarize: "}})
    T5ForConditionalGeneration(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_bart(tmp_path_factory) -> Path:
    """A 1+1-layer BART with a byte-level BPE tokenizer trained here."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import BartConfig, BartForConditionalGeneration, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny_bart")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([r["text"] for r in copy_rows(300, 0)],
                            trainers.BpeTrainer(vocab_size=300, special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", pad_token="<pad>", eos_token="</s>",
                                   unk_token="<unk>", model_max_length=64)
    fast.save_pretrained(folder)
    config = BartConfig(vocab_size=tok.get_vocab_size(), d_model=32, encoder_layers=1, decoder_layers=1,
                        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
                        max_position_embeddings=64, pad_token_id=1, bos_token_id=0, eos_token_id=2,
                        decoder_start_token_id=2, forced_eos_token_id=2)
    BartForConditionalGeneration(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def copy_data(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("copy_data")
    return {"train": write_jsonl(folder / "train.jsonl", copy_rows(3000, 1)),
            "validation": write_jsonl(folder / "validation.jsonl", copy_rows(60, 2))}


LM_CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "a stitch in time saves nine",
    "all that glitters is not gold",
    "the early bird catches the worm",
    "actions speak louder than words",
]
CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|endoftext|>{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def bpe_tokenizer(folder: Path, specials: dict[str, str], roberta: bool = False, chat_template: str | None = None,
                  corpus: list[str] | None = None) -> int:
    """A byte-level BPE tokenizer trained here, saved to `folder`; returns its vocabulary size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    texts = corpus or [t for t, _ in toy_rows(400, 0)]
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=list(dict.fromkeys(specials.values())),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    if roberta:
        tok.post_processor = processors.RobertaProcessing(
            ("</s>", tok.token_to_id("</s>")), ("<s>", tok.token_to_id("<s>")))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=64, **specials)
    if chat_template:
        fast.chat_template = chat_template
    fast.save_pretrained(folder)
    return tok.get_vocab_size()


@pytest.fixture(scope="session")
def tiny_gpt2_lm(tmp_path_factory) -> Path:
    """A 2-layer GPT-2 LM without a pad token, with a chat template, tokenizer trained here."""
    from transformers import GPT2Config, GPT2LMHeadModel

    folder = tmp_path_factory.mktemp("tiny_gpt2_lm")
    corpus = LM_CORPUS * 20 + [t for t, _ in toy_rows(200, 0)] + ["<|user|> <|assistant|>"]
    vocab = bpe_tokenizer(folder, {"eos_token": "<|endoftext|>", "bos_token": "<|endoftext|>"},
                          chat_template=CHAT_TEMPLATE, corpus=corpus)
    torch_seed()
    GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_embd=64, n_layer=2, n_head=2, n_positions=64,
                               bos_token_id=0, eos_token_id=0)).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    """A 2-layer Llama-architecture LM (RoPE, RMSNorm, SwiGLU) sharing the GPT-2 style tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("tiny_llama")
    vocab = bpe_tokenizer(folder, {"eos_token": "<|endoftext|>", "bos_token": "<|endoftext|>"},
                          corpus=LM_CORPUS * 20 + [t for t, _ in toy_rows(200, 0)])
    torch_seed()
    LlamaForCausalLM(LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                 bos_token_id=0, eos_token_id=0)).save_pretrained(folder)
    return folder


@contextlib.contextmanager
def serve_in_thread(model, settings):
    """`tuneforge serve`'s app for `model` (a LoadedModel) in a uvicorn thread on a free loopback port: yields
    (url, app); the server stops on exit."""
    import threading
    import time

    import uvicorn

    from tuneforge.deploy.serve import bind_socket, create_app

    app = create_app(model, settings)
    sock = bind_socket("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", app
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


def train_tiny_t5(model: Path, data: dict[str, Path], out: Path, max_steps: int):
    """A short seq2seq run of the tiny T5 on the copy task (serving tests start from it)."""
    import tuneforge

    items = {"task": "seq2seq", "model_name_or_path": str(model), "train_file": str(data["train"]),
             "validation_file": str(data["validation"]), "output_dir": str(out), "report_to": "none",
             "seed": 0, "max_target_length": 16, "preprocessing_cache_dir": str(out.parent / "cache"),
             "max_steps": max_steps, "num_beams": 1}
    return tuneforge.train(None, [f"{k}={v}" for k, v in items.items()])


def torch_seed(seed: int = 0) -> None:
    import torch

    torch.manual_seed(seed)


def train_tiny_lm(model: Path, folder: Path, max_steps: int):
    """A short causal-LM run of the tiny GPT-2 on LM_CORPUS (export and serving tests start from it)."""
    import tuneforge

    path = folder / "corpus.txt"
    path.write_text("\n\n".join(LM_CORPUS) + "\n")
    items = {"task": "causal_lm", "model_name_or_path": str(model), "train_file": str(path),
             "validation_file": str(path), "output_dir": str(folder / "run"), "report_to": "none", "seed": 0,
             "preprocessing_cache_dir": str(folder / "cache"), "learning_rate": 3e-3, "max_steps": max_steps,
             "save_strategy": "no", "block_size": 64, "max_new_tokens": 8}
    return tuneforge.train(None, [f"{k}={v}" for k, v in items.items()])


def qa_rows(n: int, seed: int, no_answer: float = 0.3, words: tuple[int, int] = (4, 14)) -> list[dict]:
    """A toy SQuAD-v2-style set a tiny model can learn: a context of filler words holding one positive and/or
    one negative word; the question asks for "the positive word" or "the negative word"; the answer is that word
    (character offsets into the context), or none when the context lacks it (a share `no_answer` of rows)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        kind = rng.choice(["positive", "negative"])
        other = "negative" if kind == "positive" else "positive"
        answerable = rng.random() >= no_answer
        filler = [rng.choice(NEUTRAL) for _ in range(rng.randint(*words))]
        polar = ([kind] if answerable else []) + ([other] if not answerable or rng.random() < 0.7 else [])
        for which in polar:
            filler.insert(rng.randint(0, len(filler)), rng.choice(POSITIVE if which == "positive" else NEGATIVE))
        context = " ".join(filler)
        answers: dict = {"text": [], "answer_start": []}
        if answerable:
            pool = POSITIVE if kind == "positive" else NEGATIVE
            word = next(w for w in filler if w in pool)
            answers = {"text": [word], "answer_start": [(" " + context + " ").index(f" {word} ")]}
        rows.append({"id": f"q{seed}-{i}", "question": f"the {kind} word", "context": context, "answers": answers})
    return rows


def write_squad(path: Path, rows: list[dict]) -> Path:
    """`rows` (qa_rows) as a nested SQuAD v2 file, one paragraph per question, pretty-printed (line numbers)."""
    import json

    data = [{"title": "toy", "paragraphs": [
        {"context": r["context"], "qas": [{"id": r["id"], "question": r["question"], "is_impossible": not
                                           r["answers"]["text"],
                                           "answers": [{"text": t, "answer_start": s} for t, s in
                                                       zip(r["answers"]["text"], r["answers"]["answer_start"])]}]}
        for r in rows]}]
    path.write_text(json.dumps({"version": "v2.0", "data": data}, indent=1), encoding="utf-8")
    return path


ML_LABELS = {"praise": POSITIVE, "complaint": NEGATIVE, "story": ["plot", "story", "ending"]}
ML_FILLER = ["the", "movie", "film", "was", "really", "quite", "a"]


def multilabel_rows(n: int, seed: int) -> list[dict]:
    """Multi-label toy rows: each label of ML_LABELS present (p=0.4) when one of its words is in the text."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        labels = [label for label in ML_LABELS if rng.random() < 0.4]
        words = [rng.choice(ML_FILLER) for _ in range(rng.randint(1, 4))]
        for label in labels:
            words.insert(rng.randint(0, len(words)), rng.choice(ML_LABELS[label]))
        rows.append({"text": " ".join(words), "label": labels})
    return rows


def regression_rows(n: int, seed: int) -> list[dict]:
    """Regression toy rows: target 100 + 30 per positive word - 20 per negative word (0-2 of each, in filler)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        pos, neg = rng.randint(0, 2), rng.randint(0, 2)
        words = [rng.choice(ML_FILLER) for _ in range(rng.randint(1, 4))]
        for word in [rng.choice(POSITIVE) for _ in range(pos)] + [rng.choice(NEGATIVE) for _ in range(neg)]:
            words.insert(rng.randint(0, len(words)), word)
        rows.append({"text": " ".join(words), "score": 100.0 + 30 * pos - 20 * neg})
    return rows


def launcher_env() -> dict[str, str]:
    """The environment for a launcher run from a test: no inherited rank variables, one thread per process, gloo
    on loopback, the hub offline."""
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR",
                                                          "MASTER_PORT")}
    return env | {"OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo", "HF_HUB_OFFLINE": "1",
                  "TOKENIZERS_PARALLELISM": "false"}


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def max_weight_diff(a: object, b: object) -> float:
    """Largest absolute difference between two runs' weights (folders holding model.safetensors, or state dicts)."""
    from safetensors.torch import load_file

    wa, wb = (w if isinstance(w, dict) else load_file(Path(w) / "model.safetensors") for w in (a, b))
    assert wa.keys() == wb.keys()
    return max(float((wa[k].float() - wb[k].float()).abs().max()) for k in wa)


def without_dropout(model: Path, folder: Path) -> Path:
    """A copy of `model` with dropout 0 (equal weights across process counts need it: masks differ per process)."""
    import json
    import shutil

    shutil.copytree(model, folder)
    config = json.loads((folder / "config.json").read_text())
    config |= {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    (folder / "config.json").write_text(json.dumps(config))
    return folder
