"""The one training engine shared by every task (accelerate-based loop, optimizer, checkpoints, logging).

>>> from tuneforge.engine.precision import resolve_mixed_precision
>>> resolve_mixed_precision("auto", "cpu")[0]
'no'
"""
