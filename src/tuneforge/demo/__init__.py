"""Offline demo helpers for tuneforge."""
