"""The concrete autoencoder of Abid, Balin & Zou (2019): select k pixels, reconstruct all.

Selector ``concrete`` (the paper's): ``k`` selector nodes, each a categorical over the
``n = 784`` pixels with its own logits, so the logits are one parameter of shape
``(k, n)`` shared by every example (Glorot-normal initialization, as the authors'
Keras layer). A sample ``b`` of shape ``(k, n)`` (one-hot, or relaxed by the
estimator) picks the features ``z = x @ b.T`` of shape ``(batch, k)``; a decoder MLP
(leaky ReLU of slope 0.2, ``gumbax.networks``) maps them to the 784 grey levels and
the loss ``f(b)`` is the mean squared error over the batch and the pixels: one scalar,
so every registered estimator that takes categorical logits applies through
``gumbax.estimators.value_and_grads``. The concrete autoencoder itself is the
``relaxed`` estimator with the temperature annealed exponentially (the paper: from
10 to 0.01 over training). Nodes may pick the same pixel.

Selector ``top_k``: one logit per pixel, shape ``(n,)``, and a relaxed k-subset
``m = gumbax.relaxed_top_k(key, logits, k, tau, hard=...)`` (Xie & Ermon 2019); the
decoder reads the masked image ``x * m`` (all 784 inputs, so its first layer is
larger than the concrete selector's). ``relaxed`` trains it with the soft subset,
``straight_through_gumbel`` with ``hard=True`` (the exact subset forward, the soft
one's gradient); the task computes these gradients itself (the sample is not a
categorical's), and the config refuses other estimators.

Evaluation: the hard selection (each node's argmax; for ``top_k`` the k largest
logits), the decoder applied to the selected pixels, and per split ``mse`` (the mean
squared error over the pixels and the images), ``linear_mse`` (a least-squares linear
map with intercept from the selected pixels to the image, fitted on the training
split: the paper's ``MSELR``), and ``distinct_features`` (how many different pixels
the k nodes chose). No sampling: the evaluation is deterministic.

References:
  Abid, Balin, Zou, Concrete Autoencoders: Differentiable Feature Selection and
  Reconstruction, 2019 (arXiv 1901.09346); Maddison, Mnih, Teh, The Concrete
  Distribution, 2017 (arXiv 1611.00712); Xie, Ermon, Reparameterizable Subset
  Sampling via Continuous Relaxations, 2019 (arXiv 1901.10517).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import gumbax
from gumbax import networks
from experiments.config import TOP_K_ESTIMATORS
from experiments.tasks import _mnist

PIXELS = 784
IMAGE_SHAPE = (28, 28)
LEAKY_SLOPE = 0.2  # tf.nn.leaky_relu's default, the authors' decoder activation


def _activation(x):
  return jax.nn.leaky_relu(x, negative_slope=LEAKY_SLOPE)


def linear_mse(train_features: np.ndarray, train_images: np.ndarray,
               features: np.ndarray, images: np.ndarray) -> float:
  """The mean squared error of a least-squares linear map (with intercept) from
  ``features`` to ``images``, fitted on the training pair (float64; repeated or
  constant features are handled by the minimum-norm solution)."""
  design = np.hstack([np.asarray(train_features, np.float64),
                      np.ones((len(train_features), 1))])
  weights, *_ = np.linalg.lstsq(design, np.asarray(train_images, np.float64), rcond=None)
  prediction = np.hstack([np.asarray(features, np.float64), np.ones((len(features), 1))]) @ weights
  return float(np.mean((prediction - np.asarray(images, np.float64)) ** 2))


class FeatureSelection(_mnist.MnistTask):
  """Select ``num_selected`` pixels of an MNIST image and reconstruct the image."""

  sampled_eval = False

  @property
  def concrete(self) -> bool:
    return self.config.selector == "concrete"

  def init(self, key):
    c = self.config
    k_sel, k_dec = jax.random.split(key)
    k = c.num_selected
    # Glorot normal (Keras's: truncated normal, fan average) of the (k, n) logits; the
    # top_k selector's (n,) logits take the same scale.
    scale = jnp.sqrt(2.0 / (k + PIXELS)) / 0.87962566103423978  # truncation's std
    shape = (k, PIXELS) if self.concrete else (PIXELS,)
    selector = scale * jax.random.truncated_normal(k_sel, -2.0, 2.0, shape, jnp.float32)
    width = k if self.concrete else PIXELS
    return {"selector": selector,
            "decoder": networks.mlp_init(k_dec, [width, *c.decoder, PIXELS])}

  def decode(self, params, z):
    return networks.mlp_apply(params["decoder"], z, activation=_activation)

  def reconstruction_loss(self, params, z, x):
    """Mean squared error over pixels, one value per example."""
    return jnp.mean(jnp.square(self.decode(params, z) - x), axis=-1)

  def model(self, params, batch):
    """``(logits, f)``: the ``(k, n)`` selector logits and the batch's mean loss of a
    selection ``b`` (concrete selector only)."""
    if not self.concrete:
      raise ValueError("the top_k selector has no categorical model: its relaxed subset is "
                       "drawn by FeatureSelection.gradients")
    return params["selector"], lambda b: jnp.mean(
        self.reconstruction_loss(params, batch @ b.T, batch))

  def init_cv(self, estimator, key, params, batch):
    if self.concrete:
      return super().init_cv(estimator, key, params, batch)
    return {}

  def gradients(self, estimator, key, params, cv, batch, temperature=None):
    if self.concrete:
      return super().gradients(estimator, key, params, cv, batch, temperature)
    if estimator.name not in TOP_K_ESTIMATORS:
      raise ValueError(f"the top_k selector trains with {sorted(TOP_K_ESTIMATORS)}; got "
                       f"{estimator.name!r}")
    hard = TOP_K_ESTIMATORS[estimator.name]
    tau = 1.0 if temperature is None else temperature

    def loss(p):
      mask = gumbax.relaxed_top_k(key, p["selector"], self.config.num_selected, tau, hard=hard)
      return jnp.mean(self.reconstruction_loss(p, batch * mask[None, :], batch))

    value, grads = jax.value_and_grad(loss)(params)
    return gumbax.estimators.StepGradients(value, grads, {}, cv)

  def probe(self, estimator, key, params, cv, temperature=None):
    """``mean_max_probability``: the mean over the nodes of each node's largest
    selection probability (the authors' convergence statistic; 1: every node is
    deterministic); for ``top_k``, ``top_k_probability``: the sum of the k largest
    probabilities of ``softmax(logits)`` (near 1 when the k-subset drawn without
    replacement is almost always the same)."""
    del estimator, key, cv, temperature
    probs = jax.nn.softmax(params["selector"], axis=-1)
    if self.concrete:
      return {"mean_max_probability": jnp.mean(jnp.max(probs, axis=-1))}
    top = jax.lax.top_k(probs, self.config.num_selected)[0]
    return {"top_k_probability": jnp.sum(top)}

  def selected(self, params) -> jax.Array:
    """The hard selection: each node's argmax (``concrete``, may repeat) or the
    indices of the k largest logits (``top_k``), shape ``(k,)``."""
    logits = params["selector"]
    if self.concrete:
      return jnp.argmax(logits, axis=-1)
    return jax.lax.top_k(logits, self.config.num_selected)[1]

  def features(self, params, x):
    """The decoder's input for images ``x`` under the hard selection."""
    idx = self.selected(params)
    if self.concrete:
      return x[..., idx]
    mask = jnp.zeros((PIXELS,), x.dtype).at[idx].set(1.0)
    return x * mask[None, :]

  def _eval_chunk(self, params, key, images, num_samples, temperature=1.0):
    del key, num_samples, temperature
    return {"mse": self.reconstruction_loss(params, self.features(params, images), images)}

  def evaluate(self, params, key, split, num_samples, final, temperature=1.0):
    del num_samples, temperature
    limit = self.config.final_eval_examples if final else self.config.eval_examples
    out = _mnist.chunked_mean(self._eval, params, key, self.eval_images[split], 1, limit)
    idx = np.asarray(self.selected(params))
    images = self.eval_images[split][:limit] if limit else self.eval_images[split]
    out["linear_mse"] = linear_mse(self.train_images[:, idx], self.train_images,
                                   images[:, idx], images)
    out["distinct_features"] = int(len(np.unique(idx)))
    return out

  def artifacts(self, params) -> dict:
    """``selected_features``: the hard selection's pixel indices (row-major in the
    28 x 28 image; repeats kept) and the image shape, for the report's plot."""
    return {"selected_features": {"indices": np.asarray(self.selected(params)).tolist(),
                                  "shape": list(IMAGE_SHAPE)}}
