"""Experiment recipes: each imports `sslmd_jax.configs.default` (every field) and overrides a few."""
