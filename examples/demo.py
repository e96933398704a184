"""A two-minute tour of gumbax's sampling functions (the README's main job for now).

Draws every kind of sample, checks a few properties on the spot and prints them:
Gumbel-max frequencies against softmax(logits), a Gumbel-top-k draw, relaxed
samples and their densities at a low temperature, and the straight-through
gradient. Run: ``python examples/demo.py``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import gumbax


def main(num_samples: int = 200_000) -> dict[str, float]:
  logits = jnp.log(jnp.array([0.1, 0.2, 0.3, 0.4]))
  keys = jax.random.split(jax.random.key(0), num_samples)

  onehots = jax.jit(jax.vmap(gumbax.gumbel_max, in_axes=(0, None)))(keys, logits)
  freq = np.asarray(onehots.mean(axis=0))
  probs = np.asarray(jax.nn.softmax(logits))
  print(f"Gumbel-max frequencies {np.round(freq, 4)} vs softmax {np.round(probs, 4)}")

  top = gumbax.gumbel_top_k(jax.random.key(1), logits, 3)
  print(f"Gumbel-top-3 (without replacement, in draw order): {np.asarray(top)}")

  for tau in (1.0, 0.1, 0.01):
    y = gumbax.gumbel_softmax(jax.random.key(2), logits, tau)
    x = gumbax.log_gumbel_softmax(jax.random.key(2), logits, tau)
    print(f"tau={tau:<5} Concrete sample {np.round(np.asarray(y), 4)}; "
          f"ExpConcrete log-density {float(gumbax.exp_concrete_log_prob(x, logits, tau)):.3f}")

  target = jnp.array([0.0, 1.0, 2.0, 3.0])
  def loss(l, hard):
    return jnp.sum(gumbax.gumbel_softmax(jax.random.key(3), l, 0.5, hard=hard) * target)
  print(f"ST-Gumbel forward {float(loss(logits, True)):.1f} (a category index), "
        f"gradient {np.round(np.asarray(jax.grad(loss)(logits, True)), 4)}")

  masked = logits.at[0].set(-jnp.inf)
  counts = jax.vmap(gumbax.gumbel_max, in_axes=(0, None))(keys[:20_000], masked).sum(0)
  print(f"masked category drawn {int(counts[0])} times out of 20000")
  return {"max_abs_freq_error": float(np.max(np.abs(freq - probs))),
          "masked_draws": int(counts[0])}


if __name__ == "__main__":
  main()
