"""Metrics as pure functions over predictions (no model, no torch).

>>> from tuneforge.evaluate.classification import classification_metrics
>>> classification_metrics([0, 1, 1], [0, 1, 0], ["neg", "pos"])["accuracy"]
0.6666666666666666
"""
