"""Float32 tolerances for comparing two *different* computations of the same value.

XLA's float32 code differs between CPUs (vector width, FMA contraction, the order of
a reduction), so jit vs eager, vmap vs a loop, a fused formula vs a reference one, or
float32 vs a float64 reference agree only up to rounding.  That rounding is absolute,
not relative: a value computed as a sum (or difference) of terms of magnitude ``S``
carries an error of a few ulps of ``S`` per operation, however small the result is
after cancellation.  A bare ``rtol`` (numpy's default ``atol`` is 0) on such a result
fails on another CPU; these helpers size ``atol`` as ``ulps * eps32 * S`` instead.

Comparisons that are exact by construction (the same jitted function on the same
inputs twice, resume/determinism checks, one-hot or integer outputs) must stay exact:
do not route them through here.
"""

import numpy as np

EPS32 = float(np.finfo(np.float32).eps)  # 2**-23 ~= 1.19e-7


def f32_tol(scale, ulps=16):
  """``ulps * eps32 * S`` with ``S = max |scale|``: the float32 rounding budget of a
  computation whose terms have magnitude ``S`` (``ulps`` ~ the depth of the computation:
  the number of roundings, or log2 of a reduction's length, times a safety factor)."""
  return ulps * EPS32 * float(np.max(np.abs(np.asarray(scale, np.float64))))


def assert_f32_close(actual, desired, scale, ulps=16, rtol=1e-6, err_msg=""):
  """``assert_allclose`` with ``atol = f32_tol(scale, ulps)`` and a modest ``rtol``.

  ``scale`` is the magnitude of the *terms* the value is computed from (e.g. ``|a| + |b|``
  for ``a - b``, or the largest summand of a reduction), not of the result itself."""
  np.testing.assert_allclose(np.asarray(actual), np.asarray(desired), rtol=rtol,
                             atol=f32_tol(scale, ulps), err_msg=err_msg)
