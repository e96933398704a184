"""Config schema: validation errors name the key and the choices; sweeps expand."""

import pathlib

import jax
import numpy as np
import pytest
import yaml

import gumbax
from experiments import config as cfg_lib
from experiments import sweep

ROOT = pathlib.Path(__file__).resolve().parents[2]
CONFIGS = sorted(ROOT.glob("configs/**/*.yaml"))


def _write(tmp_path, text, name="c.yaml"):
  path = tmp_path / name
  path.write_text(text)
  return path


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_shipped_config_validates_and_expands(path):
  config = cfg_lib.load(path)
  members, _ = sweep.expand(config)
  assert members, f"{path} has no runnable member"
  assert len({m.id for m in members}) == len(members)


def test_defaults_and_name_from_file(tmp_path):
  config = cfg_lib.load(_write(tmp_path, "task: {name: toy}\n", "my_exp.yaml"))
  assert config.name == "my_exp"
  assert config.estimator.name == "relaxed" and config.train.steps == 1000


def test_unknown_key_names_key_and_valid_keys(tmp_path):
  path = _write(tmp_path, "name: x\ntrain: {stepz: 10}\n")
  with pytest.raises(cfg_lib.ConfigError) as err:
    cfg_lib.load(path)
  message = str(err.value)
  assert "train.stepz" in message and "unknown key" in message
  assert "'steps'" in message and "'batch_size'" in message


def test_unknown_key_inside_task_lists_that_tasks_keys(tmp_path):
  path = _write(tmp_path, "name: x\ntask: {name: vae, latents: 3}\n")
  with pytest.raises(cfg_lib.ConfigError) as err:
    cfg_lib.load(path)
  assert "task.vae.latents" in str(err.value) and "'num_latents'" in str(err.value)


def test_wrong_type_names_key(tmp_path):
  path = _write(tmp_path, "name: x\ntrain: {steps: many}\n")
  with pytest.raises(cfg_lib.ConfigError, match=r"train\.steps.*'many'"):
    cfg_lib.load(path)


def test_non_positive_values_rejected(tmp_path):
  with pytest.raises(cfg_lib.ConfigError, match=r"optimizer\.learning_rate"):
    cfg_lib.load(_write(tmp_path, "name: x\noptimizer: {learning_rate: 0}\n"))
  with pytest.raises(cfg_lib.ConfigError, match=r"temperature\.init"):
    cfg_lib.load(_write(tmp_path, "name: x\ntemperature: {init: -1}\n"))


def test_unknown_estimator_lists_registry(tmp_path):
  path = _write(tmp_path, "name: x\nestimator: gumbel_magic\n")
  with pytest.raises(cfg_lib.ConfigError) as err:
    cfg_lib.load(path)
  assert "gumbel_magic" in str(err.value)
  for name in gumbax.estimators.names():
    assert repr(name) in str(err.value)


def test_unknown_task_lists_tasks(tmp_path):
  with pytest.raises(cfg_lib.ConfigError) as err:
    cfg_lib.load(_write(tmp_path, "name: x\ntask: {name: mnist_gan}\n"))
  for name in cfg_lib.TASKS:
    assert name in str(err.value)


def test_unknown_estimator_option_lists_valid_ones(tmp_path):
  path = _write(tmp_path, "name: x\nestimator: {name: rloo, options: {samples: 4}}\n")
  with pytest.raises(cfg_lib.ConfigError, match=r"samples.*num_samples"):
    cfg_lib.load(path)


def test_estimator_that_cannot_train_the_task(tmp_path):
  path = _write(tmp_path, "name: x\ntask: {name: vae, distribution: categorical}\nestimator: disarm\n")
  with pytest.raises(cfg_lib.ConfigError, match="bernoulli"):
    cfg_lib.load(path)
  with pytest.raises(cfg_lib.ConfigError, match="enumerates"):
    cfg_lib.load(_write(tmp_path, "name: x\ntask: {name: vae}\nestimator: exact\n"))


def test_steps_must_align_with_log_every(tmp_path):
  with pytest.raises(cfg_lib.ConfigError, match=r"train\.steps \(25\).*log_every \(10\)"):
    cfg_lib.load(_write(tmp_path, "name: x\ntrain: {steps: 25, log_every: 10}\n"))


def test_yaml_syntax_error_and_missing_file(tmp_path):
  with pytest.raises(cfg_lib.ConfigError, match="not valid YAML"):
    cfg_lib.load(_write(tmp_path, "name: [x\n"))
  with pytest.raises(cfg_lib.ConfigError, match="does not exist"):
    cfg_lib.load(tmp_path / "nope.yaml")


def test_overrides_are_parsed_as_yaml_and_validated(tmp_path):
  path = _write(tmp_path, "name: x\ntrain: {steps: 100}\n")
  config = cfg_lib.load(path, ["train.steps=20", "sweep.seeds=[3, 4]", "estimator=rloo",
                               "task.target=0.499"])
  assert config.train.steps == 20 and config.sweep.seeds == [3, 4]
  assert config.estimator.name == "rloo" and config.task.target == 0.499
  with pytest.raises(cfg_lib.ConfigError, match="dotted.key=value"):
    cfg_lib.load(path, ["train.steps"])
  with pytest.raises(cfg_lib.ConfigError, match=r"train\.stepz"):
    cfg_lib.load(path, ["train.stepz=3"])


def test_expand_is_the_product_and_skips_incompatible_pairs(tmp_path):
  path = _write(tmp_path, """
name: x
sweep:
  tasks: [{name: toy, distribution: bernoulli}, {name: toy, distribution: categorical}]
  estimators: [reinforce, disarm, {name: rloo, options: {num_samples: 3}}]
  seeds: [0, 1]
  learning_rates: [0.1, 0.01]
""")
  config = cfg_lib.load(path)
  members, skipped = sweep.expand(config)
  # disarm is Bernoulli-only: 2 tasks x 3 estimators - 1 pair, x 2 seeds x 2 learning rates.
  assert len(members) == (2 * 3 - 1) * 2 * 2
  assert len(skipped) == 1 and "disarm" in skipped[0] and "categorical" in skipped[0]
  ids = {m.id for m in members}
  assert "toy-bernoulli-t0.45-rloo_num_samples=3-lr0.01-seed1" in ids
  for m in members:
    assert m.config.sweep == cfg_lib.Sweep()
    assert m.config.seed in (0, 1) and m.config.optimizer.learning_rate in (0.1, 0.01)
  groups = {m.group for m in members}
  assert len(groups) == len(members) // 2  # the seeds of a group share everything else


def test_sweep_temperatures_set_the_initial_temperature(tmp_path):
  config = cfg_lib.load(_write(tmp_path, "name: x\nsweep: {temperatures: [0.5, 2.0]}\n"))
  members, _ = sweep.expand(config)
  assert sorted(m.config.temperature.init for m in members) == [0.5, 2.0]
  assert gumbax.estimators.get("relaxed").uses_temperature
  assert not gumbax.estimators.get("rebar").uses_temperature
  assert not gumbax.estimators.get("reinforce").uses_temperature


def test_the_schedule_drives_the_estimators_that_declare_a_sampling_temperature(tmp_path):
  from jax.sharding import Mesh
  from experiments import program
  from experiments.tasks import make_task
  mesh = Mesh(np.array(jax.devices()), ("data",))
  for name in gumbax.estimators.names():
    assert program.learns_temperature(name) == (name in ("rebar", "relax"))
  config = cfg_lib.load(_write(tmp_path, "name: x\nestimator: rebar\ntemperature: {init: 0.3}\n"))
  assert program.build_estimator(config).lambda_init == 0.3  # the learned lambda starts at init
  rebar = program.Program(config, make_task(config), mesh)
  assert rebar.temperature_at(5) is None and rebar.evaluation_temperature(5) == 1.0
  config = cfg_lib.load(_write(tmp_path, "name: x\nestimator: relaxed\ntemperature: {init: 0.3}\n"))
  assert program.build_estimator(config) == gumbax.estimators.get(  # tau comes per call
      "relaxed", distribution=config.task.distribution)
  relaxed = program.Program(config, make_task(config), mesh)
  assert relaxed.uses_temperature and float(relaxed.temperature_at(5)) == np.float32(0.3)


def test_an_estimator_entry_changes_only_the_optimizer_fields_it_sets(tmp_path):
  path = _write(tmp_path, """
name: x
optimizer: {name: adam, learning_rate: 0.01, decay_rate: 0.9, decay_steps: 100}
sweep:
  estimators: [relaxed, {name: reinforce, optimizer: {decay_rate: 1.0, cv_learning_rate: 0.5}}]
  learning_rates: [0.01, 0.001]
""")
  config = cfg_lib.load(path)
  members, _ = sweep.expand(config)
  by_id = {m.id: m.config.optimizer for m in members}
  assert len(by_id) == 4
  for member_id, opt in by_id.items():
    assert opt.name == "adam" and opt.decay_steps == 100
    assert opt.learning_rate == (0.01 if "lr0.01" in member_id else 0.001)
    if "reinforce" in member_id:
      assert opt.decay_rate == 1.0 and opt.cv_learning_rate == 0.5
    else:
      assert opt.decay_rate == 0.9 and opt.cv_learning_rate is None
  # The saved YAML of a run reloads to the same members (what `run RUN_DIR` resumes).
  reloaded = cfg_lib.validate(yaml.safe_load(cfg_lib.to_yaml(config)))
  assert [(m.id, m.config) for m in sweep.expand(reloaded)[0]] == [(m.id, m.config) for m in members]


def test_an_estimator_optimizer_is_validated_and_not_set_twice(tmp_path):
  with pytest.raises(cfg_lib.ConfigError, match=r"estimator\.optimizer\.decay_rate"):
    cfg_lib.load(_write(tmp_path, "name: x\nestimator: {name: relaxed, optimizer: {decay_rate: 2}}\n"))
  with pytest.raises(cfg_lib.ConfigError, match=r"estimator\.optimizer\.decay: unknown key"):
    cfg_lib.load(_write(tmp_path, "name: x\nestimator: {name: relaxed, optimizer: {decay: 1}}\n"))
  with pytest.raises(cfg_lib.ConfigError, match="give the rate in one place"):
    cfg_lib.load(_write(tmp_path, """
name: x
sweep: {estimators: [{name: relaxed, optimizer: {learning_rate: 0.1}}], learning_rates: [0.01]}
"""))
  config = cfg_lib.load(_write(tmp_path, """
name: x
sweep: {estimators: [relaxed, {name: relaxed, optimizer: {decay_rate: 0.5}}]}
"""))
  with pytest.raises(cfg_lib.ConfigError, match="same member twice.*label"):
    sweep.expand(config)
  config = cfg_lib.load(_write(tmp_path, """
name: x
optimizer: {learning_rate: 0.2}
estimator: {name: relaxed, optimizer: {learning_rate: 0.05, name: sgd}}
"""))
  (member,), _ = sweep.expand(config)
  assert member.config.optimizer.learning_rate == 0.05 and member.config.optimizer.name == "sgd"


def test_slope_annealing_needs_a_scheduled_estimator_and_the_vae_task(tmp_path):
  slope = "temperature: {schedule: exponential, rate: 0.01, every: 10, slope: true}\n"
  config = cfg_lib.load(_write(tmp_path, "name: x\ntask: {name: vae}\nestimator: straight_through\n" + slope))
  assert config.temperature.slope and not cfg_lib.Temperature().slope  # off by default
  with pytest.raises(cfg_lib.ConfigError, match="temperature.slope needs an estimator"):
    cfg_lib.load(_write(tmp_path, "name: x\ntask: {name: vae}\nestimator: muprop\n" + slope))
  with pytest.raises(cfg_lib.ConfigError, match="learns its own"):
    cfg_lib.load(_write(tmp_path, "name: x\ntask: {name: vae}\nestimator: rebar\n" + slope))
  with pytest.raises(cfg_lib.ConfigError, match="vae task only"):
    cfg_lib.load(_write(tmp_path, "name: x\ntask: {name: toy}\nestimator: straight_through\n" + slope))
  # In a sweep, an entry's own temperature section decides, and other tasks are skipped.
  config = cfg_lib.load(_write(tmp_path, """
name: x
sweep:
  tasks: [{name: toy}, {name: vae}]
  estimators:
    - straight_through
    - {name: straight_through, label: slope_st, temperature: {schedule: exponential, slope: true}}
"""))
  members, skipped = sweep.expand(config)
  assert sorted(m.id for m in members) == [
      "toy-bernoulli-t0.45-straight_through-seed0", "vae-categorical-20x10-slope_st-seed0",
      "vae-categorical-20x10-straight_through-seed0"]
  assert len(skipped) == 1 and "slope_st" in skipped[0] and "toy" in skipped[0]
  slope_member = next(m for m in members if "slope_st" in m.id)
  assert slope_member.config.temperature.slope


def test_an_estimator_entry_can_be_limited_to_some_tasks(tmp_path):
  path = tmp_path / "c.yaml"
  path.write_text("name: c\nsweep:\n  tasks: [{name: toy}, {name: vae}]\n"
                  "  estimators: [relaxed, {name: rebar, tasks: [toy]}]\n")
  members, _ = sweep.expand(cfg_lib.load(path))
  assert sorted(m.id for m in members) == [
      "toy-bernoulli-t0.45-rebar-seed0", "toy-bernoulli-t0.45-relaxed-seed0",
      "vae-categorical-20x10-relaxed-seed0"]
  with pytest.raises(cfg_lib.ConfigError, match="names none of the sweep's tasks"):
    cfg_lib.load(path, ["sweep.estimators=[{name: rebar, tasks: [structured_output]}]"])
  with pytest.raises(cfg_lib.ConfigError, match="sweep.estimators.0.tasks.0"):
    cfg_lib.load(path, ["sweep.estimators=[{name: rebar, tasks: [toys]}]"])
