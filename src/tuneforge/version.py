"""The package version, importable without the package face (`tuneforge/__init__.py` re-exports it)."""

__version__ = "0.1.0"
