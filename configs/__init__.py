"""Experiment configs: `default.py` declares every field; each recipe overrides a few."""
