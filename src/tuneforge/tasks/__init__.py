"""Built-in tasks. Each registers a light spec here; its module (which imports torch) loads on demand.

>>> from tuneforge.tasks import task_names
>>> "classification" in task_names()
True
"""

from tuneforge.tasks.base import Task, TaskSpec, get_spec, get_task, register_task, task_names

register_task(TaskSpec(
    name="classification",
    summary="Text (or text-pair) classification with any AutoModelForSequenceClassification (BERT family).",
    factory="tuneforge.tasks.classification:ClassificationTask",
    defaults={"training": {"learning_rate": 2e-5, "num_train_epochs": 3.0, "warmup_steps": 0.1,
                           "weight_decay": 0.01, "lr_scheduler_type": "linear", "max_grad_norm": 1.0,
                           "metric_for_best_model": "f1_macro"}},
    metrics=("loss", "accuracy", "f1_macro", "f1_weighted", "precision_macro", "recall_macro",
             "precision_weighted", "recall_weighted"),
))

register_task(TaskSpec(
    name="seq2seq",
    summary="Summarization and other text-to-text tasks with any AutoModelForSeq2SeqLM (T5, BART, Pegasus).",
    factory="tuneforge.tasks.seq2seq:Seq2SeqTask",
    defaults={"training": {"num_train_epochs": 3.0, "warmup_steps": 0.05, "weight_decay": 0.01,
                           "lr_scheduler_type": "linear", "max_grad_norm": 1.0, "metric_for_best_model": "loss",
                           "per_device_train_batch_size": 8, "per_device_eval_batch_size": 16}},
    metrics=("loss", "perplexity", "rouge1", "rouge2", "rougeL", "rougeLsum", "gen_len"),
    notes={"learning_rate": "seq2seq default when null: 3e-4 for T5-family models (t5, mt5, umt5, longt5), "
                            "5e-5 for BART, Pegasus and others",
           "metric_for_best_model": "seq2seq default: loss; rougeL/rougeLsum select on generated summaries"},
))

register_task(TaskSpec(
    name="causal_lm",
    summary="Causal language modelling and text generation with any AutoModelForCausalLM (GPT-2, Llama, Qwen).",
    factory="tuneforge.tasks.causal_lm:CausalLMTask",
    defaults={"training": {"learning_rate": 5e-5, "num_train_epochs": 3.0, "warmup_steps": 0.05,
                           "weight_decay": 0.01, "lr_scheduler_type": "cosine", "max_grad_norm": 1.0,
                           "metric_for_best_model": "loss", "per_device_train_batch_size": 8,
                           "per_device_eval_batch_size": 8}},
    metrics=("loss", "perplexity"),
    notes={"learning_rate": "causal_lm default for full fine-tuning; LoRA runs use about 2e-4"},
))

__all__ = ["Task", "TaskSpec", "get_spec", "get_task", "register_task", "task_names"]
