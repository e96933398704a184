"""Tests of gumbax.diagnostics (gradient mean / variance / bias / MSE / SNR / cosine).

Each test can fail:

* Closed form: REINFORCE on one Bernoulli with a linear f (three independent such
  problems, one per gradient coordinate), whose gradient takes two values; its mean,
  variance and fourth central moment, and the law of the cosine with the exact
  gradient, are computed exactly by enumeration. Means are accepted within
  ``z * sigma / sqrt(n)`` and sample variances within ``z * sqrt(Var(s^2))``, with
  ``Var(s^2) = (mu4 - (n-3)/(n-1) sigma^4) / n``, where ``z`` is the two-sided normal
  quantile of ``ALPHA = 1e-6`` Bonferroni-split among a test's checks: a correct
  implementation fails with probability about 1e-6 (normal approximation, n = 1e5).
* Everything else is compared with float64 NumPy on the same samples (materialized
  by vmapping ``grad_fn`` over ``jax.random.split(key, n)``, the keys the library
  uses) at tight tolerance.

XLA:CPU compiles slowly, so tests share grad_fns and shapes (one compiled program
each) and draw one scalar per key where they can.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from gumbax import diagnostics
from gumbax.diagnostics import GradientStats, gradient_statistics

ALPHA = 1e-6
EPS32 = float(np.finfo(np.float32).eps)


def z_bound(num_checks: int) -> float:
  return float(stats.norm.isf(ALPHA / num_checks / 2))


_SAMPLERS = {}  # one compiled sampler per grad_fn


def materialize(grad_fn, key, n):
  """All n samples, drawn with the keys gradient_statistics uses, in float64."""
  sampler = _SAMPLERS.setdefault(grad_fn, jax.jit(jax.vmap(grad_fn)))
  samples = sampler(jax.random.split(key, n))
  return jax.tree.map(lambda x: np.asarray(x, np.float64), samples)


def pytree_grad_fn(key):
  """A non-linear pytree "estimator" with two constant coordinates (0 and 2.5)."""
  # One scalar draw per key: XLA:CPU compiles threefry for (n, d) shapes slowly.
  z = 4.0 * jax.random.uniform(key) - 2.0
  w = jnp.arange(6.0).reshape(2, 3) + jnp.sin(z * jnp.arange(1.0, 7.0)).reshape(2, 3)
  v = jax.nn.softmax(z * jnp.arange(4.0)) ** 2 - 0.1
  return {"encoder": {"w": w, "const": jnp.array([0.0, 2.5])}, "decoder": v}


REFERENCE = {"encoder": {"w": np.arange(6.0).reshape(2, 3) + 0.1,
                         "const": np.array([0.0, 2.0])},
             "decoder": np.array([0.0, 0.05, 0.1, 0.4])}


def flat(tree):
  leaves = [np.asarray(x, np.float64).reshape(-1) for x in jax.tree.leaves(tree)]
  return np.concatenate(leaves) if leaves else np.zeros(0)


def flat_samples(tree):
  return np.concatenate([x.reshape(x.shape[0], -1) for x in jax.tree.leaves(tree)], axis=1)


def assert_stats_close(a: GradientStats, b: GradientStats, rtol=1e-5, atol=1e-6):
  assert a.num_samples == b.num_samples
  for name in ("mean", "variance", "total_variance", "bias", "squared_bias", "mse", "snr",
               "cosine", "standard_error", "coordinate_mse"):
    np.testing.assert_allclose(flat(getattr(a, name)), flat(getattr(b, name)), rtol=rtol,
                               atol=atol, err_msg=name)


# ---- 1. closed form -------------------------------------------------------------


# Three independent problems, one per gradient coordinate: theta, a, c.
PROBLEMS = np.array([(0.3, 2.0, -0.5), (-1.5, -1.0, 3.0), (2.0, 5.0, 0.0)])


def reinforce_grad_fn(key):
  """REINFORCE for d/dtheta E[a b + c], b ~ Bernoulli(sigmoid(theta)), per coordinate."""
  theta, a, c = (jnp.asarray(PROBLEMS[:, i], jnp.float32) for i in range(3))
  p = jax.nn.sigmoid(theta)
  b = (jax.random.uniform(key, (3,)) < p).astype(jnp.float32)
  return (a * b + c) * (b - p)


def test_reinforce_bernoulli_matches_exact_moments():
  theta, a, c = PROBLEMS.T
  p = np.asarray(jax.nn.sigmoid(jnp.asarray(theta, jnp.float32)), np.float64)
  values = np.stack([c * (0 - p), (a + c) * (1 - p)])  # g at b = 0, 1; shape (2, 3)
  probs = np.stack([1 - p, p])
  mu = (probs * values).sum(0)
  var = (probs * (values - mu) ** 2).sum(0)
  mu4 = (probs * (values - mu) ** 4).sum(0)
  # Cosine of the whole gradient with the reference mu: enumerate the 8 joint states.
  states = np.array(list(itertools.product((0, 1), repeat=3)))
  state_probs = np.prod(np.where(states == 1, p, 1 - p), axis=1)
  g = values[states, np.arange(3)]
  cos = g @ mu / (np.linalg.norm(g, axis=1) * np.linalg.norm(mu))
  cos_mean = state_probs @ cos
  cos_var = state_probs @ (cos - cos_mean) ** 2

  n = 100_000
  s = gradient_statistics(reinforce_grad_fn, jax.random.key(7), n, reference=mu)
  z = z_bound(num_checks=7)
  mean_tol = z * np.sqrt(var / n)
  var_tol = z * np.sqrt((mu4 - (n - 3) / (n - 1) * var**2) / n)
  cos_tol = z * np.sqrt(cos_var / n)
  np.testing.assert_array_less(np.abs(np.asarray(s.mean) - mu), mean_tol)
  np.testing.assert_array_less(np.abs(np.asarray(s.variance) - var), var_tol)
  assert abs(float(s.cosine) - cos_mean) <= cos_tol, (float(s.cosine), cos_mean, cos_tol)
  # The bounds are tight enough to catch real errors (a few % of the quantities).
  assert np.all(mean_tol < 0.05 * np.sqrt(var)) and np.all(var_tol < 0.05 * var)
  # Consistency of the derived fields with the checked ones.
  np.testing.assert_allclose(np.asarray(s.standard_error), np.sqrt(np.asarray(s.variance) / n),
                             rtol=1e-6)
  np.testing.assert_allclose(np.asarray(s.bias), np.asarray(s.mean) - mu, rtol=1e-4, atol=1e-7)
  np.testing.assert_allclose(float(s.mse), float(s.squared_bias)
                             + float(s.total_variance) * (n - 1) / n, rtol=1e-4)


# ---- 2. against NumPy on the same samples ----------------------------------------


def numpy_stats(samples, reference):
  n = jax.tree.leaves(samples)[0].shape[0]
  g, r = flat_samples(samples), flat(reference)
  mean = jax.tree.map(lambda x: x.mean(0), samples)
  var = jax.tree.map(lambda x: x.var(0, ddof=1), samples)
  bias = jax.tree.map(lambda m, r: m - r, mean, reference)
  cos = g @ r / (np.linalg.norm(g, axis=1) * np.linalg.norm(r))
  return dict(mean=mean, variance=var, total_variance=flat(var).sum(), bias=bias,
              squared_bias=(flat(bias) ** 2).sum(), mse=((g - r) ** 2).sum(1).mean(),
              coordinate_mse=jax.tree.map(lambda x, r: ((x - r) ** 2).mean(0), samples, reference),
              cosine=cos.mean(), standard_error=jax.tree.map(lambda v: np.sqrt(v / n), var))


def test_matches_numpy_on_same_samples():
  key, n = jax.random.key(3), 300  # 300 = 4 * 64 + 44: a padded, masked tail chunk
  s = gradient_statistics(pytree_grad_fn, key, n, reference=REFERENCE, chunk_size=64)
  want = numpy_stats(materialize(pytree_grad_fn, key, n), REFERENCE)
  for name, value in want.items():
    np.testing.assert_allclose(flat(getattr(s, name)), flat(value), rtol=2e-5, atol=1e-6,
                               err_msg=name)
  mean, std = flat(want["mean"]), np.sqrt(flat(want["variance"]))
  snr = flat(s.snr)
  varying = std > 0
  np.testing.assert_allclose(snr[varying], np.abs(mean[varying]) / std[varying], rtol=1e-4)
  # Constant coordinates: exactly zero variance; SNR 0 for 0/0 and 1/eps for x/0.
  np.testing.assert_array_equal(np.asarray(s.variance["encoder"]["const"]), [0.0, 0.0])
  np.testing.assert_allclose(np.asarray(s.snr["encoder"]["const"]), [0.0, 1 / EPS32], rtol=1e-6)
  assert np.all(np.isfinite(snr))
  np.testing.assert_allclose(float(s.mse), float(s.squared_bias) + float(s.total_variance)
                             * (n - 1) / n, rtol=1e-5)


def test_variance_without_cancellation_when_mean_dominates():
  def grad_fn(key):  # |mean| / std = 1e6
    return 1e4 + 1e-2 * jax.random.normal(key)

  key, n = jax.random.key(11), 20_000
  x = materialize(grad_fn, key, n)
  want = x.var(ddof=1)
  naive = np.mean(x.astype(np.float32) ** 2) - np.mean(x.astype(np.float32)) ** 2
  assert abs(naive - want) > 0.5 * want  # E[x^2] - E[x]^2 in float32 fails
  # chunk_size=7: 2858 chunks, so many merges, and a masked tail.
  s = gradient_statistics(grad_fn, key, n, chunk_size=7, reference=1e4)
  np.testing.assert_allclose(float(s.variance), want, rtol=1e-3)
  np.testing.assert_allclose(float(s.mean), x.mean(), rtol=0, atol=2e-3)
  np.testing.assert_allclose(float(s.coordinate_mse), float(s.mse), rtol=1e-6)
  np.testing.assert_allclose(float(s.mse), ((x - 1e4) ** 2).mean(), rtol=2e-3)
  # And the law: Var(s^2) = 2 sigma^4 / (n - 1) for normal noise, with sigma^2 the
  # noise variance plus that of rounding to float32 near 1e4 (ulp 2^-10: ulp^2 / 12).
  sigma2 = 1e-4 + 2.0**-20 / 12
  assert abs(float(s.variance) - sigma2) <= z_bound(1) * sigma2 * np.sqrt(2 / (n - 1))
  with pytest.raises(TypeError, match="per_group"):
    s.per_group()  # an array gradient has no groups


# ---- 3. chunking -----------------------------------------------------------------


def test_chunk_size_only_changes_rounding():
  key, n = jax.random.key(1), 300  # not a multiple of 7 or 64
  results = [gradient_statistics(pytree_grad_fn, key, n, reference=REFERENCE, chunk_size=c)
             for c in (7, 64, 300, 1000)]  # 1000 is clipped to 300 (same program)
  for other in results[1:]:
    assert_stats_close(results[0], other)


# ---- 4. sharding -----------------------------------------------------------------

# Self-contained (the test module imports scipy and pytest, slow to import).
SHARDED_SCRIPT = textwrap.dedent("""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import Mesh
    jax.config.update("jax_numpy_rank_promotion", "raise")
    from gumbax import diagnostics

    assert jax.local_device_count() == 4, jax.local_devices()

    def grad_fn(key):
      z = 4.0 * jax.random.uniform(key) - 2.0
      return {"a": jnp.sin(z * jnp.arange(1.0, 7.0)).reshape(2, 3), "b": z**2}

    reference = {"a": np.full((2, 3), 0.1), "b": 1.0}
    key, n = jax.random.key(2), 203
    sharded = diagnostics.gradient_statistics(grad_fn, key, n, reference=reference,
                                              chunk_size=10)  # rounded up to 12
    legacy_key = jax.random.key_data(key)  # a legacy uint32 key: the same keys
    single = diagnostics._gradient_statistics(grad_fn, legacy_key, n, reference, 10,
                                              jax.local_devices()[:1])
    for a, b in zip(jax.tree.leaves(sharded), jax.tree.leaves(single)):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    assert sharded.num_samples == n
    # The program really is partitioned: each chunk of 12 samples is split 4 ways.
    ref = diagnostics._check_reference(reference, jax.eval_shape(grad_fn, key))
    mesh = Mesh(np.array(jax.local_devices()), ("samples",))
    hlo = diagnostics._statistics.lower(grad_fn, key, ref, num_samples=n, chunk_size=12,
                                        mesh=mesh).compile().as_text()
    assert "all-reduce" in hlo and "f32[3,2,3]" in hlo, hlo
    print("SHARDED-OK")
""")


def test_sharded_matches_single_device_and_legacy_keys():
  env = dict(os.environ, XLA_FLAGS=os.environ.get("GUMBAX_TEST_XLA_FLAGS", "")
             + " --xla_force_host_platform_device_count=4",
             JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-W", "error", "-c", SHARDED_SCRIPT], env=env,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0 and "SHARDED-OK" in proc.stdout, proc.stderr[-3000:]


# ---- 5. pytrees and groups -------------------------------------------------------


def test_per_group_matches_numpy_and_adds_up():
  key, n = jax.random.key(4), 300
  s = gradient_statistics(pytree_grad_fn, key, n, reference=REFERENCE, chunk_size=64)
  x = materialize(pytree_grad_fn, key, n)
  groups = s.per_group()
  assert set(groups) == {"encoder", "decoder"}
  for name in groups:
    g, r = flat_samples(x[name]), flat(REFERENCE[name])
    np.testing.assert_allclose(float(groups[name]["total_variance"]), g.var(0, ddof=1).sum(),
                               rtol=2e-5)
    np.testing.assert_allclose(float(groups[name]["squared_bias"]),
                               ((g.mean(0) - r) ** 2).sum(), rtol=2e-5)
    np.testing.assert_allclose(float(groups[name]["mse"]), ((g - r) ** 2).sum(1).mean(),
                               rtol=2e-5)
    m = g.mean(0)
    np.testing.assert_allclose(float(groups[name]["mean_norm"]), np.linalg.norm(m), rtol=2e-5)
    np.testing.assert_allclose(float(groups[name]["reference_norm"]), np.linalg.norm(r), rtol=2e-5)
    np.testing.assert_allclose(float(groups[name]["mean_cosine"]),
                               m @ r / (np.linalg.norm(m) * np.linalg.norm(r)), rtol=2e-5)
  for field in ("total_variance", "squared_bias", "mse"):
    np.testing.assert_allclose(sum(float(v[field]) for v in groups.values()),
                               float(getattr(s, field)), rtol=1e-5)


def test_per_group_mean_cosine_of_a_zero_mean_is_zero():
  # Group "a" is 0 in every sample: its mean has norm 0, so its mean_cosine is 0.
  grad_fn = lambda k: {"a": jnp.zeros(3), "b": jax.random.normal(k, (2,)) + jnp.array([1.0, -1.0])}
  s = gradient_statistics(grad_fn, jax.random.key(1), 64,
                          reference={"a": np.ones(3), "b": np.array([2.0, -2.0])})
  groups = s.per_group()
  assert float(groups["a"]["mean_norm"]) == 0.0 and float(groups["a"]["mean_cosine"]) == 0.0
  np.testing.assert_allclose(float(groups["a"]["reference_norm"]), np.sqrt(3.0), rtol=1e-6)
  assert 0.5 < float(groups["b"]["mean_cosine"]) <= 1.0  # mean near (1, -1), reference (2, -2)


# ---- 6. jit, vmap, scale ---------------------------------------------------------


def test_under_jit_and_vmap():
  # One outer program (compiling is the slow part): jit of vmap over keys, with a
  # traced reference; compared with eager calls on each key.
  fn = lambda k, r: gradient_statistics(pytree_grad_fn, k, 300, reference=r, chunk_size=64)
  keys = jax.random.split(jax.random.key(9), 3)
  batched = jax.jit(jax.vmap(fn, in_axes=(0, None)))(keys, REFERENCE)
  assert isinstance(batched, GradientStats) and batched.num_samples == 300
  assert batched.variance["decoder"].shape == (3, 4)
  for i in range(3):
    assert_stats_close(jax.tree.map(lambda x: x[i], batched), fn(keys[i], REFERENCE))


def test_many_samples_bounded_memory():
  def grad_fn(key):  # a 64-coordinate gradient from one normal draw per key
    z = jax.random.normal(key)
    return {"encoder": z * jnp.arange(1.0, 33.0), "decoder": z * jnp.arange(33.0, 65.0)}

  key, n = jax.random.key(0), 200_000
  compiled = diagnostics._statistics.lower(grad_fn, key, None, num_samples=n, chunk_size=1024,
                                           mesh=None).compile()
  s = compiled(key, None)  # what gradient_statistics(grad_fn, key, n) runs
  assert_stats_close(s, gradient_statistics(grad_fn, key, n, chunk_size=1024), rtol=0, atol=0)
  # All coordinates are multiples of one N(0, 1) draw.
  scale = flat({"encoder": np.arange(1.0, 33.0), "decoder": np.arange(33.0, 65.0)})
  z = z_bound(2)
  assert np.all(np.abs(flat(s.mean) / scale) <= z / np.sqrt(n))
  assert np.all(np.abs(flat(s.variance) / scale**2 - 1) <= z * np.sqrt(2 / (n - 1)))
  groups = s.per_group()  # without a reference: variances and the mean's norm only
  assert groups["decoder"]["mse"] is None and groups["encoder"]["squared_bias"] is None
  assert groups["encoder"]["mean_cosine"] is None and groups["encoder"]["reference_norm"] is None
  np.testing.assert_allclose(float(groups["encoder"]["mean_norm"]),
                             np.linalg.norm(flat(s.mean["encoder"])), rtol=1e-6)
  np.testing.assert_allclose(float(groups["encoder"]["total_variance"]),
                             float(np.sum(s.variance["encoder"])), rtol=1e-6)
  # Storing the samples would take n * 64 * 4 bytes = 51 MB (chunk_size=n needs 52 MB
  # of scratch); with chunks it is about 3 MB (the keys are 1.6 MB of it).
  assert compiled.memory_analysis().temp_size_in_bytes < 8 * 2**20


# ---- 7. errors -------------------------------------------------------------------


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(num_samples=1), ValueError, r"`num_samples` must be an int >= 2; got 1"),
    (dict(num_samples=2.5), TypeError, r"`num_samples` must be an int >= 2; got 2.5 of type float"),
    (dict(num_samples=True), TypeError, r"`num_samples`"),
    (dict(chunk_size=0), ValueError, r"`chunk_size` must be an int >= 1; got 0"),
    (dict(reference=[0.0, 0.0]), ValueError, r"`reference` must have the structure"),
    (dict(reference={"a": np.zeros(3), "b": 0.0}), ValueError,
     r"`reference` leaf \['a'\] must have the gradient's shape \(2,\); got \(3,\)"),
    (dict(key=jax.random.split(jax.random.key(0), 2)), ValueError, r"single PRNG key"),
])
def test_bad_inputs(kwargs, error, match):
  args = dict(grad_fn=lambda k: {"a": jax.random.normal(k, (2,)), "b": jnp.float32(1.0)},
              key=jax.random.key(0), num_samples=10)
  args.update(kwargs)
  with pytest.raises(error, match=match):
    gradient_statistics(**args)


# ---- 8. per-sample gradients through a shared encoder, vectorized statistics ------

# A small VAE-like model: an MLP encoder to (3, 2, 4) logits, a relaxed sample, a
# non-linear decoder with two parameter leaves. The noise is a function of one
# normal draw per key (XLA:CPU compiles threefry for (n, d) shapes slowly).
_X = np.linspace(-1.0, 1.0, 15, dtype=np.float32).reshape(3, 5)
ENC_PARAMS = {"w": jnp.asarray(np.sin(np.arange(40.0)).reshape(5, 8), jnp.float32),
              "b": jnp.asarray(np.linspace(-0.5, 0.5, 8), jnp.float32)}
HEAD_PARAMS = {"v": jnp.asarray(np.cos(np.arange(24.0)).reshape(8, 3), jnp.float32),
               "c": jnp.float32(0.3)}


def toy_encoder(p):
  return jnp.tanh(_X @ p["w"] + p["b"][None]).reshape(3, 2, 4) * 2.0


def toy_head(key, logits, p):
  noise = jnp.sin(jax.random.normal(key) * jnp.arange(1.0, 25.0)).reshape(3, 2, 4)
  y = jax.nn.softmax((logits + noise) / 0.7)
  return jnp.mean(jnp.sin(y.reshape(3, 8) @ p["v"]) ** 2) + p["c"] * jnp.sum(logits**2)


@jax.jit
def naive_per_sample(enc_params, head_params, keys):
  full = lambda ep, hp, k: toy_head(k, toy_encoder(ep), hp)
  return jax.vmap(jax.grad(full, argnums=(0, 1)), in_axes=(None, None, 0))(
      enc_params, head_params, keys)


def assert_trees_close(a, b, rtol=1e-5, atol=1e-6):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assert x.shape == y.shape
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


@pytest.mark.parametrize("mode", ["auto", "vmap", "map"])
def test_per_sample_gradients_match_naive(mode):
  keys = jax.random.split(jax.random.key(5), 6)
  got = jax.jit(lambda e, h, k: diagnostics.per_sample_gradients(
      toy_encoder, toy_head, e, h, k, encoder_vjp=mode))(ENC_PARAMS, HEAD_PARAMS, keys)
  want = naive_per_sample(ENC_PARAMS, HEAD_PARAMS, keys)
  assert got[0]["w"].shape == (6, 5, 8) and got[1]["c"].shape == (6,)
  assert_trees_close(got, want)
  # The samples differ (the noise matters), so equality is not trivial.
  assert np.ptp(np.asarray(got[0]["w"]), axis=0).max() > 1e-3
  # Legacy uint32 keys: the same keys, the same gradients.
  legacy = diagnostics.per_sample_gradients(toy_encoder, toy_head, ENC_PARAMS, HEAD_PARAMS,
                                            jax.random.key_data(keys), encoder_vjp=mode)
  assert_trees_close(legacy, want)


def test_per_sample_gradients_under_vmap_and_without_head_params():
  keys = jax.random.split(jax.random.key(6), 4)
  scales = jnp.array([1.0, -0.5])

  def run(scale):
    hp = jax.tree.map(lambda t: t * scale, HEAD_PARAMS)
    return diagnostics.per_sample_gradients(toy_encoder, toy_head, ENC_PARAMS, hp, keys)

  batched = jax.jit(jax.vmap(run))(scales)
  for i, scale in enumerate(np.asarray(scales)):
    hp = jax.tree.map(lambda t: t * scale, HEAD_PARAMS)
    assert_trees_close(jax.tree.map(lambda t: t[i], batched),
                       naive_per_sample(ENC_PARAMS, hp, keys))
  # Head parameters closed over: only the encoder's gradients, and the same ones.
  head = lambda k, logits, _: toy_head(k, logits, HEAD_PARAMS)
  enc_only, none = jax.jit(lambda k: diagnostics.per_sample_gradients(
      toy_encoder, head, ENC_PARAMS, (), k))(keys)
  assert none == ()
  assert_trees_close(enc_only, naive_per_sample(ENC_PARAMS, HEAD_PARAMS, keys)[0])


def test_vectorized_statistics_match_per_key_statistics():
  key, n = jax.random.key(7), 50  # 50 = 3 * 16 + 2: a padded, masked tail chunk

  def batch_fn(keys):
    return diagnostics.per_sample_gradients(toy_encoder, toy_head, ENC_PARAMS, HEAD_PARAMS, keys)

  def one_fn(k):
    return jax.tree.map(lambda t: t[0], naive_per_sample(ENC_PARAMS, HEAD_PARAMS, k[None]))

  reference = jax.tree.map(lambda t: jnp.mean(t, 0), naive_per_sample(
      ENC_PARAMS, HEAD_PARAMS, jax.random.split(jax.random.key(8), 8)))
  vec = gradient_statistics(batch_fn, key, n, reference=reference, chunk_size=16,
                            vectorized=True)
  per_key = gradient_statistics(one_fn, key, n, reference=reference, chunk_size=16)
  assert_stats_close(vec, per_key)
  assert float(vec.total_variance) > 0


def test_per_sample_gradient_fn_shares_the_encoder_pass():
  key, n = jax.random.key(7), 10
  calls = []

  def encoder(p):
    calls.append(1)  # counts traces of the encoder
    return toy_encoder(p)

  keys = jax.random.split(jax.random.key(5), 6)
  want = naive_per_sample(ENC_PARAMS, HEAD_PARAMS, keys)
  grad_fn = diagnostics.per_sample_gradient_fn(encoder, toy_head, ENC_PARAMS, HEAD_PARAMS)
  assert len(calls) == 1  # the forward pass ran once, at construction
  assert_trees_close(grad_fn(keys), want)
  assert_trees_close(jax.jit(grad_fn)(keys), want)
  assert_trees_close(jax.jit(jax.vmap(grad_fn))(keys.reshape(2, 3)),
                     jax.tree.map(lambda t: t.reshape(2, 3, *t.shape[1:]), want))
  stats = gradient_statistics(grad_fn, key, n, chunk_size=3, vectorized=True)
  assert len(calls) == 1  # and not once per chunk

  # Under jit: traced once in the outer program, outside the statistics' loop.
  @jax.jit
  def study(e, h):
    fn = diagnostics.per_sample_gradient_fn(encoder, toy_head, e, h)
    return gradient_statistics(fn, key, n, chunk_size=3, vectorized=True)

  assert_stats_close(study(ENC_PARAMS, HEAD_PARAMS), stats)
  assert len(calls) == 2
  with pytest.raises(ValueError, match=r"`encoder_vjp` must be one of"):
    diagnostics.per_sample_gradient_fn(toy_encoder, toy_head, ENC_PARAMS, HEAD_PARAMS,
                                       encoder_vjp="scan")
  with pytest.raises(ValueError, match=r"`keys` must be a batch of PRNG keys"):
    grad_fn(keys[0])


@pytest.mark.parametrize("method", ["auto", "rows", "reduce"])
def test_merge_chunk_methods_agree_with_float64(method):
  k1, k2 = jax.random.split(jax.random.key(9))
  grads = {"w": 3.0 + jax.random.normal(k1, (8, 3, 2)), "b": jax.random.normal(k2, (8, 4))}
  shift = jax.tree.map(lambda g: g[0], grads)
  reference = jax.tree.map(lambda g: jnp.zeros(g.shape[1:]) + 0.5, grads)
  mask = jnp.array([True, True, True, False, True, True, False, False])  # per chunk of 4
  zeros = jax.tree.map(jnp.zeros_like, shift)

  @jax.jit
  def merged(grads, shift, reference, mask):  # two chunks of 4, from empty moments
    state, count = (zeros, zeros, zeros), jnp.zeros((), jnp.int32)
    for part in (slice(0, 4), slice(4, 8)):
      chunk = jax.tree.map(lambda g: g[part], grads)
      state = diagnostics.merge_chunk(count, *state, chunk, shift, reference, mask[part],
                                       method)
      count = count + jnp.sum(mask[part], dtype=jnp.int32)
    return state

  mean, m2, sq = merged(grads, shift, reference, mask)
  _, _, none = diagnostics.merge_chunk(jnp.zeros((), jnp.int32), zeros, zeros, None, grads,
                                        shift, None, mask, method)
  assert none is None
  keep = np.asarray(mask)
  for name in grads:
    g = np.asarray(grads[name], np.float64)[keep]
    d = g - np.asarray(shift[name], np.float64)
    np.testing.assert_allclose(np.asarray(mean[name]), d.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(m2[name]), ((d - d.mean(0)) ** 2).sum(0),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(sq[name]), ((g - 0.5) ** 2).mean(0), rtol=1e-5)


@pytest.mark.parametrize("call,error,match", [
    (lambda keys: diagnostics.per_sample_gradients(None, toy_head, ENC_PARAMS, HEAD_PARAMS, keys),
     TypeError, r"`encoder` must be callable"),
    (lambda keys: diagnostics.per_sample_gradients(toy_encoder, toy_head, ENC_PARAMS, HEAD_PARAMS,
                                                   keys, encoder_vjp="scan"),
     ValueError, r"`encoder_vjp` must be one of \['auto', 'vmap', 'map'\]; got 'scan'"),
    (lambda keys: diagnostics.per_sample_gradients(toy_encoder, toy_head, ENC_PARAMS, HEAD_PARAMS,
                                                   keys[0]),
     ValueError, r"`keys` must be a batch of PRNG keys.*got shape \(\)"),
    (lambda keys: diagnostics.per_sample_gradients(toy_encoder, toy_head, ENC_PARAMS, HEAD_PARAMS,
                                                   jnp.zeros((3, 2), jnp.float32)),
     ValueError, r"`keys` must be a batch of PRNG keys.*float32"),
    (lambda keys: diagnostics.per_sample_gradients(
        toy_encoder, lambda k, l, p: jnp.sum(l, -1), ENC_PARAMS, HEAD_PARAMS, keys),
     ValueError, r"`head` must return one floating-point scalar loss per key; got shape \(3, 2\)"),
    (lambda keys: gradient_statistics(lambda k: jnp.ones((3,)), keys[0], 10, vectorized=True),
     ValueError, r"vectorized=True.*leading axis of size k.*shape \(3,\)"),
    (lambda keys: gradient_statistics(lambda k: jnp.ones((len(k),)), keys[0], 10,
                                      vectorized=1),
     TypeError, r"`vectorized` must be a bool; got 1"),
])
def test_per_sample_bad_inputs(call, error, match):
  with pytest.raises(error, match=match):
    call(jax.random.split(jax.random.key(0), 3))


def test_repeated_calls_do_not_retrace_grad_fn():
  traces = []

  def grad_fn(key):
    traces.append(1)
    return jax.random.normal(key, (2,))

  first = gradient_statistics(grad_fn, jax.random.key(0), 10, chunk_size=4)
  count = len(traces)
  second = gradient_statistics(grad_fn, jax.random.key(0), 10, chunk_size=4)
  assert len(traces) == count  # shapes and program both cached per grad_fn object
  assert_stats_close(first, second, rtol=0, atol=0)
