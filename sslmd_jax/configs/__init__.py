"""The default config (`default.py`: every field, commented); the recipes in the repository's
`configs/` import it as `from sslmd_jax.configs import default` and override a few fields."""
