"""Typed run configuration, scoped by concern; every field documented once (the `help` metadata).

>>> from tuneforge.config.schema import TrainingConfig
>>> TrainingConfig(learning_rate=3e-5).per_device_train_batch_size
16

Field names follow Hugging Face transformers 5 / accelerate / peft spellings. `None` on a field whose help
says "task default" means the task fills it in (see `tuneforge config TASK`). Semantic checks live in
`__post_init__` and raise ConfigError naming the key; type coercion happens in `tuneforge.config.loader`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from tuneforge.errors import ConfigError
from tuneforge.tasks import key_applies


def opt(default: Any, help: str) -> Any:
    """A dataclass field with its one-line documentation."""
    return field(default=default, metadata={"help": help})


def applies(f: Any, task: str, section: str) -> bool:
    """Whether field `f` of `section` means something for `task`: the tasks declare the task-specific keys they
    use (TaskSpec.config_keys); a key no task declares applies to every task."""
    return key_applies(task, section, f.name)


@dataclass
class ModelConfig:
    model_name_or_path: str | None = opt(
        None, "Hugging Face hub id (e.g. bert-base-uncased) or a local folder with config and weights. Required.")
    revision: str = opt("main", "Hub branch, tag or commit to load; the resolved commit is saved with the run.")
    trust_remote_code: bool = opt(False, "Allow model code from the hub to run. Only for repositories you trust; "
                                         "hub models then need revision pinned to a commit hash.")
    allow_pickle: bool = opt(False, "Also load pickle weights (.bin/.pt), with torch's weights_only loader. "
                                    "Default: safetensors only (pickle files can run code when loaded).")
    cache_dir: str | None = opt(None, "Where downloaded models are cached (default: the Hugging Face cache).")
    torch_dtype: Literal["float32", "bfloat16", "float16"] = opt(
        "float32", "Dtype of the frozen weights (LoRA base, freeze.*): bfloat16/float16 halve their memory and need "
                   "mixed_precision of the same kind; trainable weights always stay float32 (see docs/precision.md).")

    def __post_init__(self) -> None:
        if self.model_name_or_path is not None and not self.model_name_or_path.strip():
            raise ConfigError("model.model_name_or_path: must not be empty; give a hub id or a local folder")
        name = self.model_name_or_path
        if (self.trust_remote_code and name and not Path(name).expanduser().exists()
                and not re.fullmatch(r"[0-9a-f]{40}", self.revision or "")):
            raise ConfigError(f"model.revision: trust_remote_code runs Python code from {self.model_name_or_path!r}; "
                              f"pin revision to a full commit hash (40 hex characters, got {self.revision!r}) so the "
                              "code cannot change under you")


@dataclass
class DataConfig:
    train_file: str | None = opt(None, "Training data: .csv, .tsv, .json, .jsonl, .parquet or .txt (relative to "
                                       "the working directory). Either this or dataset_name is required.")
    validation_file: str | None = opt(
        None, "Validation data. When absent, a stratified split of the training data is used.")
    test_file: str | None = opt(None, "Held-out test data, evaluated once at the end on the best model.")
    dataset_name: str | None = opt(None, "Hugging Face hub dataset id (e.g. imdb), loaded with datasets.load_dataset.")
    dataset_config_name: str | None = opt(None, "Configuration (subset) of the hub dataset, e.g. sst2 for glue.")
    dataset_streaming: bool = opt(
        False, "Stream the hub dataset (load_dataset(streaming=True)) instead of downloading it whole: rows are "
               "fetched as read and written once to a JSON Lines file in the preprocessing cache (scanned like a "
               "local one). With max_train_samples only that many training rows are fetched (the first N of a "
               "10,000-row shuffle buffer, seed 0), with max_eval_samples that many validation rows.")
    text_column: str = opt("text", "Column holding the input text.")
    text_pair_column: str | None = opt(
        None, "Optional second text column for sentence-pair tasks (NLI, paraphrase).")
    label_column: str = opt("label", "Column holding the label (strings or integers).")
    problem_type: Literal["single_label_classification", "multi_label_classification", "regression"] | None = opt(
        None, "transformers' problem_type: single_label_classification (one label per row), "
              "multi_label_classification (a list of labels per row: sigmoid + BCE, per-label thresholds tuned on "
              "validation) or regression (a number per row: MSE). null: multi-label when the labels are lists "
              "(JSON lists, or strings split at label_delimiter), else single-label; regression is never guessed. "
              "See docs/classification-problem-types.md.")
    label_delimiter: str | None = opt(
        None, "Multi-label labels written as one delimited string (e.g. '|' for 'sports|politics'; an empty cell is "
              "a row with no labels). Setting it means multi-label.")
    tokens_column: str = opt("tokens", "Column holding each sentence's words, a list of strings (JSON/JSONL/Parquet/"
                                       "hub data; a .conll file's first column).")
    tags_column: str = opt("ner_tags", "Column holding one tag per word: IOB2 names (B-PER, I-PER, O), IOB1 or "
                                       "BIOES (converted to IOB2), or a hub ClassLabel's integer ids.")
    question_column: str = opt("question", "Question answering: column holding the question.")
    context_column: str = opt("context", "Question answering: column holding the context the answer is taken from.")
    answers_column: str = opt(
        "answers", 'Question answering: column holding {"text": [...], "answer_start": [...]} (character offsets '
                   "into the context; empty lists: no answer). A nested SQuAD .json file is read as these columns.")
    max_answer_length: int = opt(30, "Question answering: longest answer predicted, in tokens (run_qa.py's default).")
    n_best_size: int = opt(20, "Question answering: start and end candidates kept per window when searching the best "
                               "span (run_qa.py's default).")
    target_column: str = opt("summary", "Column holding the target text (summary, translation, answer).")
    source_prefix: str | None = opt(
        None, "Text put before every source, e.g. 'summarize: ' or 'translate English to German: '. Default: "
              "the model's task_specific_params prefix for task_specific_params_key, else none.")
    prompt_column: str = opt("prompt", "Prompt column for prompt/completion data (no loss on the prompt).")
    completion_column: str = opt("completion", "Completion column for prompt/completion data.")
    messages_column: str = opt("messages", "Chat column: a list of {role, content}; loss on assistant turns only.")
    data_format: Literal["auto", "text", "prompt_completion", "chat"] = opt(
        "auto", "auto: chat if messages_column exists, else prompt_completion if both its columns exist, "
                "else raw text in text_column.")
    document_separator: Literal["blank_line", "line"] = opt(
        "blank_line", "How a .txt file splits into documents: at blank lines, or one per line.")
    block_size: int | None = opt(
        None, "Tokens per training sequence (packed block, or longest example). Default: the model's limit, "
              "at most 1024.")
    packing: bool | None = opt(
        None, "Pack examples into full blocks (no padding). Default: on for raw text, off for "
              "prompt/completion and chat (dynamic padding, length-grouped).")
    task_specific_params_key: str = opt(
        "summarization", "Which entry of the model config's task_specific_params supplies the default "
                         "source_prefix (e.g. translation_en_to_de).")
    validation_split_percentage: float = opt(
        10.0, "Percent of training rows held out for validation when no validation data is given (stratified).")
    validation_split_max_rows: int | None = opt(
        5000, "At most this many rows held out by validation_split_percentage (a big corpus is not evaluated "
              "at 10%: 5,000 rows put a standard error of about 0.7 points on an accuracy). null: no cap.")
    max_length: int | None = opt(
        None, "Maximum tokens per example; longer inputs are truncated (token classification splits them into "
              "overlapping windows instead: data.stride). Default: the model's limit, at most 512.")
    stride: int | None = opt(
        None, "Tokens shared by neighbouring windows when an input longer than max_length is split into "
              "overlapping windows (nothing is cut). Default: a quarter of max_length (128 at 512): each token is "
              "then predicted from the window where it has at least stride/2 tokens of context on both sides, for "
              "about a third more windows than no overlap.")
    max_source_length: int | None = opt(
        None, "Maximum source tokens; longer sources are truncated. Default: the model's limit, at most 1024.")
    max_target_length: int = opt(128, "Maximum target tokens; longer targets are truncated.")
    max_train_samples: int | None = opt(None, "Train on N training rows drawn at random (seeded; quick experiments).")
    max_eval_samples: int | None = opt(None, "Evaluate on the first N validation rows only (smoke runs on big data: "
                                             "every evaluation, and the final one, cost at most N rows).")
    preprocessing_cache_dir: str | None = opt(
        None, "Where tokenized data is cached (default: $TUNEFORGE_CACHE or ~/.cache/tuneforge).")

    def __post_init__(self) -> None:
        if not 0 < self.validation_split_percentage < 100:
            raise ConfigError(f"data.validation_split_percentage: must be between 0 and 100 (exclusive), "
                              f"got {self.validation_split_percentage}")
        for key in ("max_length", "max_source_length", "max_target_length", "block_size"):
            value = getattr(self, key)
            if value is not None and value < 2:
                raise ConfigError(f"data.{key}: must be at least 2, got {value}")
        for key in ("max_answer_length", "n_best_size"):
            if getattr(self, key) < 1:
                raise ConfigError(f"data.{key}: must be at least 1, got {getattr(self, key)}")
        for key in ("max_train_samples", "max_eval_samples", "validation_split_max_rows"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ConfigError(f"data.{key}: must be a positive number of rows, got {value}")
        if self.stride is not None and self.stride < 0:
            raise ConfigError(f"data.stride: must not be negative (tokens shared by neighbouring windows), got "
                              f"{self.stride}")
        if self.train_file and self.dataset_name:
            raise ConfigError("data: give either train_file or dataset_name, not both")
        if self.dataset_streaming and not self.dataset_name:
            raise ConfigError("data.dataset_streaming: streams a hub dataset; set data.dataset_name (local files are "
                              "always read without loading them whole)")


SchedulerName = Literal["linear", "cosine", "constant", "constant_with_warmup", "cosine_with_restarts",
                        "polynomial", "inverse_sqrt"]


@dataclass
class TrainingConfig:
    output_dir: str | None = opt(None, "Run folder. Default: runs/<run id>. Must not hold a finished run.")
    learning_rate: float | Literal["auto"] | None = opt(
        None, "Peak learning rate of AdamW, or auto: run the LR range test first and use its suggestion "
              "(lr_find.csv/png in the run folder). Task default.")
    head_learning_rate: float | None = opt(
        None, "Peak learning rate of the parameters the checkpoint did not have (a new classification, token or "
              "answer head), on the same schedule; null: the task's default (learning_rate where it has none).")
    layerwise_lr_decay: float = opt(
        1.0, "Layer-wise learning-rate decay (ULMFiT, Howard & Ruder 2018; ELECTRA, Clark et al. 2020): layer i "
             "(0-based) of L numbered layers trains at learning_rate x decay^(L - i), the embeddings at "
             "decay^(L + 1), everything above the layers (pooler, head, final norm) at learning_rate (the head at "
             "head_learning_rate when set), on one schedule. 1.0: off.")
    lr_find_min_lr: float = opt(1e-7, "LR range test (lr-find, learning_rate=auto): lowest learning rate tried.")
    lr_find_max_lr: float = opt(1.0, "LR range test: highest learning rate tried (the test stops earlier when the "
                                     "loss diverges).")
    lr_find_num_steps: int = opt(100, "LR range test: optimizer steps over which the rate grows exponentially "
                                      "from lr_find_min_lr to lr_find_max_lr.")
    num_train_epochs: float | None = opt(
        3.0, "Passes over the training data (ignored when max_steps > 0); null: the task's budget rule.")
    max_steps: int = opt(-1, "Total optimizer steps; overrides num_train_epochs when > 0.")
    per_device_train_batch_size: int = opt(16, "Examples per forward pass during training.")
    per_device_eval_batch_size: int | None = opt(
        None, "Examples per forward pass during evaluation. null: 16 on the CPU (smaller batches evaluate faster "
              "there: MiniLM bf16 86 rows/s at 16 against 60 at 64), 64 on a GPU.")
    auto_find_batch_size: bool = opt(
        False, "Shrink per_device_train_batch_size (halving) until the longest batch fits in memory (GPU: "
               "out-of-memory back-off; CPU: memory estimate), and raise gradient_accumulation_steps to keep "
               "the effective batch per_device_train_batch_size x gradient_accumulation_steps.")
    gradient_accumulation_steps: int = opt(
        1, "Micro-batches per optimizer step; the loss is normalised over the whole accumulated batch.")
    warmup_steps: int | float = opt(
        0.1, "Linear warmup: an int is a number of steps, a float in [0, 1) a fraction of all steps.")
    weight_decay: float = opt(0.01, "AdamW weight decay (not applied to biases and normalisation weights).")
    lr_scheduler_type: SchedulerName = opt("linear", "Learning-rate schedule after warmup.")
    max_grad_norm: float = opt(1.0, "Clip the global gradient norm to this value; 0 disables clipping.")
    max_nonfinite_steps: int = opt(
        10, "Optimizer steps with a NaN/inf loss or gradient are skipped; stop the run after this many in a row "
            "(0: never stop).")
    adam_beta1: float = opt(0.9, "AdamW beta1.")
    adam_beta2: float = opt(0.999, "AdamW beta2.")
    adam_epsilon: float = opt(1e-8, "AdamW epsilon.")
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = opt(
        "auto", "auto: bf16 on GPUs that support it, fp16 with loss scaling on older GPUs; on CPU bf16 autocast "
                "where the processor computes bf16 natively (AMX/AVX512-BF16), else fp32.")
    gradient_checkpointing: bool = opt(
        False, "Recompute activations in the backward pass: much less activation memory, ~30% slower steps.")
    class_weights: Literal["none", "auto", "sqrt"] | dict[str, float] = opt(
        "auto", "Weight the loss per class: auto (inverse class frequency, n / (classes x count); about 1 for "
                "every class of balanced data; the default, docs/QUALITY.md), sqrt (the square roots of auto's "
                "weights: a class 100x rarer weighs 10x), none, or {label: weight} (unlisted labels weigh 1).")
    label_smoothing_factor: float | None = opt(
        None, "Label smoothing of the training loss (Szegedy et al. 2016; Hugging Face Trainer's name): the target "
              "puts 1 - factor on the true class and spreads factor over all classes. Single-label "
              "classification; evaluation reports the plain loss. 0: off; null: the task's default "
              "(single-label classification 0.1, docs/QUALITY.md; otherwise off).")
    baselines: bool = opt(
        True, "Score the task's baselines on the held-out split beside the model (docs/EVALUATION.md); false "
              "skips them.")
    seed: int = opt(42, "Random seed for initialisation, data order, dropout and the validation split.")
    eval_strategy: Literal["epoch", "steps", "no"] = opt("epoch", "When to evaluate on the validation data.")
    eval_steps: int | None = opt(None, "Evaluate every N optimizer steps (with eval_strategy=steps).")
    save_strategy: Literal["epoch", "steps", "no"] = opt("epoch", "When to write a checkpoint.")
    save_steps: int | None = opt(None, "Checkpoint every N optimizer steps (with save_strategy=steps).")
    save_total_limit: int | None = opt(
        2, "Checkpoints kept on disk; the best and the newest are always kept. null keeps all.")
    logging_steps: int = opt(10, "Log loss, learning rate and throughput every N optimizer steps.")
    load_best_model_at_end: bool = opt(True, "Restore the weights with the best validation metric at the end.")
    metric_for_best_model: str | None = opt(None, "Validation metric used for best model and early stopping. "
                                                  "Task default.")
    greater_is_better: bool | None = opt(None, "Whether a larger metric is better. Default: the direction the task "
                                               "declares for the metric (smaller is better for loss and perplexity).")
    early_stopping_patience: int | None = opt(
        None, "Stop after this many evaluations without improvement of metric_for_best_model. null disables.")
    early_stopping_threshold: float = opt(0.0, "Minimum improvement that resets early-stopping patience.")
    resume_from_checkpoint: str | None = opt(
        None, "Continue a run: a checkpoint folder, or 'auto' for the newest complete one in output_dir "
              "(starts from scratch when there is none yet, so a preemptible job can always pass it).")
    record_sample_ids: bool = opt(
        False, "Write the training row ids of every optimizer step to sample_ids.jsonl (audits data order "
               "across resumes).")
    train_sampling_strategy: Literal["group_by_length", "random"] = opt(
        "group_by_length", "Batch order: group_by_length batches similar lengths together (less padding).")
    dataloader_num_workers: int = opt(0, "Background workers that collate batches (0: main process).")
    report_to: Literal["tensorboard", "wandb", "mlflow", "none"] = opt(
        "tensorboard", "Where to log metrics besides metrics.jsonl (through accelerate's trackers; wandb and mlflow "
                       "need their package installed).")
    push_to_hub: bool = opt(False, "At the end, upload the final weights, tokenizer, configs and model card (never "
                                   "checkpoints, logs or error analysis) to the Hugging Face Hub; needs a token "
                                   "(HF_TOKEN or `hf auth login`).")
    hub_model_id: str | None = opt(None, "Hub repository for push_to_hub, e.g. me/my-model. Default: the run id "
                                         "under your account.")
    hub_private_repo: bool = opt(False, "Create the hub repository as private.")
    use_cpu: bool = opt(False, "Train on the CPU even when a GPU is available.")
    torch_compile: bool | Literal["auto"] = opt(
        "auto", "Compile with torch.compile: the whole model with its loss when every batch has one shape "
                "(packed causal LM; the cross-entropy fuses with the logits), else each repeated layer "
                "(regional compilation: a new batch length recompiles one layer). Evaluation stays uncompiled. "
                "auto: on for classification and causal-LM runs of 1000+ steps on a CUDA GPU, where it was "
                "measured to repay ~10-30 s of compiling (H100: GPT-2 2.0x, BERT-base 1.7x; docs/BENCHMARKS.md), "
                "and a compilation error falls back to eager; off on CPU (no gain measured) and for seq2seq "
                "(not measured). When on, batch lengths are padded to multiples of 64 and the ragged last "
                "training batch of each epoch is dropped, so shapes repeat instead of recompiling.")

    def __post_init__(self) -> None:
        def bad(key: str, why: str) -> ConfigError:
            return ConfigError(f"training.{key}: {why}, got {getattr(self, key)!r}")

        if self.learning_rate not in (None, "auto") and not self.learning_rate > 0:
            raise bad("learning_rate", "must be positive (or auto)")
        if self.head_learning_rate is not None and not self.head_learning_rate > 0:
            raise bad("head_learning_rate", "must be positive (or null: learning_rate)")
        if not 0 < self.layerwise_lr_decay <= 1:
            raise bad("layerwise_lr_decay", "must be in (0, 1] (1: off; ELECTRA used 0.8)")
        if not 0 < self.lr_find_min_lr < self.lr_find_max_lr:
            raise ConfigError(f"training.lr_find_min_lr: must be positive and below lr_find_max_lr, got "
                              f"{self.lr_find_min_lr} and {self.lr_find_max_lr}")
        if self.lr_find_num_steps < 5:
            raise bad("lr_find_num_steps", "must be at least 5")
        if self.label_smoothing_factor is not None and not 0 <= self.label_smoothing_factor < 1:
            raise bad("label_smoothing_factor", "must be in [0, 1) (0: off; 0.1 is the usual choice)")
        if isinstance(self.class_weights, dict):
            for label, weight in self.class_weights.items():
                if not weight > 0:
                    raise ConfigError(f"training.class_weights: weight of {label!r} must be positive, got {weight}")
        for key in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps",
                    "logging_steps"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise bad(key, "must be at least 1")
        if self.num_train_epochs is not None and not self.num_train_epochs > 0 and self.max_steps <= 0:
            raise bad("num_train_epochs", "must be positive (or set max_steps)")
        if isinstance(self.warmup_steps, float) and not 0 <= self.warmup_steps < 1:
            raise bad("warmup_steps", "a float is a fraction of all steps and must be in [0, 1); "
                                      "use an int for a number of steps")
        if isinstance(self.warmup_steps, int) and self.warmup_steps < 0:
            raise bad("warmup_steps", "must not be negative")
        if self.weight_decay < 0:
            raise bad("weight_decay", "must not be negative")
        if self.max_grad_norm < 0:
            raise bad("max_grad_norm", "must not be negative (0 disables clipping)")
        if self.eval_strategy == "steps" and not self.eval_steps:
            raise ConfigError("training.eval_steps: required when eval_strategy=steps (e.g. eval_steps=500)")
        if self.save_strategy == "steps" and not self.save_steps:
            raise ConfigError("training.save_steps: required when save_strategy=steps (e.g. save_steps=500)")
        for key in ("eval_steps", "save_steps", "save_total_limit", "early_stopping_patience"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise bad(key, "must be at least 1 (or null)")
        if self.early_stopping_patience and self.eval_strategy == "no":
            raise ConfigError("training.early_stopping_patience: needs evaluation; set eval_strategy=epoch or steps")
        if self.max_nonfinite_steps < 0:
            raise bad("max_nonfinite_steps", "must not be negative (0: never stop)")
        if self.dataloader_num_workers < 0:
            raise bad("dataloader_num_workers", "must not be negative")


@dataclass
class GenerationConfig:
    # null below means: the model's own preference (its generation_config or task_specific_params), else
    # the default in brackets; the values used are saved in run_config.yaml and generation_config.json.
    num_beams: int | None = opt(None, "Beam search width for evaluation and prediction, 1 = greedy [4].")
    max_new_tokens: int | None = opt(
        None, "Longest output in tokens. Default: data.max_target_length (seq2seq), 128 (causal_lm).")
    min_length: int = opt(0, "Shortest output in tokens.")
    length_penalty: float | None = opt(None, "Exponent on length in beam scores; above 1 favours longer outputs [1.0].")
    no_repeat_ngram_size: int | None = opt(None, "Never repeat an n-gram of this size (3 suits summaries) [0: off].")
    early_stopping: bool | None = opt(None, "Stop beam search once num_beams finished candidates exist [true].")
    predict_with_generate: bool = opt(
        True, "Generate during evaluation to report ROUGE and gen_len (slower than loss alone).")
    do_sample: bool = opt(False, "Sample instead of greedy/beam decoding.")
    temperature: float = opt(1.0, "Sampling temperature (with do_sample).")
    top_k: int = opt(50, "Sample from the k most likely tokens (with do_sample); 0 disables.")
    top_p: float = opt(1.0, "Nucleus sampling: smallest token set with this probability (with do_sample).")
    repetition_penalty: float = opt(1.0, "Penalise tokens already generated; 1.0 disables.")
    num_return_sequences: int = opt(1, "Outputs per prompt.")
    stop_strings: list[str] | None = opt(None, "Stop generating at any of these strings, e.g. ['\\n\\n'].")

    def __post_init__(self) -> None:
        if self.num_beams is not None and self.num_beams < 1:
            raise ConfigError(f"generation.num_beams: must be at least 1, got {self.num_beams}")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ConfigError(f"generation.max_new_tokens: must be at least 1, got {self.max_new_tokens}")
        if self.temperature <= 0 or not 0 < self.top_p <= 1 or self.top_k < 0 or self.repetition_penalty <= 0:
            raise ConfigError("generation: temperature and repetition_penalty must be positive, top_p in (0, 1], "
                              "top_k >= 0")
        if self.num_return_sequences < 1:
            raise ConfigError("generation.num_return_sequences: must be at least 1")
        if self.min_length < 0 or (self.no_repeat_ngram_size or 0) < 0:
            raise ConfigError("generation.min_length and no_repeat_ngram_size must not be negative")


@dataclass
class LoraConfig:
    enabled: bool = opt(False, "Train LoRA adapters (peft) instead of all weights. Without an explicit "
                               "learning_rate, LoRA runs use 2e-4.")
    r: int = opt(8, "LoRA rank.")
    lora_alpha: int = opt(16, "LoRA scaling numerator (scale = lora_alpha / r).")
    lora_dropout: float = opt(0.05, "Dropout on the LoRA path.")
    target_modules: list[str] | None = opt(
        None, "Module names to adapt. Default: peft's choice for the architecture, else every linear layer "
              "except the output head.")
    merge_weights: bool = opt(True, "Also save merged full weights at the run folder's root (plain transformers "
                                    "loads them without peft); the adapter alone is always in adapter/.")

    def __post_init__(self) -> None:
        if self.r < 1 or self.lora_alpha < 1:
            raise ConfigError(f"lora.r and lora.lora_alpha must be at least 1, got {self.r}, {self.lora_alpha}")
        if not 0 <= self.lora_dropout < 1:
            raise ConfigError(f"lora.lora_dropout: must be in [0, 1), got {self.lora_dropout}")


@dataclass
class FreezeConfig:
    embeddings: bool = opt(False, "Freeze the input embeddings (token, position, type) of every stack. A tied LM "
                                  "head is the same matrix and is frozen with them (the run says so).")
    bottom_layers: int = opt(0, "Freeze the N lowest transformer blocks of each stack (encoder and decoder), found "
                                "from the model's structure.")
    all_but_head: bool = opt(False, "Train only the head: the new classification head, or the LM head (when the LM "
                                    "head is tied to the input embeddings, those train too; the run says so).")
    modules: list[str] | None = opt(
        None, "Also freeze parameters whose name matches any of these glob patterns, e.g. ['*.attention.*']; "
              "names as in model.named_parameters(). A pattern that matches nothing is an error.")

    def __post_init__(self) -> None:
        if self.bottom_layers < 0:
            raise ConfigError(f"freeze.bottom_layers: must not be negative, got {self.bottom_layers}")

    @property
    def enabled(self) -> bool:
        return bool(self.embeddings or self.bottom_layers or self.all_but_head or self.modules)


@dataclass
class DistributedConfig:
    strategy: Literal["ddp", "fsdp", "deepspeed"] = opt(
        "ddp", "How several processes train one model (launched by torchrun, accelerate launch or "
               "`tuneforge train --nproc N`; one process ignores ddp): ddp (a full copy per process, gradients "
               "averaged), fsdp (PyTorch FSDP2: weights, gradients and optimizer state sharded over the processes) "
               "or deepspeed (DeepSpeed ZeRO, zero_stage; fp32 only). fsdp and deepspeed run under a launcher, even "
               "for one GPU, and on the CPU over 2 or more processes (docs/distributed.md).")
    timeout_minutes: float = opt(
        30.0, "How long a collective waits for the other processes before the run fails (torch.distributed's "
              "timeout: it bounds how long the others wait while the main process validates and tokenizes the "
              "data). A process that dies is detected within a minute whatever this says (docs/distributed.md).")
    peer_timeout_seconds: float = opt(
        60.0, "A process whose heartbeat (once a second, through the launcher's store) has not moved for this long "
              "is taken as lost: the run stops with one line naming its rank and is marked interrupted, instead of "
              "waiting for timeout_minutes (docs/distributed.md).")
    zero_stage: int = opt(
        2, "DeepSpeed ZeRO stage (strategy=deepspeed): 2 shards gradients and optimizer state over the processes, "
           "3 also the weights (each block gathered when used).")
    fsdp_reshard_after_forward: bool = opt(
        True, "FSDP2 (strategy=fsdp): free each block's gathered weights after its forward and gather them again "
              "for the backward (least memory); false keeps them gathered until the backward (one all-gather less "
              "per block, ZeRO-2-like memory).")
    cpu_offload: bool = opt(
        False, "Keep the optimizer state in CPU memory, and with fsdp or zero_stage 3 the weights too (less GPU "
               "memory, slower steps; strategy=fsdp or deepspeed).")
    sharded_checkpoints: bool = opt(
        False, "FSDP2 (strategy=fsdp): every process writes its own shards of the weights and optimizer state into "
               "each checkpoint (torch.distributed.checkpoint, a dcp/ folder) instead of gathering them on the main "
               "process (12 bytes per parameter of its CPU memory); resumes under fsdp on any process count or on "
               "one plain process. The final model is still gathered into model.safetensors. Off by default for "
               "now (docs/distributed.md).")
    fsdp_config: str | None = opt(
        None, "A YAML/JSON file in accelerate's FSDP format (an `accelerate config` file, or its fsdp_config "
              "section) merged over the FSDP2 settings tuneforge builds (strategy=fsdp; docs/distributed.md).")
    deepspeed_config: str | None = opt(
        None, "A DeepSpeed config file (JSON/YAML) merged over the one tuneforge builds (strategy=deepspeed); its "
              "micro batch, accumulation, clipping and precision must agree with training.* or be \"auto\".")

    def __post_init__(self) -> None:
        if not self.timeout_minutes > 0:
            raise ConfigError(f"distributed.timeout_minutes: must be positive, got {self.timeout_minutes}")
        if not self.peer_timeout_seconds >= 5:
            raise ConfigError(f"distributed.peer_timeout_seconds: must be at least 5 (heartbeats are a second apart), "
                              f"got {self.peer_timeout_seconds}")
        if self.zero_stage not in (2, 3):
            raise ConfigError(f"distributed.zero_stage: must be 2 (gradients and optimizer state sharded) or 3 "
                              f"(weights too), got {self.zero_stage}")
        for key in ("fsdp_config", "deepspeed_config"):
            value = getattr(self, key)
            if value is None:
                continue
            path = Path(value).expanduser()
            if path.suffix.lower() not in (".json", ".yaml", ".yml"):
                raise ConfigError(f"distributed.{key}: {value!r} is not a .json, .yaml or .yml file")
            if not path.is_file():
                raise ConfigError(f"distributed.{key}: file not found: {value!r} (relative to the working directory)")


SECTIONS: dict[str, type] = {"model": ModelConfig, "data": DataConfig, "training": TrainingConfig,
                             "generation": GenerationConfig, "lora": LoraConfig, "freeze": FreezeConfig,
                             "distributed": DistributedConfig}


@dataclass
class RunConfig:
    """A complete, resolved run description: `task` plus one dataclass per concern."""

    task: str
    model: ModelConfig
    data: DataConfig
    training: TrainingConfig
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    freeze: FreezeConfig = field(default_factory=FreezeConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)

    def to_dict(self) -> dict[str, Any]:
        """Every field that applies to this task (reloads with load_config to the same config)."""
        out: dict[str, Any] = {"task": self.task}
        for name in SECTIONS:
            section = getattr(self, name)
            values = {f.name: getattr(section, f.name) for f in fields(section) if applies(f, self.task, name)}
            if values:
                out[name] = values
        return out
