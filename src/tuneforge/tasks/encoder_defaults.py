"""Fine-tuning defaults of the encoder tasks (classification, token classification, question answering), measured
on the real-data benchmark (docs/QUALITY.md): the learning rate by encoder width, the new head's rate, label
smoothing and the training budget.

>>> from types import SimpleNamespace
>>> learning_rate_for(SimpleNamespace(hidden_size=384))[0], training_budget(500, 16)[0], HEAD_LR_FACTOR
(0.0001, 6.0, 10.0)
"""

from __future__ import annotations

from typing import Any

# Learning rate by encoder width (hidden size): a small encoder (all-MiniLM-L6-v2, 384) fine-tuned far better at
# 1e-4 than at the old 2e-5 on every benchmark set measured (docs/QUALITY.md); base (768) and large (1024+) widths
# follow the published grids, which the benchmark cannot test offline (no such checkpoint here): ELECTRA (Clark
# et al. 2020) uses 3e-4 / 1e-4 / 5e-5 for small / base / large, BERT (Devlin et al. 2019) searches 2e-5..5e-5
# for base, RoBERTa (Liu et al. 2019) 1e-5..3e-5. The step between widths is why a rule, not one rate: the old
# 2e-5 suits a large encoder and starves a small one.
LEARNING_RATES = ((512, 1e-4, "encoder width <= 512"), (768, 3e-5, "encoder width 513-768"),
                  (None, 1.5e-5, "encoder width > 768"))


# Training budget: small data needs more optimizer steps than 3 epochs give (Mosbach et al. 2021, "On the
# stability of fine-tuning BERT"; Zhang et al. 2021, "Revisiting few-sample BERT fine-tuning"): enough epochs
# for MIN_STEPS optimizer steps, between MIN_EPOCHS and MAX_EPOCHS, over a full schedule (stopping a long linear
# schedule early leaves the learning rate high: docs/QUALITY.md); the best validation checkpoint is the one kept.
MIN_EPOCHS, MAX_EPOCHS, MIN_STEPS = 3, 6, 600


# The new head's learning rate: HEAD_LR_FACTOR x learning_rate in a full fine-tune of classification. The head
# starts from random weights while the encoder only adjusts; a higher rate for it is discriminative fine-tuning
# (ULMFiT, Howard & Ruder 2018). On MiniLM, 1e-3 for the head against 1e-4 for the encoder was measured on all
# seven benchmark sets (docs/QUALITY.md). A factor, not a fixed rate, so that it follows the width rule.
HEAD_LR_FACTOR = 10.0

# Label smoothing of single-label classification's training loss (Szegedy et al. 2016; Muller et al. 2019, "When
# does label smoothing help?"): 0.1, the usual value, raised validation macro-F1 on the strongly imbalanced
# benchmark sets and tied on the large and balanced ones (docs/QUALITY.md, "Label smoothing"); the evaluation
# loss stays the plain one.
LABEL_SMOOTHING = 0.1


def training_budget(rows: int, rows_per_step: int) -> tuple[float, str]:
    """(epochs, why) for `rows` training rows at `rows_per_step` rows per optimizer step."""
    per_epoch = max(1, -(-rows // max(1, rows_per_step)))
    epochs = min(MAX_EPOCHS, max(MIN_EPOCHS, -(-MIN_STEPS // per_epoch)))
    return float(epochs), (f"{per_epoch} steps per epoch: at least {MIN_STEPS} steps, {MIN_EPOCHS} to {MAX_EPOCHS} "
                           "epochs")


def learning_rate_for(model_config: Any) -> tuple[float, str]:
    width = getattr(model_config, "hidden_size", None) or getattr(model_config, "d_model", None) or \
        getattr(model_config, "n_embd", None)
    for limit, lr, why in LEARNING_RATES:
        if limit is None or (width is not None and width <= limit):
            return lr, f"{why} (hidden size {width})" if width else why
    raise AssertionError("unreachable: the last rule has no limit")
