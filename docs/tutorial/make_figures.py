"""Regenerates every figure of the tutorial (docs/tutorial.md) and prints its numbers.

Run from the repository root (a checkout: the learning curves use the experiments
runner)::

  python docs/tutorial/make_figures.py                      # all three figures
  python docs/tutorial/make_figures.py --only samples bias_variance

``samples`` and ``bias_variance`` take seconds. ``learning_curves`` trains six
categorical VAEs on MNIST for 1000 steps each (about a minute each on 2 CPU cores);
MNIST is read from ``$GUMBAX_DATA_DIR`` (else ``~/.cache/gumbax/mnist``) and
downloaded there when it is missing and the machine is online; otherwise the script
stops with a message saying where it looked. The PNGs are written to
``docs/tutorial/`` (``--out`` to change it); the training runs go to a temporary
folder (``--run-dir`` to keep them; an existing run of the same config is resumed).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script: import gumbax and experiments from here
  sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import gumbax  # noqa: E402

OUT = pathlib.Path(__file__).resolve().parent
DPI = 90
# The 5-category distribution of figure 1 (and the choice of figure 2).
PROBS = (0.1, 0.4, 0.05, 0.3, 0.15)
TEMPERATURES = (0.1, 0.5, 1.0, 5.0, 10.0)
COLORS = {"relaxed": "tab:blue", "straight_through_gumbel": "tab:orange",
          "gumbel_rao": "tab:green", "reinmax": "tab:purple", "reinforce": "tab:gray",
          "reinforce_nvil": "tab:brown", "rloo": "tab:red"}


# -- Figure 1: Concrete samples against temperature -------------------------------

def concrete_samples(path: pathlib.Path, *, temperatures=TEMPERATURES, num_samples: int = 10_000,
                     num_shown: int = 3, seed: int = 0) -> dict:
  """Samples of a 5-category Concrete at each temperature and the Gumbel-max sample
  of the same noise (Jang et al. 2017, figure 1). Returns the expectations."""
  logits = jnp.log(jnp.array(PROBS))
  keys = jax.random.split(jax.random.key(seed), num_samples)
  # The same keys at every temperature: the same Gumbel noise, relaxed more or less.
  soft = {tau: jax.vmap(lambda k, t=tau: gumbax.gumbel_softmax(k, logits, t))(keys)
          for tau in temperatures}
  hard = jax.vmap(lambda k: gumbax.gumbel_max(k, logits))(keys)

  columns = [(f"τ = {tau:g}", soft[tau]) for tau in temperatures] + [("Gumbel-max", hard)]
  fig, axes = plt.subplots(1 + num_shown, len(columns), figsize=(1.6 * len(columns) + 0.3, 4.4),
                           sharex=True, sharey=True)
  categories = np.arange(len(PROBS))
  for j, (title, samples) in enumerate(columns):
    samples = np.asarray(samples)
    axes[0, j].bar(categories, samples.mean(axis=0), color="tab:blue")
    axes[0, j].set_title(title, fontsize=9)
    for i in range(num_shown):
      axes[1 + i, j].bar(categories, samples[i], color="tab:orange")
  axes[0, 0].set_ylabel("expectation", fontsize=8)
  for i in range(num_shown):
    axes[1 + i, 0].set_ylabel(f"sample {i + 1}", fontsize=8)
  for ax in axes.flat:
    ax.set_ylim(0, 1)
    ax.set_xticks(categories)
    ax.tick_params(labelsize=7)
  fig.tight_layout(pad=0.4)
  fig.savefig(path, dpi=DPI)
  plt.close(fig)

  result = {"probs": list(PROBS), "num_samples": num_samples,
            "expectation": {f"{tau:g}": np.asarray(soft[tau].mean(0)).tolist()
                            for tau in temperatures},
            "gumbel_max_frequencies": np.asarray(hard.mean(0)).tolist()}
  print(f"Figure 1 ({path.name}): expectation of {num_samples} samples per temperature")
  row = lambda label, values: print(f"  {label:<21}" + " ".join(f"{p:.3f}" for p in values))
  row("class probabilities", PROBS)
  for tau in temperatures:
    row(f"tau = {tau:g}", result["expectation"][f"{tau:g}"])
  row("Gumbel-max", result["gumbel_max_frequencies"])
  return result


# -- Figure 2: bias and variance against temperature ------------------------------

# A categorical version of the REBAR/RELAX toy problem: b picks one of five values
# v = (0, 0.25, 0.5, 0.75, 1) with probabilities PROBS, and the loss is
# f(b) = (v . b - 0.45)**2, so the exact gradient is a sum over five outcomes.
VALUES = jnp.linspace(0.0, 1.0, len(PROBS))
TARGET = 0.45


def toy_loss(b):
  return (jnp.dot(b, VALUES) - TARGET) ** 2


BIASED = ("relaxed", "straight_through_gumbel", "gumbel_rao")
UNBIASED = ("reinforce", "rloo")


def bias_variance(path: pathlib.Path, *, temperatures=tuple(np.geomspace(0.05, 10, 10)),
                  num_samples: int = 100_000, seed: int = 0, biased=BIASED,
                  unbiased=UNBIASED) -> dict:
  """Squared bias and variance of each estimator's gradient for the logits against the
  exact gradient, over ``num_samples`` keys (:func:`gumbax.diagnostics.estimator_statistics`)."""
  logits = jnp.log(jnp.array(PROBS))
  key = jax.random.key(seed)
  study = lambda est: gumbax.diagnostics.estimator_statistics(
      est, key, logits, toy_loss, num_samples=num_samples)
  result = {"num_samples": num_samples, "temperatures": [float(t) for t in temperatures]}
  for name in biased:
    stats = [study(gumbax.estimators.get(name, temperature=float(tau))) for tau in temperatures]
    result[name] = {"squared_bias": [float(s.squared_bias) for s in stats],
                    "variance": [float(s.total_variance) for s in stats]}
  for name in unbiased:
    stats = study(gumbax.estimators.get(name))
    result[name] = {"squared_bias": float(stats.squared_bias),
                    "variance": float(stats.total_variance)}
  # The exact gradient's squared norm: the squared bias of an estimator that returns 0.
  result["exact_squared_norm"] = float(jnp.sum(jnp.square(stats.reference)))

  fig, axes = plt.subplots(1, 3, figsize=(10, 3.2), sharex=True)
  labels = {"relaxed": "Gumbel-softmax (relaxed)", "straight_through_gumbel": "ST Gumbel-softmax",
            "gumbel_rao": "Gumbel-Rao (K = 10)", "reinforce": "REINFORCE (1 sample)",
            "rloo": "RLOO (2 samples)"}
  for name in biased:
    bias2, var = np.array(result[name]["squared_bias"]), np.array(result[name]["variance"])
    for ax, y in zip(axes, (bias2, var, bias2 + var)):
      ax.plot(temperatures, y, "o-", ms=3, color=COLORS[name], label=labels[name])
  for name in unbiased:
    var = result[name]["variance"]
    for ax in axes[1:]:
      ax.axhline(var, ls="--", color=COLORS[name], label=labels[name])
  # A squared bias measured from n samples is inflated by about variance / n: below the
  # largest of those a measured squared bias is noise.
  floor = np.max([result[name]["variance"] for name in biased], axis=0) / num_samples
  axes[0].plot(temperatures, floor, ":", color="k", label="resolution (variance / n)")
  axes[0].axhline(result["exact_squared_norm"], ls="-.", color="k", lw=0.8,
                  label="|exact gradient|²")
  for ax, title in zip(axes, ("squared bias", "variance (total)", "MSE = bias² + variance")):
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("temperature τ")
    ax.set_title(title, fontsize=10)
  axes[0].legend(fontsize=7)
  axes[1].legend(fontsize=7)
  fig.tight_layout(pad=0.4)
  fig.savefig(path, dpi=DPI)
  plt.close(fig)

  print(f"Figure 2 ({path.name}): gradient for the logits, {num_samples} samples each")
  print(f"  {'estimator':<24} {'tau':>6} {'squared bias':>13} {'variance':>10}")
  for name in biased:
    for tau, b2, v in zip(temperatures, result[name]["squared_bias"], result[name]["variance"]):
      print(f"  {name:<24} {tau:>6.3g} {b2:>13.3g} {v:>10.3g}")
  for name in unbiased:
    print(f"  {name:<24} {'-':>6} {result[name]['squared_bias']:>13.3g} "
          f"{result[name]['variance']:>10.3g}")
  print(f"  squared norm of the exact gradient: {result['exact_squared_norm']:.3g}")
  return result


# -- Figure 3: learning curves on the categorical MNIST VAE -----------------------

# The quickstart's six VAE estimators (configs/quickstart.yaml).
VAE_ESTIMATORS = ("relaxed", "straight_through_gumbel", "gumbel_rao", "reinmax",
                  "{name: reinforce, options: {baseline: nvil}}", "rloo")
VAE_TASK = ("{name: vae, distribution: categorical, num_latents: 20, num_classes: 10, "
            "encoder: [256], decoder: [256], eval_samples: 10, eval_examples: 1000, "
            "final_eval_samples: 10, final_eval_examples: 1000}")


def train_vaes(run_dir: pathlib.Path, *, steps: int = 1000, eval_every: int = 100,
               estimators=VAE_ESTIMATORS, task: str = VAE_TASK,
               extra_overrides=()) -> pathlib.Path:
  """Trains the VAE members of configs/quickstart.yaml into ``run_dir``."""
  from experiments import config as cfg_lib  # a checkout's runner
  from experiments.runner import run

  overrides = [f"train.steps={steps}", f"train.eval_every={eval_every}",
               f"train.checkpoint_every={steps}", "data.if_missing=error",
               f"sweep.tasks=[{task}]", f"sweep.estimators=[{', '.join(estimators)}]",
               *extra_overrides]
  config = cfg_lib.load(ROOT / "configs" / "quickstart.yaml", overrides)
  try:
    run(config, run_dir, progress=False)
  except FileNotFoundError as err:  # experiments.data.MnistNotFoundError
    raise SystemExit(
        "The learning curves train on MNIST, read from $GUMBAX_DATA_DIR (else "
        "~/.cache/gumbax/mnist) and downloaded there when online. It could not be "
        f"found or downloaded:\n  {err}\nSet GUMBAX_DATA_DIR to a folder holding the four "
        "MNIST IDX files, or run with --only samples bias_variance.") from None
  return pathlib.Path(run_dir)


def read_metrics(run_dir: pathlib.Path) -> dict[str, list[dict]]:
  """Each member's ``metrics.jsonl`` records, keyed by its estimator's title."""
  from experiments import config as cfg_lib

  curves = {}
  for member in sorted(pathlib.Path(run_dir).glob("members/*")):
    title = cfg_lib.load(member / "config.yaml").estimator.title  # e.g. reinforce(baseline=nvil)
    lines = (member / "metrics.jsonl").read_text().splitlines()
    curves[title] = [json.loads(line) for line in lines if line.strip()]
  return curves


VAE_LABELS = {"relaxed": "Gumbel-softmax (relaxed)", "straight_through_gumbel": "ST Gumbel-softmax",
              "gumbel_rao": "Gumbel-Rao (K = 10)", "reinmax": "ReinMax",
              "reinforce(baseline=nvil)": "REINFORCE + NVIL baseline", "rloo": "RLOO (2 samples)"}


def learning_curves(path: pathlib.Path, run_dir: pathlib.Path, *, smoothing: int = 5,
                    **train_options) -> dict:
  """Trains (or resumes) the VAEs and plots train loss and test -ELBO per estimator."""
  train_vaes(run_dir, **train_options)
  curves = read_metrics(run_dir)
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
  result = {}
  for name, records in curves.items():
    train = [r for r in records if r["split"] == "train"]
    test = [r for r in records if r["split"] == "test"]
    color = COLORS.get(name.replace("reinforce(baseline=nvil)", "reinforce_nvil"))
    label = VAE_LABELS.get(name, name)
    steps = np.array([r["step"] for r in train])
    loss = np.array([r["loss"] for r in train])
    width = min(smoothing, len(loss))
    smooth = np.convolve(loss, np.ones(width) / width, mode="valid")
    axes[0].plot(steps[width - 1:], smooth, color=color, label=label)
    axes[1].plot([r["step"] for r in test], [r["neg_elbo"] for r in test], "o-", ms=3,
                 color=color, label=label)
    final = [r for r in test if r.get("final")]
    result[name] = {"train_loss": float(smooth[-1]), "final_neg_elbo": final[-1]["neg_elbo"] if final else None,
                    "final_nll": final[-1]["nll"] if final else None,
                    "wall_time": train[-1]["wall_time"] if train else None}
  axes[0].set_title(f"train loss (moving average of {smoothing} logs)", fontsize=10)
  axes[1].set_title("test −ELBO at discrete samples", fontsize=10)
  for ax in axes:
    ax.set_xlabel("training step")
    ax.set_ylabel("nats")
  low = min(min(r["neg_elbo"] for r in recs if r["split"] == "test") for recs in curves.values())
  axes[1].set_ylim(low - 5, low + 60)
  axes[0].set_ylim(low - 15, low + 60)
  axes[1].legend(fontsize=7)
  fig.tight_layout(pad=0.4)
  fig.savefig(path, dpi=DPI)
  plt.close(fig)

  print(f"Figure 3 ({path.name}): at the last step, train loss (moving average), test -ELBO "
        "and importance-weighted NLL, training wall time")
  for name, r in sorted(result.items(), key=lambda item: item[1]["final_neg_elbo"]):
    print(f"  {name:<26} train {r['train_loss']:7.2f}   -ELBO {r['final_neg_elbo']:7.2f}   "
          f"NLL {r['final_nll']:7.2f}   {r['wall_time']:6.1f} s")
  return result


FIGURES = ("samples", "bias_variance", "learning_curves")


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--only", nargs="+", choices=FIGURES, default=list(FIGURES))
  parser.add_argument("--out", type=pathlib.Path, default=OUT, help="folder for the PNGs")
  parser.add_argument("--run-dir", type=pathlib.Path, default=None,
                      help="folder for the VAE training runs (default: a temporary one)")
  args = parser.parse_args(argv)
  args.out.mkdir(parents=True, exist_ok=True)
  results = {}
  for name in FIGURES:
    if name not in args.only:
      continue
    start = time.perf_counter()
    if name == "samples":
      results[name] = concrete_samples(args.out / "concrete_samples.png")
    elif name == "bias_variance":
      results[name] = bias_variance(args.out / "bias_variance.png")
    elif args.run_dir is None:
      with tempfile.TemporaryDirectory() as tmp:
        results[name] = learning_curves(args.out / "learning_curves.png", pathlib.Path(tmp) / "run")
    else:
      results[name] = learning_curves(args.out / "learning_curves.png", args.run_dir)
    print(f"  ({time.perf_counter() - start:.0f} s)")
  return results


if __name__ == "__main__":
  main()
