"""The demo script runs end to end and what it prints is right."""

import importlib.util
import pathlib

import numpy as np


def test_demo_runs_and_is_correct(capsys):
  path = pathlib.Path(__file__).parents[1] / "examples" / "demo.py"
  spec = importlib.util.spec_from_file_location("demo", path)
  demo = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(demo)
  n = 20_000
  result = demo.main(num_samples=n)
  assert "Gumbel-max frequencies" in capsys.readouterr().out
  # Each frequency has standard deviation <= sqrt(0.25 / n) = 0.0035; 0.025 is over
  # 7 standard deviations, so a correct sampler fails this with probability < 1e-11.
  assert result["max_abs_freq_error"] < 7 * np.sqrt(0.25 / n)
  assert result["masked_draws"] == 0


def test_readme_code_blocks_run():
  """Every ```python block of the README runs, in order, in one namespace (the tour;
  the examples that moved to docs/ run in tests/test_docs_build.py)."""
  import re
  readme = (pathlib.Path(__file__).parents[1] / "README.md").read_text()
  blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
  assert blocks
  namespace: dict = {}
  for block in blocks:
    exec(compile(block, "README.md", "exec"), namespace)


def test_readme_yaml_blocks_are_valid_configs():
  """Every ```yaml block of the README and the docs is a config that validates and
  expands."""
  import re
  import yaml
  from experiments import config as cfg_lib
  from experiments import sweep
  root = pathlib.Path(__file__).parents[1]
  blocks = [block for doc in [root / "README.md", *sorted((root / "docs").glob("*.md"))]
            for block in re.findall(r"```yaml\n(.*?)```", doc.read_text(), flags=re.S)]
  assert blocks
  for block in blocks:
    members, _ = sweep.expand(cfg_lib.validate(yaml.safe_load(block), "README.md"))
    assert members
