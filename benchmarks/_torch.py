"""Optional PyTorch support for the benchmark scripts: import, device and timing glue.

Every script works without torch: :func:`load` returns None when it is not
installed (or ``--no-torch`` was given) and the torch columns print ``-``.
"""

from __future__ import annotations

import warnings


class Synced:
  """Stands for a finished torch computation in :func:`benchmarks._timing.block`.

  ``interleaved_medians`` calls ``block_until_ready`` on what the last call of a
  round returned; on CUDA that waits for every queued kernel.
  """

  def __init__(self, torch, value):
    self._torch, self.value = torch, value

  def block_until_ready(self):
    if self._torch.cuda.is_available():
      self._torch.cuda.synchronize()
    return self


def load(enabled: bool = True, threads: int | None = None):
  """``(torch, device)`` or ``(None, None)`` when torch is absent or disabled."""
  if not enabled:
    return None, None
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      import torch
  except Exception:  # noqa: BLE001 - any import failure means "no torch columns"
    return None, None
  if threads:
    torch.set_num_threads(threads)
  device = "cuda" if torch.cuda.is_available() else "cpu"
  if device == "cuda":
    # JAX multiplies float32 matrices in TF32 on Ampere and newer GPUs by default;
    # give PyTorch the same precision so that the columns compare like with like.
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
  return torch, device


def describe(torch, device) -> str:
  if torch is None:
    return "torch: not used"
  extra = (f", {torch.get_num_threads()} CPU threads" if device == "cpu"
           else ", TF32 matmuls like JAX's default")
  return f"torch {torch.__version__} on {device}{extra}"


def compile_fn(torch, fn):
  """``torch.compile(fn)`` or None when compilation is unavailable here."""
  try:
    return torch.compile(fn, dynamic=False)
  except Exception:  # noqa: BLE001
    return None
