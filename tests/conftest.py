"""Test configuration: strict rank promotion; every warning is an error (pyproject).

Long statistical runs carry ``@pytest.mark.slow`` and are deselected by default
(``-m "not slow"`` in pyproject); run them with ``pytest -m slow``.

XLA compiles for the tests with LLVM's optimization level 0 and its classic
(LLVM IR) fusion emitters (``--xla_backend_optimization_level=0
--xla_cpu_use_fusion_emitters=false``): the default run's small programs spend most
of their time in compilation, which these flags cut by about half. XLA's graph passes
still run; float32 results may differ from an optimized build's in the last bits,
which the tests' tolerances (from float32 eps) allow, and the bit-for-bit tests
compare two computations compiled alike. The flags are also in
``GUMBAX_TEST_XLA_FLAGS``, for subprocesses that set ``XLA_FLAGS`` themselves. Set
``GUMBAX_TEST_XLA_OPTIMIZE=1`` to test XLA's default compilation instead. A jaxlib
that does not know the flags (XLA aborts on unknown ones) runs the tests without them.
"""

import os
import subprocess
import sys

FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"


def _test_xla_flags():
  if os.environ.get("GUMBAX_TEST_XLA_OPTIMIZE") == "1":
    return ""
  if "GUMBAX_TEST_XLA_FLAGS" in os.environ:  # checked by the parent (pytest-xdist's controller)
    return os.environ["GUMBAX_TEST_XLA_FLAGS"]
  probe = subprocess.run(
      [sys.executable, "-c", "import jax.numpy as jnp; jnp.zeros(1).block_until_ready()"],
      env=dict(os.environ, XLA_FLAGS=FAST_COMPILE, JAX_PLATFORMS="cpu"), capture_output=True,
      timeout=300)
  return FAST_COMPILE if probe.returncode == 0 else ""


_flags = _test_xla_flags()
os.environ["GUMBAX_TEST_XLA_FLAGS"] = _flags
_given = os.environ.get("XLA_FLAGS", "")
os.environ["XLA_FLAGS"] = " ".join(
    [_given, *(f for f in _flags.split() if f.split("=")[0] not in _given)]).strip()

import jax  # noqa: E402  (after XLA_FLAGS, which the backend reads when it starts)

jax.config.update("jax_numpy_rank_promotion", "raise")
