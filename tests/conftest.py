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
that does not know the flags (XLA aborts on unknown ones) runs the tests without them,
and so does a run that selects the slow tests (``-m slow``), which are run-time bound.
"""

import os
import subprocess
import sys

import jax

jax.config.update("jax_numpy_rank_promotion", "raise")

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


def pytest_configure(config):
  """Sets the flags for a run without the slow tests (pyproject's default ``-m "not
  slow"``); a run that selects slow tests, whose long statistical loops are run time
  rather than compilation, keeps XLA's default. Before any test module starts the
  backend."""
  if "not slow" not in (config.getoption("markexpr", "") or ""):
    return
  flags = _test_xla_flags()
  os.environ["GUMBAX_TEST_XLA_FLAGS"] = flags
  given = os.environ.get("XLA_FLAGS", "")
  os.environ["XLA_FLAGS"] = " ".join(
      [given, *(f for f in flags.split() if f.split("=")[0] not in given)]).strip()
