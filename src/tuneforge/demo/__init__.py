"""Offline demo: fine-tune the pretrained all-MiniLM-L6-v2 on generated support messages (~1-2 min on 2 CPUs).

>>> from tuneforge.demo import run_demo
>>> run = run_demo()          # doctest: +SKIP
"""

from tuneforge.demo.runner import run_demo

__all__ = ["run_demo"]
