"""Strict harness (as optimistix/lineax): float64, strict dtype promotion, no implicit
rank promotion; pytest turns warnings into errors (pyproject.toml)."""

import jax
import pytest

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop each module's compiled programs when it ends.  Every XLA CPU executable holds
    memory mappings; the whole suite compiles thousands of programs, which would exhaust
    the kernel's limit (vm.max_map_count, 65 530) in one process and crash XLA."""
    yield
    jax.clear_caches()
