"""A tiny categorical VAE with the Flax NNX layer and an annealed temperature.

The data are synthetic (no download): 32-pixel binary images made of 4 blocks of 8
pixels, each block showing one of 4 random patterns with 5% of its pixels flipped,
so they come from exactly the model being fitted: 4 categorical latents with 4
classes each. The encoder ends in ``gumbax.nnx.CategoricalLatent`` (ST-Gumbel-softmax
by default, analytic KL to a uniform prior); the temperature follows Jang et al.'s
exponential annealing schedule. The negative ELBO on held-out data (evaluation mode:
the argmax latent code) goes down from about 23 nats to about 13 (the best possible is about 12:
6.4 nats of pixel noise plus 4 log 4 of KL). Runs in well under a minute on a CPU:

  python examples/vae_nnx.py --steps 600 --estimator reinmax
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import gumbax.nnx
from gumbax import schedules

NUM_LATENTS, NUM_CLASSES, BLOCK = 4, 4, 8
DATA_DIM = NUM_LATENTS * BLOCK


def make_data(seed: int, num_examples: int, flip: float = 0.05) -> np.ndarray:
  """Binary images: block n shows pattern c_n of its 4 patterns, with noise."""
  rng = np.random.default_rng(seed)
  patterns = np.random.default_rng(1234).integers(0, 2, (NUM_LATENTS, NUM_CLASSES, BLOCK))
  codes = rng.integers(0, NUM_CLASSES, (num_examples, NUM_LATENTS))
  images = patterns[np.arange(NUM_LATENTS)[None], codes].reshape(num_examples, DATA_DIM)
  noise = rng.random(images.shape) < flip
  return np.logical_xor(images, noise).astype(np.float32)


class VAE(nnx.Module):
  """Encoder MLP -> CategoricalLatent -> decoder MLP with Bernoulli pixels."""

  def __init__(self, hidden: int, estimator: str, *, rngs: nnx.Rngs):
    self.encoder = nnx.Linear(DATA_DIM, hidden, rngs=rngs)
    self.latent = gumbax.nnx.CategoricalLatent(
        hidden, NUM_LATENTS, NUM_CLASSES, estimator=estimator, kl="analytic", rngs=rngs)
    self.decoder = nnx.Linear(NUM_LATENTS * NUM_CLASSES, hidden, rngs=rngs)
    self.output = nnx.Linear(hidden, DATA_DIM, rngs=rngs)

  def __call__(self, x, *, temperature=None, deterministic=None):
    """The negative ELBO per example (nats)."""
    out = self.latent(jax.nn.relu(self.encoder(x)), temperature=temperature,
                      deterministic=deterministic)
    z = out.sample.reshape(out.sample.shape[:-2] + (NUM_LATENTS * NUM_CLASSES,))
    pixel_logits = self.output(jax.nn.relu(self.decoder(z)))
    nll = jnp.sum(optax.sigmoid_binary_cross_entropy(pixel_logits, x), axis=-1)
    return nll + out.kl


# Jang et al.'s schedule, compressed: from 1.0 to the floor 0.5 in about 350 steps.
SCHEDULE = schedules.exponential_annealing(init_value=1.0, rate=2e-3, floor=0.5, every=50)


# nnx.jit is the simplest way to step a stateful model; it spends Python time per
# call on the module graph (about 5 ms here on a CPU). In tight loops, jit a
# functional step over nnx.split's state instead, held as a flat list of arrays
# between calls: gumbax_flat_setup in benchmarks/vae_step.py (benchmarks/RESULTS.md).
@nnx.jit
def train_step(model, optimizer, x, step):
  temperature = SCHEDULE(step)   # a traced step: schedules work inside jit
  loss, grads = nnx.value_and_grad(
      lambda m: jnp.mean(m(x, temperature=temperature, deterministic=False)))(model)
  optimizer.update(model, grads)
  return loss


@nnx.jit
def evaluate(model, x):
  return jnp.mean(model(x, deterministic=True))


def main(steps: int = 600, estimator: str = "straight_through_gumbel", batch_size: int = 64,
         seed: int = 0, log_every: int = 100) -> dict:
  """Trains the VAE; returns the held-out negative ELBO before and after training."""
  train = make_data(seed, 2048)
  test = jnp.asarray(make_data(seed + 1, 512))
  # Initializing under jit compiles one program instead of one per initializer.
  model = nnx.jit(lambda: VAE(64, estimator, rngs=nnx.Rngs(params=seed, gumbel=seed + 1)))()
  optimizer = nnx.Optimizer(model, optax.adam(3e-3), wrt=nnx.Param)
  order = np.random.default_rng(seed)

  initial = float(evaluate(model, test))
  print(f"step     0  held-out -ELBO {initial:7.3f}")
  train_loss = float("nan")
  for step in range(1, steps + 1):
    batch = jnp.asarray(train[order.integers(0, len(train), batch_size)])
    train_loss = float(train_step(model, optimizer, batch, step))
    if step % log_every == 0 or step == steps:
      print(f"step {step:5d}  temperature {float(SCHEDULE(step)):.3f}  train -ELBO "
            f"{train_loss:7.3f}  held-out -ELBO {float(evaluate(model, test)):7.3f}")
  final = float(evaluate(model, test))
  return {"initial_loss": initial, "final_loss": final, "final_train_loss": train_loss,
          "final_temperature": float(SCHEDULE(steps))}


if __name__ == "__main__":
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=600)
  parser.add_argument("--estimator", default="straight_through_gumbel",
                      help="a pathwise estimator: relaxed, straight_through, "
                           "straight_through_gumbel, gumbel_rao, reinmax")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()
  main(steps=args.steps, estimator=args.estimator, seed=args.seed)
