"""Test configuration: strict rank promotion; every warning is an error (pyproject).

Long statistical runs carry ``@pytest.mark.slow`` and are deselected by default
(``-m "not slow"`` in pyproject); run them with ``pytest -m slow``.
"""

import jax

jax.config.update("jax_numpy_rank_promotion", "raise")
