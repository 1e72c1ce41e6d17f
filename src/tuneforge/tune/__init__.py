"""Hyperparameter search with Optuna (`tuneforge tune`): the search space syntax (space.py), one trial as an
isolated training process (trial.py), the study (study.py) and its report (report.py). See docs/tune.md.

>>> from tuneforge.tune import tune   # doctest: +SKIP
"""

from tuneforge.tune.study import StudyResult, tune

__all__ = ["StudyResult", "tune"]
