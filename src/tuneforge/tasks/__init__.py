"""Built-in tasks. Each registers a light spec here; its module (which imports torch) loads on demand.

>>> from tuneforge.tasks import task_names
>>> "classification" in task_names()
True

A task is its module (a class following `Task`, usually derived from `TaskBase`) plus one `register_task` call
below: its spec declares everything code outside `tasks/` needs to know about it (config keys, metrics and
their direction, baseline, LoRA task type, model-card metadata, inference verb and CLI command, error-analysis
metric, export verification, ONNX class, compile and memory rules); nothing outside `tasks/` compares task
names (tests/test_task_literals.py).
"""

from tuneforge.tasks.base import (
    Task,
    TaskBase,
    TaskSpec,
    Verb,
    all_specs,
    get_spec,
    get_task,
    key_applies,
    load_declared,
    register_task,
    spec_with_verb,
    task_names,
    tasks_using,
)

# generation settings every generating task uses (beam search and output length)
GENERATION_KEYS = ("num_beams", "max_new_tokens", "min_length", "length_penalty", "no_repeat_ngram_size",
                   "early_stopping")

register_task(TaskSpec(
    name="classification",
    summary="Text (or text-pair) classification with any AutoModelForSequenceClassification (BERT family).",
    factory="tuneforge.tasks.classification:ClassificationTask",
    defaults={"training": {"learning_rate": None, "num_train_epochs": None, "warmup_steps": 0.1,
                           "weight_decay": 0.01, "lr_scheduler_type": "linear", "max_grad_norm": 1.0,
                           "metric_for_best_model": None}},
    notes={"learning_rate": "classification default when null: by encoder width, 1e-4 up to hidden size 512 "
                            "(MiniLM; measured, docs/QUALITY.md), 3e-5 up to 768, 1.5e-5 above (published grids); "
                            "LoRA runs use 2e-4",
           "baselines": "classification: majority class and TF-IDF + logistic regression (seconds)",
           "num_train_epochs": "classification default when null: enough epochs for 600 optimizer steps, 3 to 6 "
                               "(docs/QUALITY.md)",
           "metric_for_best_model": "classification default when null, by data.problem_type: f1_macro "
                                    "(single-label), f1_micro (multi-label), rmse (regression)",
           "head_learning_rate": "classification default when null: 10x learning_rate for a new single-label "
                                 "head in a full fine-tune (docs/QUALITY.md); multi-label, regression, LoRA, freeze "
                                 "and learning_rate=auto: learning_rate",
           "label_smoothing_factor": "classification default when null: 0.1 for single-label (docs/QUALITY.md); "
                                     "multi-label and regression: off",
           "class_weights": "multi-label: each label's BCE pos_weight (auto: negatives / positives in training, "
                            "clipped to [1, 10]; sqrt: its square root, clipped the same); regression ignores auto "
                            "and none"},
    # single-label: accuracy ... recall_weighted; multi-label: f1_micro ... subset_accuracy (and the macro
    # scores); regression: mse ... r2 (tasks/problem_types.py PROBLEM_METRICS says which is valid for which)
    metrics=("loss", "accuracy", "f1_macro", "f1_weighted", "precision_macro", "recall_macro",
             "precision_weighted", "recall_weighted", "f1_micro", "precision_micro", "recall_micro", "f1_samples",
             "subset_accuracy", "mse", "rmse", "mae", "pearson", "spearman", "r2"),
    lower_is_better=("loss", "mse", "rmse", "mae"),
    config_keys={"data": ("text_column", "text_pair_column", "label_column", "max_length", "problem_type",
                          "label_delimiter"),
                 "training": ("class_weights", "label_smoothing_factor")},
    baseline="tuneforge.evaluate.baselines:classification",
    lora_task_type="SEQ_CLS",
    pipeline_tag="text-classification", card_metrics=("accuracy", "f1"),
    card_use="Assigns one of {n_labels} labels ({labels}) to a text{pair}.",
    predicts_labels=True, verb=Verb("classify"),
    analysis_metric="accuracy", analysis_worst="most_confident_errors",
    verify_measure="label agreement", verify_metrics="classes",
    onnx_class="tuneforge.deploy.onnx:OnnxClassifier",
    compile_auto=True,
))

register_task(TaskSpec(
    name="seq2seq",
    summary="Summarization and other text-to-text tasks with any AutoModelForSeq2SeqLM (T5, BART, Pegasus).",
    factory="tuneforge.tasks.seq2seq:Seq2SeqTask",
    defaults={"training": {"num_train_epochs": 3.0, "warmup_steps": 0.05, "weight_decay": 0.01,
                           "lr_scheduler_type": "linear", "max_grad_norm": 1.0, "metric_for_best_model": "loss",
                           "per_device_train_batch_size": 8, "per_device_eval_batch_size": 16}},
    metrics=("loss", "perplexity", "rouge1", "rouge2", "rougeL", "rougeLsum", "gen_len"),
    lower_is_better=("loss", "perplexity"),
    generated_metrics=("rouge1", "rouge2", "rougeL", "rougeLsum", "gen_len"),
    config_keys={"data": ("text_column", "target_column", "source_prefix", "task_specific_params_key",
                          "max_source_length", "max_target_length"),
                 "generation": GENERATION_KEYS + ("predict_with_generate",)},
    baseline="tuneforge.evaluate.baselines:lead_1",
    base_model_baseline=True,
    lora_task_type="SEQ_2_SEQ_LM",
    pipeline_tag="text2text-generation", card_metrics=("rouge",),
    card_use="Generates a target text (e.g. a summary) from a source text{prefix}.",
    generates=True,
    verb=Verb("summarize", "summarize (generate) with a finished seq2seq run", batch_size=16),
    analysis_metric="rougeL", analysis_worst="lowest_rouge",
    verify_measure="next-token agreement (teacher forcing)", verify_metrics="generated_rouge",
    onnx_class="tuneforge.deploy.onnx:OnnxSeq2Seq",
    vocab_logits=True,
    notes={"learning_rate": "seq2seq default when null: 3e-4 for T5-family models (t5, mt5, umt5, longt5), "
                            "5e-5 for BART, Pegasus and others",
           "metric_for_best_model": "seq2seq default: loss; rougeL/rougeLsum select on generated summaries",
           "baselines": "seq2seq: lead-1, and the base model before fine-tuning when it is pretrained as a whole"},
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
    lower_is_better=("loss", "perplexity"),
    config_keys={"data": ("text_column", "prompt_column", "completion_column", "messages_column", "data_format",
                          "document_separator", "block_size", "packing"),
                 "generation": GENERATION_KEYS + ("do_sample", "temperature", "top_k", "top_p", "repetition_penalty",
                                                  "num_return_sequences", "stop_strings")},
    base_model_baseline=True,
    lora_task_type="CAUSAL_LM",
    pipeline_tag="text-generation", card_metrics=("perplexity",), card_example="Once upon a time",
    card_use="Continues text (or answers prompts/chats, depending on the training format).",
    generates=True, prompt_shares_context=True,
    verb=Verb("generate", "generate text with a finished causal_lm run", input="prompt", batch_size=8),
    analysis_metric="loss", analysis_worst="highest_loss",
    verify_measure="next-token agreement (teacher forcing)", verify_metrics="perplexity",
    onnx_class="tuneforge.deploy.onnx:OnnxCausalLM",
    compile_auto=True, vocab_logits=True,
    notes={"learning_rate": "causal_lm default for full fine-tuning; LoRA runs use about 2e-4",
           "baselines": "causal_lm: the base model's perplexity before fine-tuning (not for an untrained model)"},
))

register_task(TaskSpec(
    name="token_classification",
    summary="Token classification (named-entity recognition) with any AutoModelForTokenClassification "
            "(BERT family); long sentences in overlapping windows, never cut.",
    factory="tuneforge.tasks.token_classification:TokenClassificationTask",
    defaults={"training": {"learning_rate": None, "num_train_epochs": 3.0, "warmup_steps": 0.1,
                           "weight_decay": 0.01, "lr_scheduler_type": "linear", "max_grad_norm": 1.0,
                           "metric_for_best_model": "f1"}},
    metrics=("loss", "f1", "precision", "recall", "accuracy"),
    config_keys={"data": ("text_column", "tokens_column", "tags_column", "max_length", "stride")},
    baseline="tuneforge.evaluate.baselines:most_frequent_tag",
    lora_task_type="TOKEN_CLS",
    pipeline_tag="token-classification", card_metrics=("seqeval",),
    card_example="My name is Wolfgang and I live in Berlin",
    card_use="Tags each word of a text with one of {n_labels} entity types ({labels}; IOB2 tags, a word's tag on "
             "its first subword).",
    predicts_labels=True,
    analysis_metric="accuracy", analysis_worst="most_wrong_entities",
    verify_measure="tag agreement (first subwords)", verify_metrics="entities",
    onnx_class="tuneforge.deploy.onnx:OnnxClassifier",
    windows=True,
    notes={"learning_rate": "token_classification default when null: by encoder width, as classification (1e-4 up "
                            "to hidden size 512, 3e-5 up to 768, 1.5e-5 above)",
           "stride": "token_classification default when null: a quarter of max_length (docs/token-classification.md)",
           "metric_for_best_model": "token_classification default: f1 (entity-level, seqeval strict IOB2)",
           "baselines": "token_classification: each word's most frequent training tag (seconds)"},
))

register_task(TaskSpec(
    name="question_answering",
    summary="Extractive question answering (SQuAD v1.1/v2.0) with any AutoModelForQuestionAnswering; long contexts "
            "in overlapping windows, a no-answer threshold tuned on validation.",
    factory="tuneforge.tasks.question_answering:QuestionAnsweringTask",
    defaults={"training": {"learning_rate": None, "num_train_epochs": 3.0, "warmup_steps": 0.1,
                           "weight_decay": 0.01, "lr_scheduler_type": "linear", "max_grad_norm": 1.0,
                           "metric_for_best_model": "f1"}},
    metrics=("loss", "f1", "exact_match", "HasAns_f1", "HasAns_exact_match", "NoAns_f1", "NoAns_exact_match"),
    config_keys={"data": ("question_column", "context_column", "answers_column", "max_length", "stride",
                          "max_answer_length", "n_best_size")},
    baseline="tuneforge.evaluate.qa_baselines:question_answering",
    lora_task_type="QUESTION_ANS",
    pipeline_tag="question-answering", card_metrics=("squad_v2",),
    card_use="Answers a question with a span of the context given with it (extractive); trained on data with "
             "unanswerable questions (SQuAD v2) it also abstains, by the no-answer threshold tuned on validation.",
    card_usage='import tuneforge\n\nmodel = tuneforge.load("<path of {name}>")\n'
               'model.predict(["Who wrote it?"], pairs=["It was written by Ada."])\n'
               "# [{{'answer': 'Ada', 'start': 18, 'end': 21, 'score': ...}}]",
    input_keys=("question_column", "context_column"),
    analysis_metric="f1", analysis_worst="lowest_f1",
    verify_measure="start/end token agreement", verify_metrics="answers",
    onnx_class="tuneforge.deploy.onnx:OnnxQuestionAnswering",
    windows=True, config_metrics=("null_score_diff_threshold",),
    notes={"learning_rate": "question_answering default when null: by encoder width, as classification (1e-4 up "
                            "to hidden size 512, 3e-5 up to 768, 1.5e-5 above)",
           "stride": "question_answering default when null: a quarter of max_length (96 at 384)",
           "max_length": "question_answering default when null: the model's limit, at most 384 (run_qa.py)",
           "metric_for_best_model": "question_answering default: f1 (SQuAD; on v2 data at the no-answer threshold "
                                    "tuned on validation)",
           "baselines": "question_answering: sliding-window word overlap, first sentence, and no answer (v2 data)"},
))

__all__ = ["GENERATION_KEYS", "Task", "TaskBase", "TaskSpec", "Verb", "all_specs", "get_spec", "get_task",
           "key_applies", "load_declared", "register_task", "spec_with_verb", "task_names", "tasks_using"]
