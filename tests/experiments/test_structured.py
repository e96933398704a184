"""Nested estimators through two stochastic layers are unbiased (against enumeration).

MuProp runs both ways: expanded around the mean-field network (the default) and
around the sampled loss.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import gumbax
from experiments import config as cfg_lib
from experiments.tasks.structured import HALF, StructuredOutput

ALPHA = 1e-6  # family-wise false-failure rate of each test (Bonferroni over parameters)
NUM_KEYS = 8192


def _problem():
  config = cfg_lib.StructuredTask(distribution="bernoulli", num_latents=2, stochastic_layers=2)
  task = StructuredOutput(config, batch_size=3, data_config=None)
  params = task.init(jax.random.key(0))
  params = jax.tree_util.tree_map(lambda w: 8.0 * w, params)  # logits far from 0
  batch = jax.random.bernoulli(jax.random.key(1), 0.4, (3, 2 * HALF)).astype(jnp.float32)
  return task, params, batch


def _exact_loss(task, params, batch):
  x, y = batch[:, :HALF], batch[:, HALF:]
  configs = jnp.array(list(itertools.product([0.0, 1.0], repeat=2)))

  def log_p(logits, h):
    return jnp.sum(h * logits - jax.nn.softplus(logits), axis=-1)

  total = 0.0
  l1 = task.logits(params, 0, x)
  for h1 in configs:
    h1b = jnp.broadcast_to(h1, l1.shape)
    l2 = task.logits(params, 1, h1b)
    for h2 in configs:
      h2b = jnp.broadcast_to(h2, l2.shape)
      weight = jnp.exp(log_p(l1, h1b) + log_p(l2, h2b))
      total = total + weight * task.nll_given(params, h2b, y)
  return jnp.mean(total)


@pytest.mark.parametrize("name,options,unbiased", [
    ("reinforce", {}, True), ("rloo", {}, True), ("muprop", {}, True),
    ("muprop", {"mean_field": False}, True), ("disarm", {}, True),
    ("straight_through_gumbel", {}, False),
    pytest.param("rebar", {}, True, marks=pytest.mark.slow)])
def test_nested_estimator_matches_enumeration(name, options, unbiased):
  task, params, batch = _problem()
  estimator = gumbax.estimators.get(name, distribution="bernoulli", **options)
  cv = task.init_cv(estimator, jax.random.key(2), params, batch)
  exact = jax.grad(lambda p: _exact_loss(task, p, batch))(params)

  def one(key):
    return task.gradients(estimator, key, params, cv, batch).grads

  grads = jax.lax.map(one, jax.random.split(jax.random.key(3), NUM_KEYS), batch_size=512)
  flat_g = np.concatenate([np.asarray(g).reshape(NUM_KEYS, -1) for g in jax.tree_util.tree_leaves(grads)], 1)
  flat_e = np.concatenate([np.asarray(g).ravel() for g in jax.tree_util.tree_leaves(exact)])
  se = flat_g.std(axis=0, ddof=1) / np.sqrt(NUM_KEYS)
  z = np.abs(flat_g.mean(axis=0) - flat_e) / np.maximum(se, 1e-12)
  threshold = stats.norm.isf(ALPHA / (2 * flat_e.size))
  if unbiased:
    assert z.max() < threshold, f"{name}: max |z| = {z.max():.2f} over {flat_e.size} parameters"
  else:  # power control: the biased straight-through estimator is caught
    assert z.max() > threshold


def test_muprop_expands_around_the_mean_field_network():
  """Layer 1's loss carries a mean-field version that propagates sigmoid means."""
  task, params, batch = _problem()
  x, y = batch[:, :HALF], batch[:, HALF:]
  est = gumbax.estimators.get("muprop", distribution="bernoulli")
  keys = list(jax.random.split(jax.random.key(0), 2))
  f = task._downstream(est, keys, params, [{}, {}], 0, y)
  assert isinstance(f, gumbax.estimators.MeanFieldLoss)
  mu = jax.nn.sigmoid(task.logits(params, 0, x))
  expected = task.nll_given(params, jax.nn.sigmoid(task.logits(params, 1, mu)), y)
  np.testing.assert_allclose(f.mean_field(mu), expected, rtol=1e-6)
  # The last layer's loss is deterministic already and stays a plain function.
  last = task._downstream(est, keys, params, [{}, {}], 1, y)
  assert not isinstance(last, gumbax.estimators.MeanFieldLoss)
