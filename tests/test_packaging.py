"""The wheel installs the library only: `gumbax/`, and no top-level `experiments`,
`benchmarks` or `tests` package that would clash with a user's own modules."""

import pathlib
import subprocess
import sys
import zipfile

ROOT = pathlib.Path(__file__).parents[1]


def test_wheel_holds_gumbax_only(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
       "--no-index", "-w", str(tmp_path)],
      capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stdout + result.stderr
  (wheel,) = tmp_path.glob("gumbax-*.whl")
  names = zipfile.ZipFile(wheel).namelist()
  top = {name.split("/")[0] for name in names}
  assert "gumbax/__init__.py" in names
  assert "gumbax/estimators/__init__.py" in names and "gumbax/py.typed" in names
  assert not top & {"experiments", "benchmarks", "tests", "configs", "docs", "examples"}, top
  packages = {t for t in top if not t.endswith((".dist-info", ".data"))}
  assert packages == {"gumbax"}, packages
