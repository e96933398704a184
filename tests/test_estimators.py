"""Estimators: unbiasedness against exact enumeration, the contract, and errors.

Statistical tests use a false-failure rate of ALPHA = 1e-6 per test: each test
compares every gradient coordinate's Monte Carlo mean with the exact gradient using
the measured standard error and a Bonferroni-corrected normal threshold.
"""


import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import stats

import gumbax
from _tolerance import assert_f32_close
from gumbax import estimators
from gumbax.estimators.score import _input_baseline

ALPHA = 1e-6
UNBIASED = {
    "reinforce": {}, "reinforce_ema": {"baseline": "ema"},
    "reinforce_nvil": {"baseline": "nvil"}, "reinforce_k3": {"num_samples": 3},
    "reinforce_nvilraw": {"baseline": "nvil", "normalize": False},
    "rloo": {"num_samples": 3}, "muprop": {}, "muprop_nvil": {"baseline": "nvil"},
    "rebar": {}, "relax": {},
    "arm": {}, "disarm": {},
}


def make(name, distribution):
  base = name.split("_")[0] if name.startswith(("reinforce", "muprop")) else name
  return estimators.get(base, distribution=distribution, **UNBIASED.get(name, {}))


# Problems: (distribution, logits shape, kind of f). Together they cover K in
# {2, 3, 5}, N in {1, 3}, a batch of 2, and linear, quadratic and MLP losses.
PROBLEMS = {
    "cat_K3_N3_mlp": ("categorical", (2, 3, 3), "mlp"),
    "cat_K5_N1_quadratic": ("categorical", (2, 1, 5), "quadratic"),
    "cat_K2_N3_linear": ("categorical", (2, 3, 2), "linear"),
    "bern_N3_mlp": ("bernoulli", (2, 3), "mlp"),
    "bern_N1_quadratic": ("bernoulli", (2, 1), "quadratic"),
}


def make_problem(name, seed=0):
  """Random logits, decoder parameters and f(b, params) -> one value per example."""
  distribution, shape, kind = PROBLEMS[name]
  keys = jax.random.split(jax.random.key(seed), 4)
  logits = jax.random.normal(keys[0], shape)
  event = shape[1:]
  d = int(np.prod(event))
  if kind == "linear":
    params = {"w": jax.random.normal(keys[1], event)}
    f = lambda b, p: jnp.sum(b * p["w"][None], axis=tuple(range(1, b.ndim)))
  elif kind == "quadratic":
    params = {"w": jax.random.normal(keys[1], event), "t": jax.random.normal(keys[2], event)}
    f = lambda b, p: jnp.sum(p["w"][None] * (b - p["t"][None]) ** 2, axis=tuple(range(1, b.ndim)))
  else:
    params = {"w1": jax.random.normal(keys[1], (d, 8)), "w2": jax.random.normal(keys[2], (8,)),
              "b1": jax.random.normal(keys[3], (8,))}
    f = lambda b, p: jnp.tanh(b.reshape(b.shape[0], -1) @ p["w1"] + p["b1"][None]) @ p["w2"]
  return distribution, logits, params, f


def gradient_fn(est, f, cv):
  """key, logits, params -> gradient of the summed surrogate for (logits, params)."""
  def grads(key, logits, params):
    return jax.grad(lambda l, p: jnp.sum(est(key, l, lambda b: f(b, p), cv)), argnums=(0, 1))(
        logits, params)
  return grads


def assert_mean_matches(samples, exact, label):
  """Every coordinate's Monte Carlo mean is within the Bonferroni normal bound."""
  flat_s = np.concatenate([np.asarray(x, np.float64).reshape(x.shape[0], -1)
                           for x in jax.tree_util.tree_leaves(samples)], axis=1)
  flat_e = np.concatenate([np.asarray(x).ravel() for x in jax.tree_util.tree_leaves(exact)])
  n, d = flat_s.shape
  se = flat_s.std(axis=0, ddof=1) / np.sqrt(n)
  # float32 rounding of the mean, which matters only for near-zero-variance cases
  # (e.g. MuProp on a linear f, whose control variate is exact).
  rounding = 1e-6 + 1e-5 * np.abs(flat_e)
  z = np.maximum(np.abs(flat_s.mean(axis=0) - flat_e) - rounding, 0) / np.maximum(se, 1e-30)
  threshold = stats.norm.isf(ALPHA / (2 * d))
  assert z.max() < threshold, (label, z.max(), threshold, flat_s.mean(axis=0), flat_e)
  return z.max(), threshold


def randomize_cv(cv, key):
  """Arbitrary (untrained) control-variate parameters and state."""
  leaves, tree = jax.tree_util.tree_flatten(cv)
  keys = jax.random.split(key, max(1, len(leaves)))
  return jax.tree_util.tree_unflatten(
      tree, [x + 0.5 * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)])


def sample_gradients(est, problem, num_samples, seed=0):
  distribution, logits, params, f = make_problem(problem, seed)
  cv = randomize_cv(est.init(jax.random.key(5), logits), jax.random.key(6))
  if "state" in cv and "var" in cv["state"]:
    cv["state"]["var"] = jnp.ones(())      # NVIL's scale = 1 keeps the estimate unbiased
  g = jax.jit(jax.vmap(gradient_fn(est, f, cv), in_axes=(0, None, None)))
  keys = jax.random.split(jax.random.key(seed + 100), num_samples)
  exact = gradient_fn(estimators.get("exact", distribution=distribution), f, {})(
      jax.random.key(0), logits, params)
  return g(keys, logits, params), exact


CASES = [(name, problem) for name in UNBIASED for problem in PROBLEMS
         if not (name in ("arm", "disarm") and PROBLEMS[problem][0] == "categorical")]


@pytest.mark.parametrize("name, problem", CASES)
def test_unbiased_estimators_match_exact(name, problem):
  est = make(name, PROBLEMS[problem][0])
  samples, exact = sample_gradients(est, problem, 6000)
  assert_mean_matches(samples, exact, (name, problem))


@pytest.mark.parametrize("name", ["relaxed", "straight_through_gumbel"])
def test_the_mean_test_detects_bias(name):
  """Power control: the same test rejects the (biased) pathwise estimators."""
  est = estimators.get(name, distribution="categorical")
  samples, exact = sample_gradients(est, "cat_K3_N3_mlp", 6000)
  with pytest.raises(AssertionError):
    assert_mean_matches(samples, exact, name)


def test_exact_matches_hand_computation():
  """Two latents with two categories: E[f] and its gradient by hand."""
  logits = jnp.array([[0.3, -0.2], [1.0, 0.5]])
  c = jnp.array([[1.0, 2.0], [-1.0, 3.0]])
  f = lambda b: jnp.prod(jnp.sum(b * c, axis=-1)) * jnp.ones(())   # non-linear, scalar
  est = estimators.get("exact")
  p = np.asarray(jax.nn.softmax(logits))
  values = np.asarray(c)
  expected = sum(p[0, i] * p[1, j] * values[0, i] * values[1, j] for i in range(2) for j in range(2))
  # float32 enumeration against float64 by hand: the values f(b) have both signs (c has
  # a -1) and reach max|c|^2 = 9, so E[f] and its gradient (p (c - m) m') cancel and
  # round at a few ulps of 9, not of the result.
  scale = np.max(np.abs(values)) ** 2
  assert_f32_close(est(jax.random.key(0), logits, f), expected, scale, ulps=8, rtol=1e-6)
  m = (p * values).sum(axis=1)                    # E[c_n . b_n] per latent
  grad = np.stack([p[0] * (values[0] - m[0]) * m[1], p[1] * (values[1] - m[1]) * m[0]])
  assert_f32_close(jax.grad(lambda l: est(jax.random.key(0), l, f))(logits), grad, scale,
                   ulps=8, rtol=1e-5)


def test_gumbel_rao_with_one_sample_is_st_gumbel_bit_for_bit():
  for distribution, shape in (("categorical", (4, 3, 5)), ("bernoulli", (4, 6))):
    logits = jax.random.normal(jax.random.key(1), shape)
    w = jax.random.normal(jax.random.key(2), shape)
    f = lambda b: jnp.sum(jnp.sin(b * w), axis=tuple(range(1, b.ndim)))
    gr = estimators.get("gumbel_rao", num_samples=1, temperature=0.7, distribution=distribution)
    st = estimators.get("straight_through_gumbel", temperature=0.7, distribution=distribution)
    for seed in range(5):
      key = jax.random.key(seed)
      np.testing.assert_array_equal(gr(key, logits, f), st(key, logits, f))
      g1 = jax.grad(lambda l: gr(key, l, f).sum())(logits)
      g2 = jax.grad(lambda l: st(key, l, f).sum())(logits)
      np.testing.assert_array_equal(g1, g2)
    if distribution == "categorical":
      np.testing.assert_array_equal(
          st.sample_with_gradient(key, logits), gumbax.gumbel_softmax(key, logits, 0.7, hard=True))


def test_straight_through_backward_options():
  """The default backward pass is ``gumbax.straight_through``'s (softmax or sigmoid);
  ``backward="identity"`` hands ``f``'s gradient at the sample to the logits, divided
  by the temperature; the forward value is the same exact sample."""
  for distribution, shape in (("categorical", (4, 3, 5)), ("bernoulli", (4, 6))):
    logits = jax.random.normal(jax.random.key(1), shape)
    w = jax.random.normal(jax.random.key(2), shape)
    f = lambda b: jnp.sum(b * w, axis=tuple(range(1, b.ndim)))
    soft = estimators.get("straight_through", temperature=0.7, distribution=distribution)
    ident = estimators.get("straight_through", temperature=0.7, backward="identity",
                           distribution=distribution)
    key = jax.random.key(3)
    np.testing.assert_array_equal(ident(key, logits, f), soft(key, logits, f))
    g = jax.grad(lambda l: ident(key, l, f).sum())(logits)
    np.testing.assert_allclose(g, w / 0.7, rtol=1e-6)
    g_soft = jax.grad(lambda l: soft(key, l, f).sum())(logits)
    if distribution == "categorical":
      np.testing.assert_array_equal(
          soft.sample_with_gradient(key, logits),
          gumbax.straight_through(key, logits, temperature=0.7))
      expected = jax.grad(lambda l: jnp.sum(jax.nn.softmax(l / 0.7) * w))(logits)
    else:
      expected = jax.grad(lambda l: jnp.sum(jax.nn.sigmoid(l / 0.7) * w))(logits)
    # gumbax's custom JVP against jax.nn's: the softmax one, y (w - sum y w) / tau,
    # cancels where y ~ 1, so its rounding is ~eps32 * max|w| / tau (atol was 1e-7).
    assert_f32_close(g_soft, expected, np.max(np.abs(w)) / 0.7, ulps=16, rtol=1e-5)
    # Under jit and vmap the identity estimator gives the eager values.
    keys = jax.random.split(key, 3)
    batched = jax.jit(jax.vmap(lambda k: jax.grad(lambda l: ident(k, l, f).sum())(logits)))(keys)
    np.testing.assert_allclose(batched, jnp.broadcast_to(w / 0.7, (3,) + shape), rtol=1e-6)


def _variance(est, logits, f, cv, n=4000, seed=0):
  g = jax.jit(jax.vmap(lambda k: jax.grad(lambda l: est(k, l, f, cv).sum())(logits)))
  samples = g(jax.random.split(jax.random.key(seed), n))
  return float(samples.var(axis=0, ddof=1).sum()), samples


def test_gumbel_rao_variance_does_not_increase_with_k():
  logits = jax.random.normal(jax.random.key(0), (1, 2, 4))
  w = jax.random.normal(jax.random.key(1), (2, 4))
  f = lambda b: jnp.sum(jnp.tanh(2 * b * w[None]), axis=(1, 2)) ** 2
  variances = [
      _variance(estimators.get("gumbel_rao", num_samples=k, temperature=0.5), logits, f, {},
                n=2000)[0]
      for k in (1, 10, 100)]
  # Measured: the variance shrinks severalfold from K=1 to K=100; allow 5% noise
  # between K=10 and K=100, where the decrease flattens.
  assert variances[1] < variances[0] and variances[2] < 1.05 * variances[1], variances


def _train_control_variate(est, logits, f, steps=300, lr=1e-2):
  cv = est.init(jax.random.key(0), logits)
  opt = optax.adam(lr)
  state = opt.init(cv["params"])

  @jax.jit
  def step(cv, state, key):
    keys = jax.random.split(key, 16)
    objective = lambda p: jnp.mean(jax.vmap(
        lambda k: est.variance_loss(k, logits, f, {**cv, "params": p}))(keys))
    updates, state = opt.update(jax.grad(objective)(cv["params"]), state)
    return {**cv, "params": optax.apply_updates(cv["params"], updates)}, state

  for i in range(steps):
    cv, state = step(cv, state, jax.random.key(1000 + i))
  return cv


def test_joint_nvil_baseline_tells_latents_apart():
  """Each example has its own offset in ``f`` (as a VAE's reconstruction depends on
  the image), which a sum of one shared function of each latent's probabilities
  fits poorly and one MLP of all of them can fit. After the same variance training
  the joint network leaves far less gradient variance (measured with these keys:
  9.5 against 531, no baseline 1632; other keys for the logits gave 3x and 56x)."""
  logits = 3.0 * jax.random.normal(jax.random.key(0), (16, 3, 4))
  w = jax.random.normal(jax.random.key(1), (3, 4))
  offset = 10.0 * jax.random.normal(jax.random.key(2), (16,))
  f = lambda b: jnp.sum(b * w[None], axis=(1, 2)) + offset
  variances = {}
  for network in ("per_latent", "joint"):
    est = estimators.get("reinforce", baseline="nvil", network=network, normalize=False)
    cv = _train_control_variate(est, logits, f)
    variances[network] = _variance(est, logits, f, cv, n=2000)[0]
  assert variances["joint"] < 0.2 * variances["per_latent"], variances
  # The joint network is one MLP of the flattened probabilities of each example.
  est = estimators.get("muprop", baseline="nvil", network="joint", hidden=5)
  params = est.init(jax.random.key(2), logits)["params"]["network"]
  assert params["w1"].shape == (12, 5)
  params = {**params, "w2": jax.random.normal(jax.random.key(3), (5,))}
  probs = jax.nn.softmax(logits).reshape(16, 12)
  hidden = jnp.tanh(probs @ params["w1"] + params["b1"][None])
  by_hand = hidden @ params["w2"] + params["b2"]
  # Two float32 evaluations of an MLP: the output sums h_j w2_j of both signs, so it
  # rounds at ~eps32 * (sum |h_j w2_j| + |b2|) (a few units here; atol was 1e-6).
  scale = np.abs(hidden) @ np.abs(params["w2"]) + np.abs(params["b2"])
  assert_f32_close(_input_baseline(est, {"network": params}, logits, 1), by_hand, scale,
                   ulps=16, rtol=1e-5)


def test_variance_training_on_the_toy_problem():
  """Toy problem E[(b - 0.45)^2] at theta = 0, 300 variance-objective steps.

  REINFORCE's variance is known exactly: g = f(b) (b - 1/2) takes two values.
  Measured (20000 keys): RELAX drops to about 2e-5 (REINFORCE: 0.0159), because
  its network learns the constant baseline near 0.25 that this problem needs.
  REBAR starts above REINFORCE (0.0224 at eta=1, lambda=0.5) and training brings
  it down to REINFORCE's level (0.0160, eta -> 0.13) but not below: eta f(sigma(z))
  takes values in [0, 0.3 eta] and cannot track f(b) in {0.2025, 0.3025} here.
  Bounds: each variance is estimated from 20000 samples with a relative standard
  error under 2%, so the margins below are over 5 standard errors (false-failure
  rate under 1e-6).
  """
  logits = jnp.array([0.0])
  f = lambda b: jnp.sum((b - 0.45) ** 2, axis=-1)
  g = np.array([0.2025 * -0.5, 0.3025 * 0.5])         # b = 0, 1 with probability 1/2
  var_reinforce = float(np.mean(g ** 2) - np.mean(g) ** 2)
  measured, _ = _variance(estimators.get("reinforce", distribution="bernoulli"), logits, f, {},
                          n=20000)
  assert abs(measured / var_reinforce - 1) < 0.1
  rebar = estimators.get("rebar", distribution="bernoulli")
  var_init, _ = _variance(rebar, logits, f, rebar.init(jax.random.key(0), logits), n=20000)
  var_rebar, _ = _variance(rebar, logits, f, _train_control_variate(rebar, logits, f), n=20000)
  assert var_rebar < 0.85 * var_init, (var_rebar, var_init)          # the objective works
  assert var_rebar < 1.1 * var_reinforce, (var_rebar, var_reinforce)  # back to REINFORCE
  relax = estimators.get("relax", distribution="bernoulli")
  var_relax, _ = _variance(relax, logits, f, _train_control_variate(relax, logits, f), n=20000)
  assert var_relax < 0.01 * var_reinforce, (var_relax, var_reinforce)


def test_muprop_baseline_removes_the_taylor_residual_on_the_toy_problem():
  """Toy problem E[(b - 0.45)^2] at theta = 0: MuProp's residual is a constant.

  The Taylor expansion at mu = 1/2 is 0.0025 + 0.1 (b - 1/2), so f(b) - fbar(b) =
  0.25 for both b, and MuProp's estimate g = 0.25 (b - 1/2) + 0.025 has variance
  1/64 exactly. A learned baseline that reaches 0.25 removes all of it. Measured
  (20000 keys, 300 variance-objective steps): 2.3e-5 with the baseline, 0.15% of
  it. The variances are estimated from 20000 samples with a relative standard error
  under 2%, so the bounds are over 5 standard errors away (false-failure rate under
  1e-6).
  """
  logits = jnp.array([0.0])
  f = lambda b: jnp.sum((b - 0.45) ** 2, axis=-1)
  plain = estimators.get("muprop", distribution="bernoulli")
  var_plain, _ = _variance(plain, logits, f, {}, n=20000)
  assert abs(var_plain * 64 - 1) < 0.1, var_plain
  learned = estimators.get("muprop", baseline="nvil", distribution="bernoulli")
  cv = learned.init(jax.random.key(0), logits)
  var_init, _ = _variance(learned, logits, f, cv, n=20000)
  assert abs(var_init / var_plain - 1) < 0.1          # the network's output starts at zero
  var_trained, _ = _variance(learned, logits, f, _train_control_variate(learned, logits, f),
                             n=20000)
  assert var_trained < 0.01 * var_plain, (var_trained, var_plain)


def test_muprop_mean_field_loss():
  """MuProp expands around ``MeanFieldLoss.mean_field``; any such function is unbiased."""
  distribution, logits, params, f = make_problem("cat_K3_N3_mlp")
  exact = gradient_fn(estimators.get("exact"), f, {})(jax.random.key(0), logits, params)
  # A deliberately different expansion function still gives an unbiased estimate.
  other = lambda b, p: 0.5 * f(b, p) + jnp.sum(b[..., 0], axis=-1)
  loss = lambda p: estimators.MeanFieldLoss(lambda b: f(b, p), lambda b: other(b, p))
  est = estimators.get("muprop")

  def grads(key):
    return jax.grad(lambda l, p: jnp.sum(est(key, l, loss(p))), argnums=(0, 1))(logits, params)

  samples = jax.jit(jax.vmap(grads))(jax.random.split(jax.random.key(7), 6000))
  assert_mean_matches(samples, exact, "muprop, MeanFieldLoss")
  # With mean_field == f it is plain MuProp, bit for bit; mean_field=False ignores it.
  key = jax.random.key(3)
  plain = jax.grad(lambda l: jnp.sum(est(key, l, lambda b: f(b, params))))(logits)
  same = jax.grad(lambda l: jnp.sum(est(key, l, estimators.MeanFieldLoss(
      lambda b: f(b, params), lambda b: f(b, params)))))(logits)
  np.testing.assert_array_equal(plain, same)
  off = estimators.get("muprop", mean_field=False)
  ignored = jax.grad(lambda l: jnp.sum(off(key, l, loss(params))))(logits)
  np.testing.assert_array_equal(plain, ignored)
  used = jax.grad(lambda l: jnp.sum(est(key, l, loss(params))))(logits)
  assert not np.allclose(plain, used)


def test_variance_objective_gradient_matches_finite_differences():
  """E[d g^2 / d phi] equals the derivative of the sample mean of g^2 (common keys)."""
  logits = jax.random.normal(jax.random.key(0), (2, 3, 3))
  w = jax.random.normal(jax.random.key(1), (3, 3))
  f = lambda b: jnp.sum(jnp.tanh(b * w[None]), axis=(1, 2)) ** 2
  est = estimators.get("rebar")
  cv = est.init(jax.random.key(0), logits)
  keys = jax.random.split(jax.random.key(3), 2000)

  with jax.enable_x64(True):
    l64 = logits.astype(jnp.float64)
    cv64 = jax.tree_util.tree_map(lambda x: x.astype(jnp.float64), cv)

    def mean_square(params):
      return jnp.mean(jax.vmap(lambda k: est.variance_loss(k, l64, f, {**cv64, "params": params}))(keys))

    # Compiled once each (not op by op over 2000 keys): the value at the four
    # displaced points and the gradient.
    analytic = jax.jit(jax.grad(mean_square))(cv64["params"])
    mean_square = jax.jit(mean_square)
    for name in ("eta", "log_temperature"):
      h = 1e-4
      up = dict(cv64["params"], **{name: cv64["params"][name] + h})
      down = dict(cv64["params"], **{name: cv64["params"][name] - h})
      numeric = (mean_square(up) - mean_square(down)) / (2 * h)
      np.testing.assert_allclose(analytic[name], numeric, rtol=1e-4)
  # Its expectation is d Var / d phi: the mean gradient does not move with phi.
  assert abs(float(analytic["eta"])) > 0


def test_value_and_grads_trains_model_and_control_variate():
  _, logits0, params, f = make_problem("bern_N3_mlp")
  model = lambda p: (p["logits"], lambda b: f(b, p["dec"]))
  all_params = {"logits": logits0, "dec": params}
  est = estimators.get("relax", distribution="bernoulli")
  cv = est.init(jax.random.key(0), logits0)
  out = jax.jit(lambda k, p, c: estimators.value_and_grads(est, k, model, p, c))(
      jax.random.key(1), all_params, cv)
  assert jax.tree_util.tree_structure(out.grads) == jax.tree_util.tree_structure(all_params)
  assert jax.tree_util.tree_structure(out.cv_grads) == jax.tree_util.tree_structure(cv["params"])
  assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree_util.tree_leaves(out))
  assert float(jnp.abs(out.cv_grads["eta"])) > 0
  # An EMA baseline's state advances with the loss.
  ema = estimators.get("reinforce", baseline="ema", decay=0.5, distribution="bernoulli")
  cv = ema.init(jax.random.key(0), logits0)
  out = estimators.value_and_grads(ema, jax.random.key(1), model, all_params, cv)
  np.testing.assert_allclose(out.cv["state"]["mean"], 0.5 * out.loss, rtol=1e-6)
  assert out.cv_grads == {}


@pytest.mark.parametrize("name", estimators.names())
def test_every_estimator_under_jit_and_vmap_without_retracing(name):
  distribution = "bernoulli" if name in ("arm", "disarm") else "categorical"
  _, logits, params, f = make_problem("bern_N3_mlp" if distribution == "bernoulli"
                                      else "cat_K3_N3_mlp")
  extra = {"num_samples": 3} if name == "gumbel_rao" else {}
  est = estimators.get(name, distribution=distribution, **extra)
  cv = est.init(jax.random.key(0), logits)
  traces = []

  def value(key, l):
    traces.append(1)
    return est(key, l, lambda b: f(b, params), cv)

  jitted = jax.jit(value)
  eager = value(jax.random.key(1), logits)
  assert eager.shape == (2,)
  # jit against eager float32: the value is f(b) of a small MLP, O(1) terms of both
  # signs, so atol is ulps of 1 + |value| rather than a fixed 1e-6 (~8 ulps of 1).
  assert_f32_close(jitted(jax.random.key(1), logits), eager, 1 + np.abs(eager), ulps=16,
                   rtol=1e-5)
  jitted(jax.random.key(2), logits)
  assert len(traces) == 2       # one eager call, one trace for both jitted keys
  batched = jax.vmap(value, in_axes=(0, None))(jax.random.split(jax.random.key(3), 3), logits)
  assert batched.shape == (3, 2)
  grads = jax.jit(jax.grad(lambda l: value(jax.random.key(4), l).sum()))(logits)
  assert grads.shape == logits.shape and bool(jnp.all(jnp.isfinite(grads)))


def test_registry_documents_every_estimator():
  for name in estimators.names():
    cls = type(estimators.get(name, distribution="bernoulli" if name in ("arm", "disarm")
                              else "categorical"))
    doc = cls.__doc__
    assert "References:" in doc and ("Unbiased" in doc or "Biased" in doc or "biased" in doc), name
    assert cls.reference and cls.evaluations, name


# ----------------------------------------------------------------------------
# Bad input.

def _f(b):
  return jnp.sum(b, axis=tuple(range(1, b.ndim)))


@pytest.mark.parametrize("call, exc, words", [
    (lambda: estimators.get("reinforc"), ValueError, ["reinforc", "rloo", "disarm"]),
    (lambda: estimators.get("rloo", num_sample=3), TypeError, ["num_sample", "num_samples"]),
    (lambda: estimators.get("rloo", num_samples=1), ValueError, ["num_samples", ">= 2", "1"]),
    (lambda: estimators.get("arm"), None, []),
    (lambda: estimators.get("arm", distribution="categorical"), ValueError,
     ["arm", "bernoulli", "categorical"]),
    (lambda: estimators.get("relaxed", distribution="gaussian"), ValueError, ["gaussian"]),
    (lambda: estimators.get("relaxed", temperature=0.0), ValueError, ["temperature"]),
    (lambda: estimators.get("straight_through", backward="linear"), ValueError,
     ["backward", "softmax", "identity", "linear"]),
    (lambda: estimators.get("reinforce", baseline="mean"), ValueError, ["baseline", "nvil"]),
    (lambda: estimators.get("muprop", baseline="ema"), ValueError, ["baseline", "none", "nvil"]),
    (lambda: estimators.get("muprop", mean_field="yes"), TypeError, ["mean_field", "bool"]),
    (lambda: estimators.MeanFieldLoss(_f, 3), TypeError, ["mean_field", "callable"]),
    (lambda: estimators.get("muprop", baseline="nvil", hidden=0), ValueError, ["hidden", ">= 1"]),
    (lambda: estimators.get("reinforce", baseline="nvil", network="full"), ValueError,
     ["network", "per_latent", "joint", "full"]),
    (lambda: (lambda e: e(jax.random.key(0), jnp.zeros((2, 3, 4)), _f,
                          e.init(jax.random.key(0), jnp.zeros((2, 5, 4)))))(
        estimators.get("reinforce", baseline="nvil", network="joint")),
     ValueError, ["20 inputs", "12", "leading batch axis"]),
    (lambda: estimators.get("muprop", baseline="nvil")(jax.random.key(0), jnp.zeros((2, 3, 4)),
                                                       _f), ValueError, ["control variate"]),
    (lambda: estimators.get("reinforce", baseline="nvil", normalize="no"), TypeError,
     ["normalize", "bool"]),
    (lambda: estimators.get("exact")(jax.random.key(0), jnp.zeros((2, 20, 10)), _f),
     ValueError, ["10^20", "max_configurations"]),
    (lambda: estimators.get("rloo")(jax.random.key(0), jnp.zeros((2, 3, 4)), lambda b: b),
     ValueError, ["prefix", "(2, 3, 4)"]),
    (lambda: estimators.get("relaxed")(jax.random.key(0), jnp.zeros((2, 3, 4)),
                                       lambda b: jnp.sum(b, axis=1)),
     ValueError, ["prefix", "(2, 4)"]),
    (lambda: estimators.get("relaxed")(jax.random.key(0), jnp.zeros(4, jnp.int32), _f),
     TypeError, ["logits", "int32"]),
    (lambda: estimators.get("rebar")(jax.random.key(0), jnp.zeros((2, 3, 4)), _f), ValueError,
     ["rebar", "est.init(key, logits)"]),
    (lambda: estimators.get("reinforce", baseline="nvil")(jax.random.key(0), jnp.zeros((2, 3, 4)),
                                                          _f), ValueError, ["control variate"]),
])
def test_bad_input_errors(call, exc, words):
  if exc is None:
    assert call().distribution == "bernoulli"    # Bernoulli-only estimators default to it
    return
  with pytest.raises(exc) as info:
    call()
  for word in words:
    assert word in str(info.value), (word, str(info.value))


def test_estimator_statistics_with_exact_reference():
  """REINFORCE on one Bernoulli with f(b) = 3b + 1: closed-form mean and variance."""
  logits = jnp.array([0.4])
  f = lambda b: jnp.sum(3.0 * b + 1.0, axis=-1)
  p = float(jax.nn.sigmoid(0.4))
  g = np.array([1.0 * (0 - p), 4.0 * (1 - p)])         # f(b) (b - p) for b = 0, 1
  mean = (1 - p) * g[0] + p * g[1]
  var = (1 - p) * g[0] ** 2 + p * g[1] ** 2 - mean ** 2
  est = estimators.get("reinforce", distribution="bernoulli")
  n = 20_000
  out = gumbax.diagnostics.estimator_statistics(est, jax.random.key(0), logits, f, num_samples=n)
  np.testing.assert_allclose(out.reference, [3 * p * (1 - p)], rtol=1e-6)    # exact gradient
  se = np.sqrt(var / n)
  assert abs(float(out.mean[0]) - mean) < stats.norm.isf(ALPHA / 2) * se
  # Sample variance of a two-point law: relative standard error below 1.5% here.
  assert abs(float(out.total_variance) / var - 1) < 0.08
  biased = gumbax.diagnostics.estimator_statistics(
      estimators.get("relaxed", distribution="bernoulli", temperature=2.0), jax.random.key(0),
      logits, f, num_samples=4000)
  assert float(biased.squared_bias) > 100 * float(biased.total_variance) / 4000


# -- the temperature is a call argument ------------------------------------------

PATHWISE = ("gumbel_rao", "reinmax", "relaxed", "straight_through", "straight_through_gumbel")


def _temperature_problem(distribution):
  shape = (2, 3, 4) if distribution == "categorical" else (2, 3)
  logits = jax.random.normal(jax.random.key(7), shape)
  w = jax.random.normal(jax.random.key(8), shape)
  axes = (-2, -1) if distribution == "categorical" else (-1,)
  f = lambda b: jnp.sum(jnp.square(b - 0.3) * w, axis=axes)
  return logits, w, f


def _extra(name):
  return {"num_samples": 3} if name == "gumbel_rao" else {}


@pytest.mark.parametrize("distribution", ["categorical", "bernoulli"])
@pytest.mark.parametrize("name", PATHWISE)
def test_call_time_temperature_is_the_field_bit_for_bit(name, distribution):
  """``est(..., temperature=tau)`` computes what an estimator built with the field
  ``temperature=tau`` computes: eager, and under jit and vmap with a traced tau,
  values, logits gradients and the gradient with respect to tau alike."""
  import dataclasses
  logits, w, f = _temperature_problem(distribution)
  est = estimators.get(name, distribution=distribution, **_extra(name))
  key = jax.random.key(3)

  def outputs(make_call, tau, k):
    value = make_call(tau)(k, logits, f)
    grads = jax.grad(lambda l: jnp.sum(make_call(tau)(k, l, f)))(logits)
    # d/dtau of a functional of the logits gradient: nonzero for every estimator
    # (the straight-through ones' forward value does not depend on tau).
    dtau = jax.grad(lambda t: jnp.sum(
        w * jax.grad(lambda l: jnp.sum(make_call(t)(k, l, f)))(logits)))(tau)
    return value, grads, dtau

  by_argument = lambda t: (lambda k, l, g: est(k, l, g, temperature=t))
  by_field = lambda t: dataclasses.replace(est, temperature=t)

  np.testing.assert_array_equal(by_argument(0.7)(key, logits, f), by_field(0.7)(key, logits, f))
  run_arg = jax.jit(lambda t, k: outputs(by_argument, t, k))
  run_field = jax.jit(lambda t, k: outputs(by_field, t, k))
  tau = jnp.float32(0.7)
  got, want = run_arg(tau, key), run_field(tau, key)
  for a, b in zip(got, want):
    np.testing.assert_array_equal(a, b)
  if name != "reinmax":  # ReinMax's pi_1 carries no gradient (stop_gradient), tau's included
    assert float(jnp.abs(got[2])) > 0  # the gradient reaches the temperature
  taus = jnp.array([0.5, 1.0, 2.0], jnp.float32)
  keys = jax.random.split(jax.random.key(4), 3)
  got = jax.jit(jax.vmap(lambda t, k: outputs(by_argument, t, k)))(taus, keys)
  want = jax.jit(jax.vmap(lambda t, k: outputs(by_field, t, k)))(taus, keys)
  for a, b in zip(got, want):
    np.testing.assert_array_equal(a, b)
  # No temperature: the field's.
  np.testing.assert_array_equal(
      est(key, logits, f), estimators.get(name, distribution=distribution, temperature=1.0,
                                          **_extra(name))(key, logits, f, temperature=None))
  # The sampling function and value_and_grads take it too.
  np.testing.assert_array_equal(est.sample_with_gradient(key, logits, 0.7),
                                by_field(0.7).sample_with_gradient(key, logits))
  model = lambda p: (p, f)
  a = estimators.value_and_grads(est, key, model, logits, temperature=0.7)
  b = estimators.value_and_grads(by_field(0.7), key, model, logits)
  np.testing.assert_array_equal(a.loss, b.loss)
  np.testing.assert_array_equal(a.grads, b.grads)
  with pytest.raises(ValueError, match="temperature"):
    est(key, logits, f, temperature=0.0)


@pytest.mark.parametrize("name", [n for n in estimators.names()
                                  if not estimators.get(n).uses_temperature])
def test_estimators_without_a_sampling_temperature_refuse_one(name):
  distribution = "bernoulli" if name in ("arm", "disarm") else "categorical"
  logits, _, f = _temperature_problem(distribution)
  est = estimators.get(name, distribution=distribution)
  assert not any(fl.name == "temperature" for fl in __import__("dataclasses").fields(est))
  key = jax.random.key(5)
  cv = est.init(key, logits)
  with pytest.raises(TypeError, match="no sampling temperature"):
    est(key, logits, f, cv, temperature=0.5)
  with pytest.raises(TypeError, match="no sampling temperature"):
    est.variance_loss(key, logits, f, cv, temperature=jnp.float32(0.5))
  with pytest.raises(TypeError, match="no sampling temperature"):
    estimators.value_and_grads(est, key, lambda p: (p, f), logits, cv, temperature=0.5)
  # None is the default, accepted by every estimator (generic code forwards it).
  np.testing.assert_array_equal(est(key, logits, f, cv, temperature=None),
                                est(key, logits, f, cv))


def test_every_registered_estimator_declares_uses_temperature():
  import dataclasses
  for name in estimators.names():
    cls = type(estimators.get(name, distribution="bernoulli" if name in ("arm", "disarm")
                              else "categorical"))
    assert "uses_temperature" in vars(cls), name        # declared on the class itself
    assert isinstance(cls.uses_temperature, bool), name
    fields = {f.name for f in dataclasses.fields(cls)}
    assert cls.uses_temperature == ("temperature" in fields), name
    assert cls.uses_temperature == (name in PATHWISE), name


@pytest.mark.parametrize("name", ["rebar", "relax"])
def test_rebar_relax_old_temperature_keyword_warns_and_maps_to_lambda_init(name):
  cls = type(estimators.get(name))
  assert cls().lambda_init == 0.5
  with pytest.warns(DeprecationWarning, match="lambda_init") as record:
    old = estimators.get(name, temperature=0.3)
  assert record[0].filename == __file__               # points at the caller
  with pytest.warns(DeprecationWarning, match="lambda_init"):
    old_direct = cls(temperature=0.3)
  new = estimators.get(name, lambda_init=0.3)
  assert old == new == old_direct and old.lambda_init == 0.3
  logits = jnp.zeros((2, 3))
  cv_old = old.init(jax.random.key(0), logits)
  cv_new = new.init(jax.random.key(0), logits)
  np.testing.assert_array_equal(cv_old["params"]["log_temperature"], np.log(np.float32(0.3)))
  for a, b in zip(jax.tree_util.tree_leaves(cv_old), jax.tree_util.tree_leaves(cv_new)):
    np.testing.assert_array_equal(a, b)
  with pytest.raises(TypeError, match="lambda_init"):
    cls(lambda_init=0.2, temperature=0.3)
