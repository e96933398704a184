"""MNIST for the experiments: locate or download, verify, parse, binarize, split.

The four standard IDX files are looked for in one directory (see
:func:`default_data_dir`), each either gzipped (``NAME.gz``) or raw (``NAME``).
Missing files are downloaded from :data:`MIRRORS`; every file is checked against
the SHA-256 of its *uncompressed* bytes in :data:`FILES`, so gzipped and raw copies
are interchangeable and a mirror cannot silently serve different data.

References:
  LeCun, Cortes and Burges. The MNIST database of handwritten digits.
  Salakhutdinov and Murray. On the quantitative analysis of deep belief networks.
    ICML 2008 (the fixed binarization with one sample per image).
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import pathlib
import sys
import urllib.error
import urllib.request
import zlib
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import tqdm

from experiments import files

FILES: dict[str, str] = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
ENV_VAR = "GUMBAX_DATA_DIR"
BINARIZATIONS = ("fixed", "dynamic", "none")
SOURCES = ("train_file", "test_file")

_SHAPES = {"train-images-idx3-ubyte": (60000, 28, 28), "train-labels-idx1-ubyte": (60000,),
           "t10k-images-idx3-ubyte": (10000, 28, 28), "t10k-labels-idx1-ubyte": (10000,)}
_TIMEOUT_S = 30.0
_GZIP_MAGIC = b"\x1f\x8b"
_UBYTE = 0x08
_BINARIZE_CHUNK = 1 << 22  # pixels per draw: bounds the float64 temporaries


class MnistNotFoundError(FileNotFoundError):
  """The MNIST files are neither on disk nor downloadable.

  ``str(error)`` says what is missing, where it was looked for, every mirror tried
  and what to do; ``error.summary`` says the same in one line.
  """

  def __init__(self, message: str, summary: str | None = None):
    super().__init__(message)
    self.summary = summary or message


class MnistCorruptError(ValueError):
  """An MNIST file on disk or downloaded is not a valid gzip or IDX file, or is truncated."""


class ChecksumError(MnistCorruptError):
  """A file's uncompressed bytes do not have the SHA-256 listed in :data:`FILES`."""


class Mnist(NamedTuple):
  """The raw dataset: images flattened to 784 pixels, all ``uint8``."""
  train_images: np.ndarray  # (60000, 784)
  train_labels: np.ndarray  # (60000,)
  test_images: np.ndarray  # (10000, 784)
  test_labels: np.ndarray  # (10000,)


class Splits(NamedTuple):
  """Model inputs, each ``float32`` of shape ``(n, 784)``."""
  train: np.ndarray
  valid: np.ndarray
  test: np.ndarray


def default_data_dir() -> pathlib.Path:
  """``$GUMBAX_DATA_DIR``, else ``$XDG_CACHE_HOME/gumbax/mnist``, else ``~/.cache/gumbax/mnist``.

  ``GUMBAX_DATA_DIR`` names the directory holding the MNIST files themselves.
  """
  if os.environ.get(ENV_VAR):
    return pathlib.Path(os.environ[ENV_VAR]).expanduser()
  cache = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
  return pathlib.Path(cache).expanduser() / "gumbax" / "mnist"


def _resolve_dir(data_dir: str | os.PathLike[str] | None) -> pathlib.Path:
  return default_data_dir() if data_dir is None else pathlib.Path(data_dir).expanduser()


def _existing(directory: pathlib.Path, name: str) -> pathlib.Path | None:
  """The raw file if present, else the gzipped one, else ``None``."""
  for path in (directory / name, directory / f"{name}.gz"):
    if path.is_file():
      return path
  return None


def find_mnist(data_dir: str | os.PathLike[str] | None = None) -> pathlib.Path | None:
  """Returns the directory if it holds all four files (raw or ``.gz``), else ``None``.

  Only checks that the files exist; contents are verified by :func:`load_mnist`.
  """
  directory = _resolve_dir(data_dir)
  return directory if all(_existing(directory, n) for n in FILES) else None


def _uncompressed(path: pathlib.Path) -> bytes:
  """The file's bytes, gunzipped when they start with the gzip magic number."""
  data = path.read_bytes()
  if data[:2] != _GZIP_MAGIC:
    return data
  try:
    return gzip.decompress(data)
  except (OSError, EOFError, zlib.error) as e:
    raise MnistCorruptError(
        f"{path} is not a valid gzip file ({e}): the file is corrupt or truncated; delete it "
        "and run again to download it, or copy a good one there.") from e


def _verify(data: bytes, name: str, where: object) -> None:
  actual = hashlib.sha256(data).hexdigest()
  if actual != FILES[name]:
    raise ChecksumError(
        f"{where}: SHA-256 of the uncompressed bytes of {name} is {actual}, expected "
        f"{FILES[name]}. The file is corrupted or not the MNIST file; delete it and download it "
        "again.")


def _parse_idx(data: bytes, name: str, path: pathlib.Path) -> np.ndarray:
  """Parses an IDX file of unsigned bytes: magic ``00 00 08 ndim``, big-endian dims, data."""
  where = f"{path} (expected IDX file {name}; delete it and run again to download it)"
  if len(data) < 4 or data[:2] != b"\x00\x00":
    raise MnistCorruptError(f"{where}: malformed IDX header: magic number {data[:4].hex() or 'missing'}, "
                     "expected 0000 followed by type and rank bytes.")
  if data[2] != _UBYTE:
    raise MnistCorruptError(
        f"{where}: malformed IDX header: dtype code 0x{data[2]:02x}, expected 0x08 (uint8).")
  ndim, offset = data[3], 4 + 4 * data[3]
  if len(data) < offset:
    raise MnistCorruptError(
        f"{where}: malformed IDX header: truncated, {len(data)} bytes for {ndim} dims.")
  shape = tuple(int(d) for d in np.frombuffer(data, ">u4", ndim, 4))
  if shape != _SHAPES[name]:
    raise MnistCorruptError(f"{where}: malformed IDX header: shape {shape}, expected {_SHAPES[name]}.")
  if len(data) - offset != int(np.prod(shape)):
    raise MnistCorruptError(f"{where}: header declares {int(np.prod(shape))} data bytes, "
                     f"file has {len(data) - offset} (truncated or padded).")
  return np.frombuffer(data, np.uint8, offset=offset).reshape(shape)


def _fetch(url: str, target: pathlib.Path, name: str, progress: bool) -> None:
  """Downloads ``url`` into ``target`` atomically, after verifying the checksum."""
  # open(..., "xb") honours the umask, unlike tempfile's private 0600 files.
  tmp = files.temporary_name(target)
  try:
    with open(tmp, "xb") as out, urllib.request.urlopen(url, timeout=_TIMEOUT_S) as response:
      total = response.headers.get("Content-Length")
      with tqdm.tqdm(total=int(total) if total else None, unit="B", unit_scale=True,
                     desc=target.name, disable=not progress, file=sys.stderr,
                     leave=False) as bar:
        while chunk := response.read(1 << 16):
          out.write(chunk)
          bar.update(len(chunk))
    _verify(_uncompressed(tmp), name, url)
    os.replace(tmp, target)
  finally:
    tmp.unlink(missing_ok=True)


def _download(directory: pathlib.Path, name: str, mirrors: Sequence[str], progress: bool,
              missing: Sequence[str]) -> None:
  """Tries each mirror in turn; raises when all of them fail (naming every missing file)."""
  directory.mkdir(parents=True, exist_ok=True)
  errors: list[tuple[str, Exception]] = []
  for mirror in mirrors:
    url = f"{mirror.rstrip('/')}/{name}.gz"
    try:
      _fetch(url, directory / f"{name}.gz", name, progress)
      return
    except urllib.error.HTTPError as e:
      e.close()
      errors.append((url, e))
    except (OSError, ValueError, http.client.HTTPException) as e:
      errors.append((url, e))
  tried = "".join(f"\n  {url}: {type(e).__name__}: {e}" for url, e in errors)
  tried = tried or " none (mirrors is empty)"
  bad = [e for _, e in errors if isinstance(e, ChecksumError)]
  if bad:
    raise ChecksumError(f"No mirror served a valid {name}.gz. Mirrors tried:{tried}") from bad[-1]
  first = f"{type(errors[0][1]).__name__}: {errors[0][1]}" if errors else "no mirror given"
  raise MnistNotFoundError(
      _not_found(directory, missing, f"Mirrors tried:{tried}"),
      f"MNIST is not in {directory} and could not be downloaded ({first}); set {ENV_VAR} to "
      "a folder holding the four MNIST files, or run once online")


def _not_found(directory: pathlib.Path, missing: Sequence[str], why: str) -> str:
  names = ", ".join(missing)
  return (f"MNIST not found in {directory}: missing {names}. Put these files there (each "
          f"either NAME.gz or the uncompressed NAME), or point {ENV_VAR} at a directory holding "
          f"them. {why}")


def load_mnist(data_dir: str | os.PathLike[str] | None = None, *, download: bool = True,
               mirrors: Sequence[str] = MIRRORS, progress: bool = True) -> Mnist:
  """Loads MNIST from ``data_dir`` (default :func:`default_data_dir`), downloading missing files.

  Args:
    data_dir: directory holding the four files of :data:`FILES`, raw or ``.gz``.
    download: fetch missing files (as ``NAME.gz``) from ``mirrors``; created if needed.
    mirrors: base URLs tried in order for each missing file (30 s timeout each).
    progress: show a download progress bar on stderr.

  Returns:
    :class:`Mnist` with ``uint8`` images flattened to 784 pixels and ``uint8`` labels.

  Raises:
    MnistNotFoundError: a file is missing and ``download`` is false or every mirror failed.
    ChecksumError: a file (on disk or downloaded) does not match :data:`FILES`.
    MnistCorruptError: a file is not a valid gzip or IDX file (ChecksumError is one).
  """
  if isinstance(mirrors, (str, bytes)):
    raise TypeError(f"mirrors must be a sequence of base URLs, got the single string {mirrors!r}.")
  directory = _resolve_dir(data_dir)
  missing = [n for n in FILES if _existing(directory, n) is None]
  if missing and not download:
    raise MnistNotFoundError(
        _not_found(directory, missing, "download=False, so no mirror was tried."),
        f"MNIST is not in {directory} and downloads are off (data.download: false); set "
        f"{ENV_VAR} to a folder holding the four MNIST files")
  for i, name in enumerate(missing):
    _download(directory, name, mirrors, progress, missing[i:])
  arrays = []
  for name in FILES:
    path = _existing(directory, name)
    data = _uncompressed(path)
    array = _parse_idx(data, name, path)
    _verify(data, name, path)
    arrays.append(array.reshape(len(array), -1) if array.ndim == 3 else array)
  return Mnist(*arrays)


def binarize_fixed(images: np.ndarray, seed: int = 0) -> np.ndarray:
  """The fixed binarization: pixel ``p`` is 1 with probability ``p / 255``, sampled once.

  Exactly ``numpy.random.Generator(numpy.random.PCG64(seed)).random(images.shape) <
  images / 255`` (drawn in chunks of the same stream to bound memory), as ``uint8``
  in {0, 1}. One sample per image with a fixed seed, so a given seed always gives
  the same digits: the protocol of the REBAR/RELAX/Jang et al. comparisons (same
  protocol, not the same bits as the published statically binarized files).

  References:
    Salakhutdinov and Murray. On the quantitative analysis of deep belief networks. ICML 2008.
    Tucker et al. REBAR. NeurIPS 2017. Grathwohl et al. RELAX (Backpropagation through
    the void). ICLR 2018. Jang, Gu and Poole. Categorical reparameterization with
    Gumbel-softmax. ICLR 2017.
  """
  images = np.asarray(images)
  if images.size and (images.min() < 0 or images.max() > 255):
    raise ValueError(
        f"images must be grey levels in [0, 255], got range [{images.min()}, {images.max()}].")
  rng = np.random.Generator(np.random.PCG64(seed))
  flat = images.reshape(-1)
  out = np.empty(flat.shape, np.uint8)
  for start in range(0, flat.size, _BINARIZE_CHUNK):
    chunk = flat[start:start + _BINARIZE_CHUNK]
    out[start:start + len(chunk)] = rng.random(chunk.shape) < chunk / 255
  return out.reshape(images.shape)


def split_validation(images: np.ndarray, labels: np.ndarray, size: int
                     ) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
  """Returns ``((train_images, train_labels), (valid_images, valid_labels))``.

  The last ``size`` examples are the validation set (the usual 50,000/10,000 split
  of the MNIST training file for ``size=10000``); ``size=0`` gives empty validation
  arrays.
  """
  n = len(images)
  if len(labels) != n:
    raise ValueError(f"images and labels differ in length: {n} != {len(labels)}.")
  if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 0 <= size < n:
    raise ValueError(f"validation_size must be an integer in [0, {n}), got {size!r}.")
  cut = n - int(size)
  return (images[:cut], labels[:cut]), (images[cut:], labels[cut:])


def load_splits(data_dir: str | os.PathLike[str] | None = None, *, binarization: str = "fixed",
                validation_size: int = 10000, binarization_seed: int = 0, download: bool = True,
                mirrors: Sequence[str] = MIRRORS, progress: bool = True,
                source: str = "train_file", test_file_train: int = 4000,
                split_seed: int = 0) -> Splits:
  """Train/validation/test inputs for the MNIST experiments.

  With ``source="train_file"`` (the binary-MNIST protocol) the training file is
  binarized as a whole with :func:`binarize_fixed` and seed ``binarization_seed``,
  then split with :func:`split_validation` (its last ``validation_size`` images are
  the validation set, so an image's binary pixels do not depend on
  ``validation_size``); the test file is binarized with seed ``binarization_seed + 1``.

  With ``source="test_file"`` (the protocol of Abid et al. 2019) only the test file
  is used: binarized as above (seed ``binarization_seed + 1``), shuffled by
  ``numpy.random.Generator(numpy.random.PCG64(split_seed)).permutation``; the first
  ``test_file_train`` shuffled images are split by :func:`split_validation` into
  train and validation, the others are the test split.

  ``binarization="fixed"`` returns those binary images for all three splits.
  ``binarization="dynamic"`` returns the training split as grey levels
  ``images / 255`` in [0, 1], from which the training task draws fresh Bernoulli
  pixels each batch; ``valid`` and ``test`` are still the fixed binarizations above
  (identical to ``"fixed"``), so evaluation is deterministic and comparable across
  both protocols. ``binarization="none"`` returns the grey levels ``images / 255``
  for all three splits.

  Args:
    data_dir, download, mirrors, progress: as for :func:`load_mnist`.
    binarization: ``"fixed"``, ``"dynamic"`` or ``"none"``.
    validation_size: number of training images held out for validation.
    binarization_seed: seed of the fixed binarization.
    source: ``"train_file"`` or ``"test_file"``.
    test_file_train: with ``source="test_file"``, the number of shuffled test-file
      images for training and validation, in ``[1, 10000)``.
    split_seed: with ``source="test_file"``, the seed of the shuffle.

  Returns:
    :class:`Splits` of ``float32`` arrays of shape ``(n, 784)``.

  Raises:
    ValueError: an unknown ``binarization`` or ``source``, or a split size out of range.
  """
  if binarization not in BINARIZATIONS:
    raise ValueError(
        f"binarization must be one of {list(BINARIZATIONS)}, got {binarization!r}.")
  if source not in SOURCES:
    raise ValueError(f"source must be one of {list(SOURCES)}, got {source!r}.")
  mnist = load_mnist(data_dir, download=download, mirrors=mirrors, progress=progress)
  if source == "test_file":
    train, valid, test = _test_file_splits(mnist, binarization, validation_size,
                                           binarization_seed, test_file_train, split_seed)
  else:
    train, valid, test = _train_file_splits(mnist, binarization, validation_size,
                                            binarization_seed)
  return Splits(*(np.asarray(x, np.float32) for x in (train, valid, test)))


def _test_file_splits(mnist, binarization, validation_size, binarization_seed,
                      test_file_train, split_seed):
  """:func:`load_splits` with ``source="test_file"``: train, valid, test arrays."""
  n = len(mnist.test_images)
  if (isinstance(test_file_train, bool) or not isinstance(test_file_train, (int, np.integer))
      or not 1 <= test_file_train < n):
    raise ValueError(f"test_file_train must be an integer in [1, {n}), got {test_file_train!r}.")
  order = np.random.Generator(np.random.PCG64(split_seed)).permutation(n)
  grey = mnist.test_images[order]
  labels = mnist.test_labels[order]
  cut = int(test_file_train)
  if binarization == "none":
    images = grey / np.float32(255)
  else:
    images = binarize_fixed(mnist.test_images, binarization_seed + 1)[order]
  (train, _), (valid, _) = split_validation(images[:cut], labels[:cut], validation_size)
  if binarization == "dynamic":
    (train, _), _ = split_validation(grey[:cut] / np.float32(255), labels[:cut], validation_size)
  return train, valid, images[cut:]


def _train_file_splits(mnist, binarization, validation_size, binarization_seed):
  """:func:`load_splits` with ``source="train_file"``: train, valid, test arrays."""
  if binarization == "none":
    (train, _), (valid, _) = split_validation(mnist.train_images / np.float32(255),
                                              mnist.train_labels, validation_size)
    return train, valid, mnist.test_images / np.float32(255)
  (grey, _), _ = split_validation(mnist.train_images, mnist.train_labels, validation_size)
  binary = binarize_fixed(mnist.train_images, binarization_seed)
  (train, _), (valid, _) = split_validation(binary, mnist.train_labels, validation_size)
  if binarization == "dynamic":
    train = grey / np.float32(255)
  return train, valid, binarize_fixed(mnist.test_images, binarization_seed + 1)
