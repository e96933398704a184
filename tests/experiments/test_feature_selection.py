"""The feature_selection task (concrete autoencoder, Abid et al. 2019) and its pieces:
the model's shapes, the evaluation against an independent computation, the config's
refusals, the test-file split, determinism, and the tiny config end to end."""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gumbax
from _tolerance import assert_f32_close
from experiments import config as cfg_lib
from experiments import data as data_lib
from experiments import report, runner
from experiments.report import plots
from experiments.tasks.feature_selection import FeatureSelection, linear_mse

ROOT = pathlib.Path(__file__).resolve().parents[2]
MNIST = ROOT.parent / "shared" / "data" / "mnist"
TINY = ROOT / "configs" / "tests" / "feature_selection_tiny.yaml"
needs_mnist = pytest.mark.skipif(data_lib.find_mnist(MNIST) is None,
                                 reason=f"MNIST not found at {MNIST}")


def _task(selector="concrete", k=4, decoder=(8,)):
  config = cfg_lib.FeatureSelectionTask(selector=selector, num_selected=k, decoder=list(decoder))
  return FeatureSelection(config, batch_size=6, data_config=None)


def _images(key, n=6):
  return jax.random.uniform(jax.random.key(key), (n, 784), jnp.float32)


def _leaky(x):
  return np.where(x > 0, x, 0.2 * x)


def _numpy_decoder(params, z):
  """The decoder MLP in float64 NumPy (leaky ReLU 0.2 between layers)."""
  layers = [{k: np.asarray(v, np.float64) for k, v in layer.items()} for layer in params["decoder"]]
  h = np.asarray(z, np.float64)
  for i, layer in enumerate(layers):
    h = h @ layer["w"] + layer["b"]
    if i < len(layers) - 1:
      h = _leaky(h)
  return h


@pytest.mark.parametrize("selector", ["concrete", "top_k"])
def test_shapes_and_gradients(selector):
  task = _task(selector)
  params = task.init(jax.random.key(0))
  shape = (4, 784) if selector == "concrete" else (784,)
  assert params["selector"].shape == shape
  width = 4 if selector == "concrete" else 784
  assert params["decoder"][0]["w"].shape == (width, 8)
  assert params["decoder"][-1]["w"].shape == (8, 784)
  # Glorot normal of the (k, n) logits: std sqrt(2 / (k + n)) (truncated at 2 std).
  std = float(np.std(np.asarray(params["selector"])))
  assert 0.8 * np.sqrt(2 / 788) < std < 1.2 * np.sqrt(2 / 788)
  batch = _images(1)
  if selector == "concrete":
    logits, f = task.model(params, batch)
    b = jax.nn.one_hot(jnp.array([0, 5, 5, 783]), 784)
    assert logits.shape == (4, 784) and f(b).shape == ()
  names = ["relaxed", "straight_through_gumbel"] + (["rloo"] if selector == "concrete" else [])
  for name in names:
    est = gumbax.estimators.get(name, distribution="categorical")
    cv = task.init_cv(est, jax.random.key(2), params, batch)
    temperature = 0.5 if est.uses_temperature else None
    step = jax.jit(lambda k, p, t: task.gradients(est, k, p, cv, batch, t))
    out = step(jax.random.key(3), params, temperature)
    assert out.loss.shape == ()
    assert jax.tree_util.tree_structure(out.grads) == jax.tree_util.tree_structure(params)
    assert float(jnp.sum(jnp.abs(out.grads["selector"]))) > 0
    # The same key gives the same numbers (exactly: one jitted function); another key
    # another sample.
    again = step(jax.random.key(3), params, temperature)
    other = step(jax.random.key(4), params, temperature)
    np.testing.assert_array_equal(np.asarray(again.grads["selector"]),
                                  np.asarray(out.grads["selector"]))
    assert float(other.loss) != float(again.loss)


def test_top_k_refuses_score_function_estimators_at_the_task():
  task = _task("top_k")
  params = task.init(jax.random.key(0))
  with pytest.raises(ValueError, match="top_k"):
    task.gradients(gumbax.estimators.get("rloo"), jax.random.key(0), params, {}, _images(1), None)
  with pytest.raises(ValueError, match="top_k"):
    task.model(params, _images(1))


@pytest.mark.parametrize("selector", ["concrete", "top_k"])
def test_evaluation_against_numpy_for_a_known_selection(selector):
  task = _task(selector)
  params = task.init(jax.random.key(0))
  chosen = np.array([3, 100, 100, 500]) if selector == "concrete" else np.array([3, 100, 77, 500])
  logits = np.zeros(params["selector"].shape, np.float32)
  if selector == "concrete":
    logits[np.arange(4), chosen] = 5.0  # node i picks chosen[i]; two nodes collide
  else:
    logits[chosen] = 5.0
  params = {**params, "selector": jnp.asarray(logits)}
  train, test = np.asarray(_images(1, 40)), np.asarray(_images(2, 9))
  task.train_images, task.eval_images = train, {"test": test}
  out = task.evaluate(params, jax.random.key(0), "test", 1, final=True)
  if selector == "concrete":
    z = test[:, chosen]
  else:
    mask = np.zeros(784)
    mask[chosen] = 1.0
    z = test * mask
  reconstruction = _numpy_decoder(params, z)
  want = np.mean((reconstruction - test) ** 2)
  assert_f32_close(out["mse"], want, scale=np.max(reconstruction ** 2 + test ** 2), ulps=64)
  assert out["distinct_features"] == len(set(chosen.tolist()))
  assert sorted(task.artifacts(params)["selected_features"]["indices"]) == sorted(chosen.tolist())


def test_linear_mse_is_zero_for_images_linear_in_the_selected_pixels():
  rng = np.random.default_rng(0)
  features = rng.uniform(size=(50, 3))
  images = features @ rng.normal(size=(3, 10)) + rng.normal(size=10)
  repeated = np.hstack([features, features[:, :1]])  # a pixel chosen twice
  assert linear_mse(repeated[:40], images[:40], repeated[40:], images[40:]) < 1e-20
  noisy = images + rng.normal(scale=0.1, size=images.shape)
  # With only a constant feature the fit is the training mean: the test MSE about it.
  ones = np.ones((50, 1))
  want = np.mean((noisy[40:] - noisy[:40].mean(axis=0)) ** 2)
  np.testing.assert_allclose(linear_mse(ones[:40], noisy[:40], ones[40:], noisy[40:]), want,
                             rtol=1e-9)


def _config(**task):
  raw = {"name": "t", "task": {"name": "feature_selection", **task},
         "data": {"binarization": "none", "source": "test_file", "validation_size": 400}}
  return raw


def test_config_errors():
  with pytest.raises(cfg_lib.ConfigError, match=r"top_k.*'rloo'"):
    cfg_lib.validate({**_config(selector="top_k"), "estimator": "rloo"})
  with pytest.raises(cfg_lib.ConfigError, match=r"num_selected.*785.*784"):
    cfg_lib.validate({**_config(num_selected=785), "estimator": "relaxed"})
  with pytest.raises(cfg_lib.ConfigError, match=r"validation_size \(4000\).*test_file_train"):
    cfg_lib.validate({**_config(), "data": {"source": "test_file", "validation_size": 4000}})
  with pytest.raises(cfg_lib.ConfigError, match="unknown key"):
    cfg_lib.validate({**_config(num_latents=3)})
  # In a sweep the pair is left out with a note, the other pairs run.
  from experiments import sweep
  config = cfg_lib.validate({**_config(), "sweep": {
      "tasks": [{"name": "feature_selection"}, {"name": "feature_selection", "selector": "top_k"}],
      "estimators": ["relaxed", "rloo"]}})
  members, skipped = sweep.expand(config)
  assert sorted(m.id for m in members) == [
      "feature_selection-concrete-k50-relaxed-seed0", "feature_selection-concrete-k50-rloo-seed0",
      "feature_selection-top_k-k50-relaxed-seed0"]
  assert len(skipped) == 1 and "rloo" in skipped[0]


@needs_mnist
def test_test_file_split():
  mnist = data_lib.load_mnist(MNIST, download=False)
  splits = data_lib.load_splits(MNIST, binarization="none", source="test_file",
                                test_file_train=4000, validation_size=400, download=False,
                                split_seed=3)
  assert [x.shape for x in splits] == [(3600, 784), (400, 784), (6000, 784)]
  together = np.concatenate(splits)
  assert together.min() == 0.0 and together.max() == 1.0
  # The three splits are the test file's images, each once.
  key = lambda rows: sorted(map(bytes, np.round(rows * 255).astype(np.uint8)))
  assert key(together) == key(mnist.test_images / 255.0)
  other = data_lib.load_splits(MNIST, binarization="none", source="test_file", download=False,
                               validation_size=400, split_seed=4)
  assert not np.array_equal(other.test, splits.test)
  with pytest.raises(ValueError, match="test_file_train"):
    data_lib.load_splits(MNIST, source="test_file", test_file_train=10000, download=False)


@needs_mnist
def test_tiny_config_end_to_end(tmp_path, monkeypatch):
  monkeypatch.setenv("GUMBAX_DATA_DIR", str(MNIST))
  run_dir = runner.run(cfg_lib.load(TINY), tmp_path / "run", progress=False)
  (member,) = (run_dir / "members").iterdir()
  summary = json.loads((member / "summary.json").read_text())
  assert summary["status"] == "completed"
  final = summary["final"]
  for split in ("valid", "test"):
    assert 0 < final[f"{split}/mse"] < 1 and 0 < final[f"{split}/linear_mse"] < 1
    assert 1 <= final[f"{split}/distinct_features"] <= 5
  rows = [json.loads(line) for line in (member / "metrics.jsonl").read_text().splitlines()]
  train = [r for r in rows if r["split"] == "train"]
  assert [r["step"] for r in train] == [10, 20]
  assert train[0]["temperature"] > train[1]["temperature"]
  assert all(1 / 784 <= r["mean_max_probability"] <= 1 for r in train)
  selection = json.loads((member / "artifacts.json").read_text())["selected_features"]
  assert len(selection["indices"]) == 5 and selection["shape"] == [28, 28]
  assert all(0 <= i < 784 for i in selection["indices"])
  result = report.report(run_dir)
  png = run_dir / "plots" / "selected_features.png"
  assert png in result["plots"] and 0 < png.stat().st_size < 100_000
  counts = plots.selection_counts(selection)
  assert counts.shape == (28, 28) and counts.sum() == 5


def test_selection_counts():
  counts = plots.selection_counts({"indices": [0, 5, 5], "shape": [2, 3]})
  np.testing.assert_array_equal(counts, [[1, 0, 0], [0, 0, 2]])
  with pytest.raises(ValueError, match="shape"):
    plots.selection_counts({"indices": [6], "shape": [2, 3]})


def test_selection_plot_needs_an_artifact(tmp_path):
  member = report.MemberResult(tmp_path, {"task": "toy", "estimator": "rloo", "seed": 0}, [])
  assert plots.write_selection_plot([member], tmp_path / "s.png") is None
  assert not (tmp_path / "s.png").exists()
  (tmp_path / "artifacts.json").write_text(
      json.dumps({"selected_features": {"indices": [0, 3, 3], "shape": [2, 2]}}))
  assert plots.write_selection_plot([member], tmp_path / "s.png") == tmp_path / "s.png"
