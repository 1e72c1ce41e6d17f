"""Data layer: read files and hub datasets, validate and clean, split, tokenize once into cached arrays.

>>> from tuneforge.data.readers import FORMATS
>>> sorted(FORMATS)[:3]
['.conll', '.csv', '.json']
"""
