"""Offline demo: fine-tune the pretrained all-MiniLM-L6-v2 on generated support messages.

>>> from tuneforge.demo import run_demo
>>> run = run_demo()          # doctest: +SKIP  (about 3-5 minutes on 2 CPU cores)
"""

from tuneforge.demo.runner import run_demo

__all__ = ["run_demo"]
