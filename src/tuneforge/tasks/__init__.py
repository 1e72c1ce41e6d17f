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

__all__ = ["Task", "TaskSpec", "get_spec", "get_task", "register_task", "task_names"]
