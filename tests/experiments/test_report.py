"""Tests for the experiments.report package on synthetic run folders and variance rows."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from experiments import report as rp
from experiments.report import formatting, grouping, plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TASKS = ("toy", "vae")
ESTIMATORS = {"rloo": None, "gumbel_rao(num_samples=10)": 0.5}  # estimator -> temperature
FINAL_KEYS = ("train/loss", "valid/nll", "test/neg_elbo", "test/nll")


def _final(task: str, estimator: str, seed: int) -> dict[str, float]:
  """Deterministic, distinct final metrics per member (some above 10, some below)."""
  rng = np.random.default_rng([TASKS.index(task), list(ESTIMATORS).index(estimator), seed])
  scale = 100.0 if task == "vae" else 0.1
  return {key: float(scale * (1 + rng.random())) for key in FINAL_KEYS}


def _rows(task: str, estimator: str, seed: int) -> list[dict]:
  temperature = ESTIMATORS[estimator]
  rows = []
  for step in range(0, 101, 10):
    row = {"step": step, "split": "train", "wall_time": step / 10, "learning_rate": 1e-3,
           "loss": 5.0 / (1 + step) + 0.1 * seed}
    if temperature is not None:
      row["temperature"] = max(temperature, 1.0 - step / 100)
      if task == "toy":
        row["grad_variance"] = 1.0 / (1 + step) + 0.01 * seed
    rows.append(row)
    if step % 50 == 0:
      rows.append({"step": step, "split": "valid", "wall_time": step / 10,
                   "neg_elbo": 4.0 - step / 50 + seed, "nll": 3.5 - step / 50 + seed,
                   "iw_samples": 100})
  rows.append({"step": 100, "split": "test", "wall_time": 11.0, "nll": 1.2 + seed})
  return rows


def _write_member(run: Path, task: str, estimator: str, seed: int, *, summary: bool = True,
                  status: str = "completed", rows: list[dict] | None = None,
                  final: dict | None = None) -> Path:
  member_id = f"{task}-{estimator}-s{seed}"
  member = run / "members" / member_id
  member.mkdir(parents=True)
  rows = _rows(task, estimator, seed) if rows is None else rows
  (member / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  if summary:
    (member / "summary.json").write_text(json.dumps({
        "member": member_id, "task": task, "estimator": estimator, "seed": seed,
        "temperature": ESTIMATORS[estimator], "learning_rate": 1e-3, "hyperparameters": {},
        "status": status, "message": "", "steps": 100, "wall_time": 10.0 + seed,
        "final": _final(task, estimator, seed) if final is None else final}))
  return member


def _make_run(run: Path, seeds=(0, 1, 2), tasks=TASKS, estimators=tuple(ESTIMATORS)) -> Path:
  """Two tasks x two estimators x seeds, plus the awkward cases of a real run."""
  for task in tasks:
    for estimator in estimators:
      for seed in seeds:
        _write_member(run, task, estimator, seed)
  first = run / "members" / f"{tasks[0]}-{estimators[0]}-s{seeds[0]}" / "metrics.jsonl"
  rows = _rows(tasks[0], estimators[0], seeds[0])
  for row in rows:  # NaN at steps every seed logged: gaps in curves, no warnings.
    if row["step"] == 50:
      row["loss" if row["split"] == "train" else "nll"] = math.nan
  first.write_text("".join(json.dumps(r) + "\n" for r in rows))
  with first.open("a") as f:
    f.write(json.dumps({"step": 105, "split": "train", "loss": float("nan")}) + "\n")
    f.write('{"step": 110, "split": "tra')  # Killed mid-write.
  _write_member(run, tasks[0], estimators[0], 99, summary=False)
  return run


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
  return _make_run(tmp_path / "run")


def _expected(task: str, estimator: str, key: str, seeds=(0, 1, 2)) -> tuple[float, float]:
  values = np.array([_final(task, estimator, s)[key] for s in seeds])
  return float(np.mean(values)), float(np.std(values, ddof=1))


def _row_for(header, rows, task, estimator):
  (row,) = [r for r in rows if r[0] == task and r[1] == estimator]
  return dict(zip(header, row))


def test_read_metrics_skips_truncated_lines_and_keeps_nan(tmp_path: Path):
  path = tmp_path / "metrics.jsonl"
  path.write_text('{"step": 0, "split": "train", "loss": NaN}\n\n[1, 2]\n{"split": "train"}\n'
                  '{"step": 1, "split": "valid", "nll": Infinity}\n{"step": 2, "sp')
  rows = rp.read_metrics(path)
  assert [r["step"] for r in rows] == [0, 1]
  assert math.isnan(rows[0]["loss"]) and rows[1]["nll"] == math.inf
  assert rp.read_metrics(tmp_path / "missing.jsonl") == []


def test_load_run_skips_member_without_summary(run_dir: Path):
  skipped = []
  members = rp.load_run(run_dir, skipped)
  assert len(members) == len(TASKS) * len(ESTIMATORS) * 3
  assert len(skipped) == 1 and "toy-rloo-s99" in skipped[0]
  nan_member = next(m for m in members if m.dir.name == "toy-rloo-s0")
  assert nan_member.metrics[-1]["step"] == 105 and math.isnan(nan_member.metrics[-1]["loss"])


def test_group_key_ignores_seed():
  a = {"task": "t", "estimator": "e", "temperature": 0.5, "learning_rate": 0.1, "seed": 0}
  key = lambda summary: rp.group_key(rp.MemberResult(Path("."), summary, []))
  assert key(a) == key({**a, "seed": 7})
  assert key(a) != key({**a, "temperature": 1.0})


def test_a_different_model_is_its_own_group(tmp_path: Path):
  """Runs whose task configs differ in a model setting the short task name leaves out
  (here the prior) are not pooled as seeds, and the table says which is which;
  evaluation settings (m) do not split a group, and default settings add nothing."""
  task = {"name": "vae", "distribution": "bernoulli", "num_latents": 200, "num_classes": 10,
          "encoder": [512, 256], "decoder": [256, 512], "prior": "uniform",
          "eval_samples": 100, "final_eval_samples": 1000}
  summaries = {
      "uniform-s0": task, "uniform-s1": {**task, "final_eval_samples": 100},
      "learned-s0": {**task, "prior": "learned"}, "narrow-s0": {**task, "encoder": [256, 128]}}
  for i, (name, hyper) in enumerate(summaries.items()):
    member = tmp_path / "run" / "members" / name
    member.mkdir(parents=True)
    (member / "metrics.jsonl").write_text("")
    (member / "summary.json").write_text(json.dumps({
        "member": name, "task": "vae-bernoulli-200", "estimator": "muprop", "seed": i,
        "temperature": None, "learning_rate": 3e-4, "status": "completed", "steps": 10,
        "hyperparameters": {"task": hyper}, "final": {"test/neg_elbo": 100.0 + i}}))
  members = rp.load_run(tmp_path / "run", [])
  groups = {rp.group_key(m): sorted(x.dir.name for x in members if rp.group_key(x) == rp.group_key(m))
            for m in members}
  assert {key.task: names for key, names in groups.items()} == {
      "vae-bernoulli-200": ["uniform-s0", "uniform-s1"],
      "vae-bernoulli-200-prior=learned": ["learned-s0"],
      "vae-bernoulli-200-encoder=256_128": ["narrow-s0"]}
  md, _ = rp.write_tables(members, tmp_path / "out")
  text = Path(md).read_text()
  assert "| vae-bernoulli-200-prior=learned | muprop |" in text
  assert "| vae-bernoulli-200 | muprop |" in text
  # A summary without the task's hyperparameters keeps its bare name.
  assert rp.task_text({"task": "vae", "hyperparameters": {"task": {"final_eval_samples": 100}}}) == "vae"


def test_other_data_or_training_length_is_its_own_group(tmp_path: Path):
  """Runs that trained on other data (dynamic binarization) or for another number of
  steps are not pooled as seeds; where the data is read from does not split a group;
  the plot labels name the training length and the data setting where they vary, in
  one plot per task name."""
  task = {"name": "vae", "distribution": "categorical", "num_latents": 20, "num_classes": 10,
          "prior": "learned"}
  data = {"binarization": "fixed", "binarization_seed": 0, "dir": None, "download": True}
  train = {"steps": 50000, "batch_size": 100}
  runs = {"fixed-s0": (data, train), "fixed-s1": ({**data, "dir": "/elsewhere"}, train),
          "dynamic-s0": ({**data, "binarization": "dynamic"}, train),
          "long-s0": (data, {**train, "steps": 150000})}
  for i, (name, (d, t)) in enumerate(runs.items()):
    member = tmp_path / "run" / "members" / name
    member.mkdir(parents=True)
    (member / "metrics.jsonl").write_text(
        json.dumps({"step": t["steps"], "split": "valid", "neg_elbo": 110.0 + i}) + "\n")
    (member / "summary.json").write_text(json.dumps({
        "member": name, "task": "vae-categorical-20x10", "estimator": "muprop", "seed": i,
        "temperature": None, "learning_rate": 3e-4, "status": "completed", "steps": t["steps"],
        "hyperparameters": {"task": task, "data": d, "train": t},
        "final": {"test/neg_elbo": 110.0 + i}}))
  members = rp.load_run(tmp_path / "run", [])
  groups = grouping.groups(members)
  assert sorted(sorted(m.dir.name for m in ms) for ms in groups.values()) == [
      ["dynamic-s0"], ["fixed-s0", "fixed-s1"], ["long-s0"]]
  assert {key.task for key in groups} == {"vae-categorical-20x10-prior=learned",
                                          "vae-categorical-20x10-prior=learned-binarization=dynamic"}
  assert sorted(plots.legend_labels(groups).values()) == [
      "muprop prior=learned steps=150000 batch=100", "muprop prior=learned steps=50000 batch=100",
      "muprop prior=learned-binarization=dynamic steps=50000 batch=100"]
  # One plot per task name: the data setting is in the legend, not another file.
  assert [p.name for p in rp.write_plots(members, tmp_path / "out")] == [
      "learning_curves_vae-categorical-20x10.png"]
  assert rp.train_text({"task": "vae"}) == ""
  header, rows = rp.comparison_table(members)
  assert header[4:6] == ["training", "seeds"]
  assert sorted((r[0], r[4], r[5]) for r in rows) == [
      ("vae-categorical-20x10-prior=learned", "steps=150000 batch=100", "1"),
      ("vae-categorical-20x10-prior=learned", "steps=50000 batch=100", "2"),
      ("vae-categorical-20x10-prior=learned-binarization=dynamic", "steps=50000 batch=100", "1")]
  _, csv_path = rp.write_tables(members, tmp_path / "out")
  with csv_path.open() as f:
    assert sorted(r["train"] for r in csv.DictReader(f)) == [
        "steps=150000 batch=100", "steps=50000 batch=100", "steps=50000 batch=100"]
  one_length = [m for m in members if m.dir.name != "long-s0"]
  assert "training" not in rp.comparison_table(one_length)[0]


def test_an_annealed_temperature_is_its_own_group(tmp_path: Path):
  """Annealed and constant-temperature runs of one estimator are not pooled as seeds;
  a schedule that does not drive the estimator (no logged temperature) is ignored."""
  annealed = {"schedule": "exponential", "init": 1.0, "final": 0.5, "rate": 3e-5, "every": 1000}
  cases = (("constant", "gumbel_rao(num_samples=10)", {"schedule": "constant", "init": 1.0}),
           ("annealed", "gumbel_rao(num_samples=10)", annealed),
           ("linear", "gumbel_rao(num_samples=10)", {"schedule": "linear", "final": 0.25}),
           ("unused", "rloo", annealed),
           ("sloped", "gumbel_rao(num_samples=10)", {**annealed, "slope": True}))
  members = []
  for run, estimator, temperature in cases:
    for seed in (0, 1):
      member = _write_member(tmp_path / run, "vae", estimator, seed)
      summary = json.loads((member / "summary.json").read_text())
      summary["temperature"] = 1.0
      summary["hyperparameters"] = {"temperature": temperature, "train": {"steps": 500}}
      (member / "summary.json").write_text(json.dumps(summary))
    members += rp.load_run(tmp_path / run)
  assert [rp.temperature_schedule(m) for m in members[::2]] == [
      "", "exponential 3e-05/1000 to 0.5", "linear to 0.25 over 500", "",
      "exponential 3e-05/1000 to 0.5, slope"]
  header, rows = rp.comparison_table(members)
  assert [(r[1], r[2], r[4]) for r in rows] == [
      ("gumbel_rao(num_samples=10)", "1", "2"),
      ("gumbel_rao(num_samples=10)", "1, exponential 3e-05/1000 to 0.5", "2"),
      ("gumbel_rao(num_samples=10)", "1, exponential 3e-05/1000 to 0.5, slope", "2"),
      ("gumbel_rao(num_samples=10)", "1, linear to 0.25 over 500", "2"),
      ("rloo", "1", "2")]
  _, csv_path = rp.write_tables(members, tmp_path / "out")
  with csv_path.open() as f:
    assert [r["temperature_schedule"] for r in csv.DictReader(f)] == [
        "", "exponential 3e-05/1000 to 0.5", "exponential 3e-05/1000 to 0.5, slope",
        "linear to 0.25 over 500", ""]
  assert sorted(plots.legend_labels(grouping.groups(members)).values()) == [
      "gumbel_rao(num_samples=10) τ=1", "gumbel_rao(num_samples=10) τ=1, exponential 3e-05/1000 to 0.5",
      "gumbel_rao(num_samples=10) τ=1, exponential 3e-05/1000 to 0.5, slope",
      "gumbel_rao(num_samples=10) τ=1, linear to 0.25 over 500", "rloo τ=1"]


def test_a_decayed_rate_is_its_own_group_in_tables_and_plots(tmp_path: Path):
  """Runs of one estimator with and without a learning-rate decay are not pooled as seeds."""
  for run, decay in (("constant", 1.0), ("decayed", 0.9)):
    for seed in (0, 1):
      member = _write_member(tmp_path / run, "vae", "rloo", seed)
      summary = json.loads((member / "summary.json").read_text())
      summary["hyperparameters"] = {"optimizer": {"decay_rate": decay, "decay_steps": 1000}}
      (member / "summary.json").write_text(json.dumps(summary))
  members = rp.load_run(tmp_path / "constant") + rp.load_run(tmp_path / "decayed")
  assert rp.lr_decay(members[0].summary) == "" and rp.lr_decay(members[-1].summary) == "x0.9/1000"
  header, rows = rp.comparison_table(members)
  assert [(r[3], r[4]) for r in rows] == [("0.001", "2"), ("0.001 x0.9/1000", "2")]
  _, csv_path = rp.write_tables(members, tmp_path / "out")
  with csv_path.open() as f:
    assert [r["lr_decay"] for r in csv.DictReader(f)] == ["", "x0.9/1000"]
  assert sorted(plots.legend_labels(grouping.groups(members)).values()) == ["rloo lr=0.001", "rloo lr=0.001 x0.9/1000"]


def test_table_mean_std_match_numpy(run_dir: Path):
  header, rows = rp.comparison_table(rp.load_run(run_dir))
  assert header[:5] == ["task", "estimator", "temperature", "learning rate", "seeds"]
  assert header[5:9] == ["test/neg_elbo", "test/nll", "valid/nll", "train/loss"]
  assert "status" not in header and len(rows) == 4
  for task in TASKS:
    for estimator in ESTIMATORS:
      row = _row_for(header, rows, task, estimator)
      assert row["seeds"] == "3"
      for key in FINAL_KEYS:
        mean, std = _expected(task, estimator, key)
        mean_text, std_text = row[key].split(" ± ")
        assert mean_text == (f"{mean:.2f}" if abs(mean) >= 10 else f"{mean:.4g}")
        assert std_text == (f"{std:.2f}" if max(abs(mean), abs(std)) >= 10 else f"{std:.4g}")
      assert row["wall time (s)"] == "11.00" and row["steps"] == "100"


def test_format_rule():
  assert formatting.fmt(1234.5678) == "1234.57"
  assert formatting.fmt(-12.0) == "-12.00"
  assert formatting.fmt(0.0123456) == "0.01235"
  assert formatting.fmt(9.87654) == "9.877"
  assert formatting.fmt(float("nan")) == "nan" and formatting.fmt(float("inf")) == "inf"
  # A std takes its mean's two decimals when the mean has them, else the rule on its own.
  assert formatting.fmt_std(0.298765, 111.41) == "0.30" and formatting.fmt_std(0.001, -12.0) == "0.00"
  assert formatting.fmt_std(0.0123456, 3.1) == "0.01235" and formatting.fmt_std(12.345, 3.1) == "12.35"
  assert formatting.fmt_std(float("nan"), 111.0) == "nan"


def test_single_seed_and_failed_status(tmp_path: Path):
  run = tmp_path / "run"
  _write_member(run, "toy", "rloo", 0)
  _write_member(run, "toy", "rloo", 1, status="nan", final={"test/nll": float("nan")})
  _write_member(run, "vae", "rloo", 0)
  header, rows = rp.comparison_table(rp.load_run(run))
  toy, vae = _row_for(header, rows, "toy", "rloo"), _row_for(header, rows, "vae", "rloo")
  assert toy["status"] == "completed: 1, nan: 1" and vae["status"] == "completed: 1"
  assert toy["test/nll"] == "nan"  # A diverged seed is visible, not averaged away.
  # Only one of the two seeds has train/loss: its value, marked as a partial count.
  assert toy["train/loss"] == formatting.fmt(_final("toy", "rloo", 0)["train/loss"]) + " (n=1)"
  assert vae["test/nll"] == formatting.fmt(_final("vae", "rloo", 0)["test/nll"])  # One seed: no "±".


def test_csv_columns_parse_back(run_dir: Path, tmp_path: Path):
  _, csv_path = rp.write_tables(rp.load_run(run_dir), tmp_path / "out")
  with csv_path.open() as f:
    records = list(csv.DictReader(f))
  assert len(records) == 4
  assert not any("±" in value for r in records for value in r.values())
  for record in records:
    task, estimator = record["task"], record["estimator"]
    for key in FINAL_KEYS:
      mean, std = _expected(task, estimator, key)
      assert float(record[f"{key}_mean"]) == pytest.approx(mean, rel=1e-12)
      assert float(record[f"{key}_std"]) == pytest.approx(std, rel=1e-12)
    assert float(record["learning_rate"]) == 1e-3
    assert record["temperature"] == ("" if ESTIMATORS[estimator] is None else "0.5")
  _write_member(tmp_path / "one", "toy", "rloo", 0)
  single = rp.write_tables(rp.load_run(tmp_path / "one"), tmp_path / "single")[1]
  with single.open() as f:
    (record,) = list(csv.DictReader(f))
  assert record["test/nll_std"] == "" and float(record["test/nll_mean"]) == pytest.approx(
      _final("toy", "rloo", 0)["test/nll"], rel=1e-12)


def test_markdown_table_shape(run_dir: Path, tmp_path: Path):
  md_path, _ = rp.write_tables(rp.load_run(run_dir), tmp_path)
  sections = md_path.read_text(encoding="utf-8").strip().split("\n\n### ")
  assert [s.splitlines()[0].removeprefix("### ") for s in sections] == list(TASKS)
  for section in sections:  # heading, blank, header, separator, one row per estimator
    lines = section.splitlines()[2:]
    assert len(lines) == 2 + 2
    assert set(lines[1].replace(" ", "")) == set("|-")
    widths = {line.count(" | ") for line in lines}
    assert len(widths) == 1 and widths.pop() == 5 + len(FINAL_KEYS) + 2 - 1


def test_markdown_has_one_table_per_task_with_its_own_columns(tmp_path: Path):
  run = tmp_path / "run"
  _write_member(run, "toy", "rloo", 0, final={"train/loss": 0.2, "train/exact_loss": 0.25})
  _write_member(run, "vae", "rloo", 0, final={"test/nll": 101.0, "test/kl": 12.0})
  text = rp.write_tables(rp.load_run(run), tmp_path / "out")[0].read_text()
  toy, vae = text.split("### ")[1:]
  assert toy.startswith("toy\n") and vae.startswith("vae\n")
  assert "train/exact_loss" in toy and "test/nll" not in toy
  assert "test/kl" in vae and "train/exact_loss" not in vae
  # One task: one table, no heading (as before).
  _write_member(tmp_path / "one", "vae", "rloo", 0, final={"test/nll": 101.0})
  assert not rp.write_tables(rp.load_run(tmp_path / "one"), tmp_path / "o1")[0].read_text(
      ).startswith("#")


def _assert_png(path: Path):
  data = path.read_bytes()
  assert data[:8] == PNG_MAGIC and len(data) > 10_000


def test_plots_written(run_dir: Path, tmp_path: Path):
  paths = rp.write_plots(rp.load_run(run_dir), tmp_path)
  names = sorted(p.name for p in paths)
  assert names == ["gradient_variance_toy.png", "learning_curves_toy.png",
                   "learning_curves_vae.png", "temperature.png"]
  for path in paths:
    assert path.parent == tmp_path / "plots"
    _assert_png(path)


def test_a_group_keeps_its_style_when_another_misses_a_panel(tmp_path: Path, monkeypatch):
  """Colors are per group, not per panel, and one figure legend names every group."""
  import matplotlib.pyplot as plt
  figures = []
  monkeypatch.setattr(plt, "close", figures.append)
  members = [rp.MemberResult(tmp_path / n, {"estimator": n, "task": "vae"}, []) for n in "abc"]
  groups = {rp.group_key(m): [m] for m in members}
  labels = {key: key.estimator for key in groups}
  curve = {0: 1.0, 10: 2.0}
  panels = [("all", "y", lambda m: curve),
            ("no a", "y", lambda m: {} if m.summary["estimator"] == "a" else curve)]
  assert plots.draw(tmp_path / "x.png", "t", panels, groups, labels)
  (fig,) = figures
  first, second = ([line.get_color() for line in ax.lines] for ax in fig.axes)
  assert len(set(first)) == 3 and second == first[1:]
  (legend,) = fig.legends
  assert [t.get_text() for t in legend.get_texts()] == ["a", "b", "c"]
  assert [ax.get_legend() for ax in fig.axes] == [None, None]
  _assert_png(tmp_path / "x.png")
  # Twelve groups: the eleventh takes the first color again, with another line style.
  members = [rp.MemberResult(tmp_path / str(i), {"estimator": f"e{i:02d}", "task": "vae"}, [])
             for i in range(12)]
  groups = {rp.group_key(m): [m] for m in members}
  assert plots.draw(tmp_path / "y.png", "t", panels[:1], groups, {k: k.estimator for k in groups})
  lines = figures[-1].axes[0].lines
  styles = [(line.get_color(), line.get_linestyle()) for line in lines]
  assert len(set(styles)) == 12 and styles[10] == ("C0", "--")


def test_plots_skipped_without_temperature_or_variance(tmp_path: Path):
  run = _make_run(tmp_path / "run", estimators=("rloo",))
  paths = rp.write_plots(rp.load_run(run), tmp_path / "out")
  assert sorted(p.name for p in paths) == ["learning_curves_toy.png", "learning_curves_vae.png"]
  assert sorted(f.name for f in (tmp_path / "out" / "plots").iterdir()) == sorted(
      p.name for p in paths)


def test_gradient_variance_drops_non_positive_values(tmp_path: Path):
  run = tmp_path / "run"
  rows = _rows("toy", "gumbel_rao(num_samples=10)", 0)
  for row in rows:
    if "grad_variance" in row:
      row["grad_variance"] = 0.0 if row["step"] % 20 else -1.0
  _write_member(run, "toy", "gumbel_rao(num_samples=10)", 0, rows=rows)
  paths = rp.write_plots(rp.load_run(run), tmp_path)
  assert sorted(p.name for p in paths) == ["learning_curves_toy.png", "temperature.png"]
  assert plots.positive({0: 0.0, 1: -2.0, 2: math.nan, 3: math.inf, 4: 0.5}) == {4: 0.5}


def test_ema_and_alignment():
  assert plots.ema({0: 1.0, 1: float("nan"), 2: 3.0}, alpha=0.5) == {0: 1.0, 1: 1.0, 2: 2.0}
  steps, mean, lo, hi = plots.aggregate([{0: 1.0, 5: 2.0, 10: 3.0}, {0: 3.0, 10: 5.0}])
  np.testing.assert_array_equal(steps, [0, 10])
  np.testing.assert_array_equal(mean, [2.0, 4.0])
  np.testing.assert_array_equal(lo, [1.0, 3.0])
  np.testing.assert_array_equal(hi, [3.0, 5.0])
  assert plots.aggregate([{0: 1.0}, {1: 1.0}]) is None


def test_report_single_run_defaults_to_run_dir(run_dir: Path):
  info = rp.report(run_dir)
  assert info["members"] == 12 and len(info["skipped"]) == 1
  assert info["table_md"] == run_dir / "table.md" and info["table_csv"].is_file()
  assert len(info["plots"]) == 4 and all(p.is_file() for p in info["plots"])


def test_report_merges_run_dirs(tmp_path: Path):
  first = _make_run(tmp_path / "a")
  second = _make_run(tmp_path / "b", seeds=(3, 4), tasks=("toy",))
  info = rp.report([first, second], tmp_path / "out")
  assert info["members"] == 12 + 4 and len(info["skipped"]) == 2
  with info["table_csv"].open() as f:
    seeds = {(r["task"], r["estimator"]): int(r["seeds"]) for r in csv.DictReader(f)}
  assert seeds == {("toy", e): 5 for e in ESTIMATORS} | {("vae", e): 3 for e in ESTIMATORS}
  with info["table_csv"].open() as f:
    toy = next(r for r in csv.DictReader(f) if r["task"] == "toy" and r["estimator"] == "rloo")
  mean, _ = _expected("toy", "rloo", "test/nll", seeds=(0, 1, 2, 3, 4))
  assert float(toy["test/nll_mean"]) == pytest.approx(mean, rel=1e-12)
  with pytest.raises(ValueError, match="out_dir is required"):
    rp.report([first, second])


def test_report_errors(tmp_path: Path):
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(ValueError, match="empty"):
    rp.report(empty)
  unfinished = tmp_path / "unfinished"
  _write_member(unfinished, "toy", "rloo", 0, summary=False)
  with pytest.raises(ValueError, match="unfinished"):
    rp.report([_make_run(tmp_path / "ok"), unfinished], tmp_path / "out")
  with pytest.raises(FileNotFoundError, match="missing"):
    rp.report(tmp_path / "missing")
  with pytest.raises(ValueError, match="at least one"):
    rp.report([])


def _rate_member(run: Path, estimator: str, seed: int, lr: float, decay: float,
                 valid: float | None) -> None:
  """A vae member at learning rate ``lr`` (decay ``decay``) with final valid/neg_elbo ``valid``.

  ``valid=None``: a member that stopped without final metrics (as a diverged one does).
  """
  final = {} if valid is None else {"valid/neg_elbo": valid, "test/neg_elbo": valid - 1.0}
  member = _write_member(run, "vae", estimator, seed, final=final)
  summary = json.loads((member / "summary.json").read_text())
  summary["learning_rate"] = lr
  summary["hyperparameters"] = {"optimizer": {"decay_rate": decay, "decay_steps": 1000}}
  (member / "summary.json").write_text(json.dumps(summary))


def test_select_by_picks_the_lowest_mean_per_estimator(tmp_path: Path):
  """Per estimator, the rate/decay whose seeds have the lowest mean metric; NaN is never chosen."""
  cases = {  # (run, estimator, lr, decay): valid -ELBO of seeds 0 and 1
      ("a", "rloo", 1e-3, 1.0): (110.0, 114.0),   # mean 112: lowest for rloo, not the best seed
      ("b", "rloo", 3e-4, 1.0): (109.0, 116.0),   # mean 112.5, holds the best single seed
      ("c", "rloo", 1e-3, 0.9): (113.0, 113.0),
      ("d", "gumbel_rao(num_samples=10)", 1e-3, 1.0): (90.0, math.nan),  # diverged seed
      ("e", "gumbel_rao(num_samples=10)", 3e-4, 1.0): (95.0, 96.0),
      ("f", "gumbel_rao(num_samples=10)", 1e-4, 1.0): (91.0, None),  # no final metrics
  }
  for (run, estimator, lr, decay), values in cases.items():
    for seed, value in enumerate(values):
      _rate_member(tmp_path / run, estimator, seed, lr, decay, value)
  members = [m for run in "abcdef" for m in rp.load_run(tmp_path / run)]
  chosen, unchosen = rp.select_by(members, "valid/neg_elbo")
  assert [(k.estimator, k.learning_rate, k.lr_decay) for k in chosen] == [
      ("gumbel_rao(num_samples=10)", 3e-4, ""), ("rloo", 1e-3, "")]
  assert unchosen == []
  with pytest.raises(ValueError, match="valid/accuracy.*valid/neg_elbo"):
    rp.select_by(members, "valid/accuracy")

  info = rp.report([tmp_path / r for r in "abcdef"], tmp_path / "out", select="valid/neg_elbo")
  with info["selected_csv"].open() as f:
    rows = list(csv.DictReader(f))
  assert [(r["estimator"], float(r["learning_rate"]), r["lr_decay"]) for r in rows] == [
      ("gumbel_rao(num_samples=10)", 3e-4, ""), ("rloo", 1e-3, "")]
  assert float(rows[1]["valid/neg_elbo_mean"]) == pytest.approx(112.0)
  assert info["selected_md"].read_text().count("\n") == 2 + 2  # header, rule, two rows
  with info["table_csv"].open() as f:
    assert len(list(csv.DictReader(f))) == 6  # the full table keeps every rate


def test_select_notes_an_estimator_without_a_finite_value(tmp_path: Path):
  _rate_member(tmp_path / "a", "rloo", 0, 1e-3, 1.0, math.nan)
  _rate_member(tmp_path / "a", "gumbel_rao(num_samples=10)", 0, 1e-3, 1.0, 100.0)
  info = rp.report(tmp_path / "a", select="valid/neg_elbo")
  assert info["skipped"] == [
      "vae rloo: no learning rate with a finite valid/neg_elbo for every seed"]
  with info["selected_csv"].open() as f:
    assert [r["estimator"] for r in csv.DictReader(f)] == ["gumbel_rao(num_samples=10)"]


def test_cli_report_select(tmp_path: Path, capsys):
  from experiments import cli
  _rate_member(tmp_path / "a", "rloo", 0, 1e-3, 1.0, 120.0)
  _rate_member(tmp_path / "b", "rloo", 0, 3e-4, 1.0, 118.0)
  args = ["report", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "out")]
  assert cli.main(args + ["--select", "valid/neg_elbo"]) == 0
  out = capsys.readouterr().out
  assert "Chosen by the lowest mean valid/neg_elbo" in out
  selected = out.split("Chosen by")[1]
  assert "0.0003" in selected and "0.001" not in selected
  assert cli.main(args + ["--select", "valid/nll"]) == 2  # not a metric of these runs
  assert "no member has a final metric 'valid/nll'" in capsys.readouterr().err
  with pytest.raises(SystemExit):  # not a metric name at all: argparse refuses it
    cli.main(args + ["--select", "neg_elbo"])
  assert cli.main(["report", str(tmp_path / "missing")]) == 2


def test_eval_samples_column(tmp_path):
  run = tmp_path / "run"
  final = {"valid/nll": 90.0, "test/nll": 91.0, "train/loss": 95.0}
  # An older summary: the m comes from the config; none for a task without it (toy).
  old = _write_member(run, "vae", "rloo", 0, final=final)
  summary = json.loads((old / "summary.json").read_text())
  summary["hyperparameters"] = {"task": {"final_eval_samples": 100}}
  (old / "summary.json").write_text(json.dumps(summary))
  assert rp.final_eval_samples(summary) == {"valid": 100, "test": 100}
  _write_member(run, "toy", "rloo", 0)
  header, rows = rp.comparison_table(rp.load_run(run))
  column = {row[0]: dict(zip(header, row))["eval samples (m)"] for row in rows}
  assert column == {"toy": "-", "vae": "100"}
  # A recorded m wins over the config's; seeds that differ are shown side by side.
  for seed, samples in ((1, {"valid": 100, "test": 1000}), (2, {"valid": 100, "test": 1000})):
    member = _write_member(run, "vae", "rloo", seed, final=final)
    summary = json.loads((member / "summary.json").read_text())
    summary["final_eval_samples"] = samples
    (member / "summary.json").write_text(json.dumps(summary))
  header, rows = rp.comparison_table(rp.load_run(run))
  vae = dict(zip(header, next(r for r in rows if r[0] == "vae")))
  assert vae["eval samples (m)"] == "test 100/1000, valid 100"
  md, csv_path = rp.write_tables(rp.load_run(run), tmp_path / "out")
  with csv_path.open() as f:
    assert {r["task"]: r["eval_samples"] for r in csv.DictReader(f)} == {
        "toy": "", "vae": "test 100/1000, valid 100"}
  # Without any m (toy alone) the column is left out.
  header, _ = rp.comparison_table([m for m in rp.load_run(run) if m.summary["task"] == "toy"])
  assert "eval samples (m)" not in header


def test_temperature_plot_only_for_schedules_that_change(tmp_path: Path, monkeypatch):
  constant = [{"step": s, "split": "train", "loss": 1.0, "temperature": 1.0} for s in (10, 20)]
  annealed = [{"step": s, "split": "train", "loss": 1.0, "temperature": 1.0 - s / 100}
              for s in (10, 20)]
  _write_member(tmp_path / "flat", "toy", "rloo", 0, rows=constant)
  paths = rp.write_plots(rp.load_run(tmp_path / "flat"), tmp_path / "flat_out")
  assert "temperature.png" not in [p.name for p in paths]
  import matplotlib.pyplot as plt
  figures = []
  monkeypatch.setattr(plt, "close", figures.append)
  _write_member(tmp_path / "mixed", "toy", "rloo", 0, rows=constant)
  _write_member(tmp_path / "mixed", "toy", "gumbel_rao(num_samples=10)", 0, rows=annealed)
  paths = rp.write_plots(rp.load_run(tmp_path / "mixed"), tmp_path / "mixed_out")
  assert "temperature.png" in [p.name for p in paths]
  (legend,) = figures[-1].legends
  assert [t.get_text() for t in legend.get_texts()] == ["gumbel_rao(num_samples=10)"]
  # The legend fits: the figure is at least as wide as the legend drawn in it.
  fig = figures[-1]
  fig.canvas.draw()
  box = legend.get_window_extent()
  assert box.x0 >= 0 and box.x1 <= fig.bbox.width + 1


def test_task_text_leaves_out_data_settings_of_a_task_without_data():
  data = {"validation_size": 0, "binarization": "dynamic"}
  toy = {"task": "toy-bernoulli-t0.45", "hyperparameters": {"task": {"name": "toy"}, "data": data}}
  vae = {"task": "vae-bernoulli-200",
         "hyperparameters": {"task": {"name": "vae", "distribution": "bernoulli"}, "data": data}}
  assert rp.task_text(toy) == "toy-bernoulli-t0.45"
  assert rp.task_text(vae) == "vae-bernoulli-200-binarization=dynamic-validation_size=0"


def _variance_row(step: int, estimator: str, variance: float, bias: float) -> dict:
  """A variance-study row as ``experiments.variance`` writes it (a per-group column too)."""
  return {"step": step, "estimator": estimator, "total_variance": variance,
          "log10_variance": math.log10(variance), "squared_bias": bias,
          "debiased_squared_bias": bias - variance / 1000, "mse": bias + variance,
          "snr": None, "cosine": 0.5, "ms_per_gradient": 0.123456789,
          "variance/enc": variance / 3, "squared_bias/enc": bias / 3,
          "reference": "exact", "reference_se2": 0.0, "num_samples": 1000}


VARIANCE_COLUMNS = ["step", "estimator", "total_variance", "log10_variance", "squared_bias",
                    "debiased_squared_bias", "mse", "snr", "cosine", "ms_per_gradient"]


def test_variance_tables_per_checkpoint(tmp_path: Path):
  rows = [_variance_row(step, name, variance, bias) for step in (0, 20)
          for name, variance, bias in (("rebar", 12345.678, 0.0), ("relaxed", 0.000123456, 2.5))]
  paths = rp.write_variance_tables(rows, tmp_path, VARIANCE_COLUMNS)
  assert paths == [str(tmp_path / f"table_step{s}.{e}") for s in (0, 20) for e in ("md", "csv")]
  lines = (tmp_path / "table_step20.md").read_text().splitlines()
  # Step is in the note, not a column; per-group variance columns are appended.
  header = VARIANCE_COLUMNS[1:] + ["variance/enc"]
  assert lines[0] == "| " + " | ".join(header) + " |"
  assert lines[1] == "|" + "---|" * len(header)
  cells = dict(zip(header, lines[2].strip("| ").split(" | ")))
  assert cells["estimator"] == "rebar" and cells["total_variance"] == f"{12345.678:.4g}"
  assert cells["snr"] == "None" and cells["ms_per_gradient"] == "0.1235"
  assert lines[4:] == ["", "Step 20; reference: exact (its standard error, squared and summed: 0)."]
  with (tmp_path / "table_step0.csv").open() as f:
    parsed = list(csv.DictReader(f))
  assert [r["estimator"] for r in parsed] == ["rebar", "relaxed"]
  # Full precision in the CSV; None is an empty cell.
  assert float(parsed[1]["total_variance"]) == 0.000123456 and parsed[1]["snr"] == ""
  assert float(parsed[1]["variance/enc"]) == rows[1]["variance/enc"]


def test_variance_plot_and_resolved_bias(tmp_path: Path):
  rows = [_variance_row(step, name, variance, bias) for step in (0, 20)
          for name, variance, bias in (("rebar", 4.0, 0.0), ("relaxed", 0.5, 2.5))]
  (path,) = rp.write_variance_plots(rows, tmp_path)
  assert path == str(tmp_path / "plots" / "variance.png")
  _assert_png(Path(path))
  # Within the noise (variance / n + the reference's): NaN; beyond it: the debiased value.
  assert math.isnan(plots.resolved_bias(rows[0]))
  assert plots.resolved_bias(rows[1]) == rows[1]["debiased_squared_bias"]
  noise = rows[1]["total_variance"] / rows[1]["num_samples"]
  assert math.isnan(plots.resolved_bias({**rows[1], "debiased_squared_bias": noise}))


def test_markdown_escapes_bars():
  table = formatting.markdown(["a", "b"], [["x|y", "z"]])
  assert table.splitlines() == ["| a | b |", "| --- | --- |", "| x\\|y | z |"]
  assert formatting.markdown(["a"], [], spaced_rule=False).splitlines()[1] == "|---|"
