"""Strict harness (as optimistix/lineax): float64, strict dtype promotion, no implicit
rank promotion; pytest turns warnings into errors (pyproject.toml)."""

import jax

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")
