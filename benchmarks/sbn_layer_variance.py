"""Per-layer gradient variance of estimators on a trained SBN (structured output).

Loads the parameters of one member's checkpoint (``experiments run`` output), fixes
one batch of validation images, and draws ``--keys`` gradients of the training
loss with each estimator at those parameters. For every parameter group (the first
stochastic layer's weights, the second's, the output layer) it reports the
gradient's total variance (sum over coordinates of the per-coordinate variance) and
the squared norm of its mean. Estimators with a learned control variate (or a
running baseline) use the untrained one that ``init`` gives, except ``trained``:
the member's own estimator (name and options from its config) with the control
variate of the same checkpoint, parameters and state, as training left them (a
temperature schedule is not replayed: the estimator gets the config's initial one).

Usage::

  python -m benchmarks.sbn_layer_variance \
      runs/jang2017_sbn_bernoulli_muprop/members/structured_output-bernoulli-200-muprop-seed0 \
      --estimators muprop muprop:mean_field=false reinforce straight_through --keys 512

An estimator is a registry name, optionally with hyperparameters after a colon
(``muprop:mean_field=false``, ``rloo:num_samples=4``; values are read as YAML), or
``trained`` (above)::

  python -m benchmarks.sbn_layer_variance \
      runs/jang2017_sbn_categorical_constant_lr_rebar/members/structured_output-categorical-20x10-rebar-seed0 \
      --estimators trained rebar muprop straight_through --keys 512

References:
  Gu et al., MuProp, 2016 (arXiv 1511.05176): its control variate is the Taylor
  expansion of a deterministic mean-field network; the nested layers of
  ``experiments/tasks/structured.py`` expand around a network whose lower layers
  are still sampled.
"""

from __future__ import annotations

import argparse
import json
import pathlib

import flax.serialization
import yaml
import jax
import jax.numpy as jnp
import numpy as np

import gumbax
from experiments import config as cfg_lib
from experiments import files
from experiments import runner
from experiments.tasks import make_task


def load_params(member: pathlib.Path):
  """The member's config, task, parameters of its newest checkpoint, that step, and
  the checkpoint's control variate as a raw state dict."""
  config = cfg_lib.load(member / "config.yaml")
  task = make_task(config)
  steps = files.checkpoint_steps(member)
  if not steps:
    raise FileNotFoundError(f"No checkpoint in {member}.")
  payload = flax.serialization.msgpack_restore(
      (member / f"{files.CHECKPOINT_PREFIX}{steps[-1]}.msgpack").read_bytes())
  template = task.init(jax.random.key(0))
  params = flax.serialization.from_state_dict(template, payload["state"]["params"])
  return config, task, params, steps[-1], payload["state"].get("cv", {})


def parse_estimator(spec: str, distribution: str):
  """``"name"`` or ``"name:key=value,key=value"`` -> an estimator."""
  name, _, rest = spec.partition(":")
  options = {}
  for item in filter(None, rest.split(",")):
    key, sep, value = item.partition("=")
    if not sep:
      raise ValueError(f"Estimator option {item!r} in {spec!r} is not key=value.")
    options[key.strip()] = yaml.safe_load(value)
  return gumbax.estimators.get(name, distribution=distribution, **options)


def group_stats(grads, groups):
  """``{group: (total variance, squared norm of the mean)}`` over the key axis."""
  out = {}
  for name, pick in groups.items():
    leaves = [np.asarray(x, np.float64).reshape(x.shape[0], -1)
              for x in jax.tree_util.tree_leaves(pick(grads))]
    flat = np.concatenate(leaves, axis=1)
    out[name] = (float(flat.var(axis=0, ddof=1).sum()), float(np.square(flat.mean(axis=0)).sum()))
  return out


def measure(task, params, batch, estimator, num_keys, seed=0, trained_cv=None, temperature=None):
  """Per-group stats of ``num_keys`` gradients; ``trained_cv``, a state dict of the
  estimator's control variate, replaces the one ``init_cv`` gives; ``temperature``
  is the estimator's sampling temperature (None: its default)."""
  cv = task.init_cv(estimator, jax.random.key(seed + 1), params, batch)
  if trained_cv is not None:
    cv = flax.serialization.from_state_dict(cv, trained_cv)

  def one(key):
    return task.gradients(estimator, key, params, cv, batch, temperature).grads

  grads = jax.lax.map(one, jax.random.split(jax.random.key(seed), num_keys), batch_size=64)
  groups = {f"layer {l + 1}": (lambda g, l=l: g["layers"][l]) for l in range(task.depth)}
  groups["output"] = lambda g: g["out"]
  return group_stats(grads, groups)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("member", type=pathlib.Path, help="a member folder with checkpoints")
  parser.add_argument("--estimators", nargs="+", default=["muprop", "reinforce", "straight_through"])
  parser.add_argument("--keys", type=int, default=512, help="gradients per estimator")
  parser.add_argument("--json", type=pathlib.Path, help="also write the numbers here")
  args = parser.parse_args(argv)
  if args.keys < 2:
    parser.error("--keys must be at least 2")
  config, task, params, step, member_cv = load_params(args.member)
  if task.__class__.__name__ != "StructuredOutput":
    parser.error(f"{args.member} is not a structured_output run")
  split = task.eval_splits[0]                  # "valid" when the config holds one out
  batch = jnp.asarray(np.asarray(task.eval_images[split][:config.train.batch_size], np.float32))
  rows = {}
  print(f"{args.member.name}, step {step}, {args.keys} gradients on {batch.shape[0]} {split} images")
  print("| estimator | group | total variance | squared norm of the mean |")
  print("|---|---|---|---|")
  for name in args.estimators:
    trained = name == "trained"              # the run's own estimator and control variate
    est = runner.make_estimator(config) if trained else parse_estimator(name, config.task.distribution)
    tau = (config.temperature.init
           if trained and cfg_lib.scheduled_temperature(config.estimator.name) else None)
    stats = measure(task, params, batch, est, args.keys, trained_cv=member_cv if trained else None,
                    temperature=tau)
    name = f"trained {config.estimator.name}" if trained else name
    rows[name] = stats
    for group, (var, mean2) in stats.items():
      print(f"| {name} | {group} | {var:.4g} | {mean2:.4g} |")
  if args.json:
    args.json.write_text(json.dumps({"member": str(args.member), "step": step, "keys": args.keys,
                                     "stats": rows}, indent=1))


if __name__ == "__main__":
  main()
