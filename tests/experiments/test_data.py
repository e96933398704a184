"""Tests of experiments.data on the real MNIST files; downloads go to a local HTTP server."""

from __future__ import annotations

import gzip
import os
import pathlib
import shutil

import numpy as np
import pytest

from experiments import data
from _http import closed_port_url, serve

SHARED = pathlib.Path(__file__).resolve().parents[3] / "shared" / "data" / "mnist"
NAMES = list(data.FILES)
TRAIN_LABELS = "train-labels-idx1-ubyte"

pytestmark = pytest.mark.skipif(
    data.find_mnist(SHARED) is None,
    reason=f"the shared MNIST files are not in {SHARED} (needed: {', '.join(NAMES)}, .gz or raw)")


@pytest.fixture(scope="module")
def mnist():
  return data.load_mnist(SHARED, download=False)




def link_all(directory, skip=()):
  """Symlinks the shared .gz files into ``directory`` (except ``skip``)."""
  directory.mkdir(parents=True, exist_ok=True)
  for name in NAMES:
    if name not in skip:
      os.symlink(SHARED / f"{name}.gz", directory / f"{name}.gz")
  return directory


def raw_bytes(name):
  return gzip.decompress((SHARED / f"{name}.gz").read_bytes())


def check_mnist(m, reference):
  for got, want in zip(m, reference):
    assert got.dtype == np.uint8 and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


# --- loading --------------------------------------------------------------------------------


def test_real_files_shapes_and_content(mnist):
  assert mnist.train_images.shape == (60000, 784) and mnist.train_labels.shape == (60000,)
  assert mnist.test_images.shape == (10000, 784) and mnist.test_labels.shape == (10000,)
  assert all(a.dtype == np.uint8 for a in mnist)
  for labels in (mnist.train_labels, mnist.test_labels):
    assert labels.min() == 0 and labels.max() == 9
  # Exact totals of the standard files (mean pixel 0.1307 and 0.1325 of 255).
  assert mnist.train_images.sum(dtype=np.int64) == 1567298545
  assert mnist.test_images.sum(dtype=np.int64) == 264923200
  assert np.bincount(mnist.train_labels).tolist() == [
      5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
  assert np.bincount(mnist.test_labels)[1] == 1135


def test_uncompressed_copies_load_identically(tmp_path, mnist):
  for name in NAMES:
    (tmp_path / name).write_bytes(raw_bytes(name))
  assert data.find_mnist(tmp_path) == tmp_path
  check_mnist(data.load_mnist(tmp_path, download=False), mnist)


def test_mixed_raw_and_gz_and_gz_detected_by_magic(tmp_path, mnist):
  link_all(tmp_path, skip=(TRAIN_LABELS,))
  # A gzipped file under the raw name is still recognised by its magic bytes.
  shutil.copy(SHARED / f"{TRAIN_LABELS}.gz", tmp_path / TRAIN_LABELS)
  check_mnist(data.load_mnist(tmp_path, download=False), mnist)


def test_find_mnist(tmp_path, monkeypatch):
  assert data.find_mnist(SHARED) == SHARED
  assert data.find_mnist(tmp_path) is None
  link_all(tmp_path, skip=(TRAIN_LABELS,))
  assert data.find_mnist(tmp_path) is None
  monkeypatch.setenv("GUMBAX_DATA_DIR", str(SHARED))
  assert data.find_mnist() == SHARED


def test_env_var_is_the_default_directory(monkeypatch, mnist):
  monkeypatch.setenv("GUMBAX_DATA_DIR", str(SHARED))
  check_mnist(data.load_mnist(download=False), mnist)


def test_flipped_byte_raises_checksum_error(tmp_path):
  link_all(tmp_path, skip=(TRAIN_LABELS,))
  raw = bytearray(raw_bytes(TRAIN_LABELS))
  raw[-1] ^= 1  # still a label in 0..9 and a well-formed file: only the digest can tell
  (tmp_path / TRAIN_LABELS).write_bytes(bytes(raw))
  with pytest.raises(data.ChecksumError) as info:
    data.load_mnist(tmp_path, download=False)
  message = str(info.value)
  assert TRAIN_LABELS in message and data.FILES[TRAIN_LABELS] in message
  assert "delete" in message


@pytest.mark.parametrize("content, match", [
    (b"\x00\x00\x08", "magic number"),
    (b"\x01\x02\x08\x01" + (60000).to_bytes(4, "big"), "magic number"),
    (b"\x00\x00\x0d\x01" + (60000).to_bytes(4, "big"), "dtype code 0x0d"),
    (b"\x00\x00\x08\x01\x00\x00", "truncated"),
    (b"\x00\x00\x08\x01" + (59999).to_bytes(4, "big"), r"shape \(59999,\)"),
    (b"\x00\x00\x08\x03" + (60000).to_bytes(4, "big") * 3, "shape"),
    (b"\x00\x00\x08\x01" + (60000).to_bytes(4, "big") + bytes(100), "declares 60000 data bytes"),
    (b"\x1f\x8b\x08\x00garbage", "not a valid gzip"),
])
def test_malformed_file_raises_clear_error(tmp_path, content, match):
  link_all(tmp_path, skip=(TRAIN_LABELS,))
  (tmp_path / TRAIN_LABELS).write_bytes(content)
  with pytest.raises(ValueError, match=match) as info:
    data.load_mnist(tmp_path, download=False)
  assert not isinstance(info.value, data.ChecksumError)
  assert TRAIN_LABELS in str(info.value)


# --- downloading ----------------------------------------------------------------------------


def test_download_from_local_mirror(tmp_path, mnist):
  target = tmp_path / "dl" / "nested"  # created on demand
  with serve(SHARED) as url:
    m = data.load_mnist(target, mirrors=(url,), progress=False)
  check_mnist(m, mnist)
  assert sorted(p.name for p in target.iterdir()) == sorted(f"{n}.gz" for n in NAMES)
  for name in NAMES:
    assert (target / f"{name}.gz").read_bytes() == (SHARED / f"{name}.gz").read_bytes()


def test_download_only_fetches_missing_files_with_progress_on_stderr(tmp_path, mnist, capsys):
  target = link_all(tmp_path / "dl", skip=(TRAIN_LABELS,))
  with serve(SHARED) as url:
    check_mnist(data.load_mnist(target, mirrors=(url,)), mnist)
  out, err = capsys.readouterr()
  assert out == "" and f"{TRAIN_LABELS}.gz" in err
  assert not any(f"{name}.gz" in err for name in NAMES if name != TRAIN_LABELS)
  assert (target / f"{TRAIN_LABELS}.gz").is_file()
  assert not (target / f"{TRAIN_LABELS}.gz").is_symlink()


def test_404_mirror_falls_through_to_next(tmp_path, mnist):
  empty = tmp_path / "empty"
  empty.mkdir()
  target = link_all(tmp_path / "dl", skip=(TRAIN_LABELS,))
  with serve(empty) as bad, serve(SHARED) as good:
    check_mnist(data.load_mnist(target, mirrors=(bad, good), progress=False), mnist)


@pytest.fixture
def corrupt_mirror(tmp_path):
  """A directory serving a well-formed gzip of a train-labels file with one flipped byte."""
  directory = tmp_path / "corrupt"
  directory.mkdir()
  raw = bytearray(raw_bytes(TRAIN_LABELS))
  raw[-1] ^= 1
  (directory / f"{TRAIN_LABELS}.gz").write_bytes(gzip.compress(bytes(raw)))
  return directory


def test_corrupt_download_is_rejected_and_not_kept(tmp_path, corrupt_mirror):
  target = link_all(tmp_path / "dl", skip=(TRAIN_LABELS,))
  before = sorted(p.name for p in target.iterdir())
  with serve(corrupt_mirror) as bad:
    with pytest.raises(data.ChecksumError) as info:
      data.load_mnist(target, mirrors=(bad,), progress=False)
  assert f"{bad}{TRAIN_LABELS}.gz" in str(info.value)
  assert sorted(p.name for p in target.iterdir()) == before  # no final file, no temp file


def test_corrupt_mirror_falls_through_to_good_one(tmp_path, corrupt_mirror, mnist):
  target = link_all(tmp_path / "dl", skip=(TRAIN_LABELS,))
  with serve(corrupt_mirror) as bad, serve(SHARED) as good:
    check_mnist(data.load_mnist(target, mirrors=(bad, good), progress=False), mnist)
  assert (target / f"{TRAIN_LABELS}.gz").read_bytes() == (
      SHARED / f"{TRAIN_LABELS}.gz").read_bytes()


def check_not_found_message(message, directory):
  assert str(directory) in message and "GUMBAX_DATA_DIR" in message
  assert TRAIN_LABELS in message


def test_offline_without_download(tmp_path):
  with pytest.raises(data.MnistNotFoundError) as info:
    data.load_mnist(tmp_path, download=False)
  check_not_found_message(str(info.value), tmp_path)
  assert all(name in str(info.value) for name in NAMES)
  assert isinstance(info.value, FileNotFoundError)
  assert list(tmp_path.iterdir()) == []


def test_offline_unreachable_mirror(tmp_path):
  target = link_all(tmp_path / "dl", skip=(TRAIN_LABELS,))
  url = closed_port_url()
  with pytest.raises(data.MnistNotFoundError) as info:
    data.load_mnist(target, mirrors=(url,), progress=False)
  check_not_found_message(str(info.value), target)
  assert f"{url}{TRAIN_LABELS}.gz" in str(info.value)
  assert not any(p.name.endswith(".part") for p in target.iterdir())


def test_single_string_mirror_is_rejected(tmp_path):
  with pytest.raises(TypeError, match="mirrors"):
    data.load_mnist(tmp_path, mirrors="http://127.0.0.1:1/")


def test_default_data_dir(monkeypatch, tmp_path):
  monkeypatch.setenv("GUMBAX_DATA_DIR", str(tmp_path / "explicit"))
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
  assert data.default_data_dir() == tmp_path / "explicit"
  monkeypatch.delenv("GUMBAX_DATA_DIR")
  assert data.default_data_dir() == tmp_path / "xdg" / "gumbax" / "mnist"
  monkeypatch.delenv("XDG_CACHE_HOME")
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  assert data.default_data_dir() == tmp_path / "home" / ".cache" / "gumbax" / "mnist"


# --- binarization and splits ----------------------------------------------------------------


def test_binarize_fixed_matches_documented_formula(monkeypatch, mnist):
  images = mnist.test_images[:50]
  want = np.random.Generator(np.random.PCG64(3)).random(images.shape) < images / 255
  monkeypatch.setattr(data, "_BINARIZE_CHUNK", 997)  # chunked draws continue the same stream
  got = data.binarize_fixed(images, seed=3)
  assert got.dtype == np.uint8 and got.shape == images.shape
  np.testing.assert_array_equal(got, want)


def test_binarize_fixed_properties(mnist):
  images = mnist.train_images[:2000]
  a = data.binarize_fixed(images, seed=0)
  assert set(np.unique(a).tolist()) == {0, 1}
  np.testing.assert_array_equal(a, data.binarize_fixed(images, seed=0))
  b = data.binarize_fixed(images, seed=1)
  assert 0.01 < np.mean(a != b) < 0.2
  assert np.all(a[images == 0] == 0) and np.all(a[images == 255] == 1)
  # The mean of N independent Bernoulli(p_i) has standard deviation at most
  # 0.5 / sqrt(N) (about 4e-4 for N = 1.57M pixels); 6 of those bounds never fails by chance.
  tolerance = 6 * 0.5 / np.sqrt(images.size)
  assert abs(a.mean() - images.mean() / 255) < tolerance


def test_binarize_fixed_rejects_out_of_range():
  with pytest.raises(ValueError, match="images"):
    data.binarize_fixed(np.array([[0, 256]]))


def test_split_validation():
  images, labels = np.arange(20).reshape(10, 2), np.arange(10)
  (ti, tl), (vi, vl) = data.split_validation(images, labels, 3)
  np.testing.assert_array_equal(tl, np.arange(7))
  np.testing.assert_array_equal(vl, [7, 8, 9])
  np.testing.assert_array_equal(vi, images[7:])
  (ti, tl), (vi, vl) = data.split_validation(images, labels, 0)
  assert ti.shape == (10, 2) and vi.shape == (0, 2) and vl.shape == (0,)
  for size in (-1, 10, 11, 2.0, True):
    with pytest.raises(ValueError, match="validation_size"):
      data.split_validation(images, labels, size)
  with pytest.raises(ValueError, match="length"):
    data.split_validation(images, labels[:-1], 3)


def test_load_splits_defaults_on_real_files(mnist):
  splits = data.load_splits(SHARED, download=False)
  assert [x.shape for x in splits] == [(50000, 784), (10000, 784), (10000, 784)]
  assert all(x.dtype == np.float32 for x in splits)
  binary_train = data.binarize_fixed(mnist.train_images, 0)
  assert np.array_equal(splits.train, binary_train[:50000])
  assert np.array_equal(splits.valid, binary_train[50000:])
  assert set(np.unique(splits.test).tolist()) == {0.0, 1.0}


@pytest.fixture
def small_mnist(monkeypatch, mnist):
  """Makes load_splits see the first 3000 training and 1000 test examples (for speed)."""
  small = data.Mnist(mnist.train_images[:3000], mnist.train_labels[:3000],
                     mnist.test_images[:1000], mnist.test_labels[:1000])
  calls = []
  monkeypatch.setattr(data, "load_mnist", lambda *a, **k: calls.append((a, k)) or small)
  return small, calls


def test_load_splits_protocol(small_mnist):
  small, calls = small_mnist
  fixed = data.load_splits("somewhere", binarization_seed=5, validation_size=500, progress=False)
  assert calls[0][0] == ("somewhere",) and calls[0][1]["progress"] is False
  binary_train = data.binarize_fixed(small.train_images, 5)
  binary_test = data.binarize_fixed(small.test_images, 6)  # seed + 1
  assert [x.dtype for x in fixed] == [np.float32] * 3
  np.testing.assert_array_equal(fixed.train, binary_train[:2500])
  np.testing.assert_array_equal(fixed.valid, binary_train[2500:])
  np.testing.assert_array_equal(fixed.test, binary_test)

  dynamic = data.load_splits(binarization="dynamic", binarization_seed=5, validation_size=800)
  assert [x.shape for x in dynamic] == [(2200, 784), (800, 784), (1000, 784)]
  assert [x.dtype for x in dynamic] == [np.float32] * 3
  np.testing.assert_allclose(dynamic.train, small.train_images[:2200] / 255, rtol=1e-6)
  assert np.any((dynamic.train > 0) & (dynamic.train < 1))  # grey levels, not binarized
  # Evaluation data is the fixed binarization, whatever validation_size is.
  np.testing.assert_array_equal(dynamic.valid, binary_train[2200:])
  np.testing.assert_array_equal(dynamic.test, binary_test)

  no_valid = data.load_splits(binarization="dynamic", validation_size=0)
  assert no_valid.train.shape == (3000, 784) and no_valid.valid.shape == (0, 784)
  with pytest.raises(ValueError, match="validation_size"):
    data.load_splits(validation_size=3000)


def test_load_splits_bad_binarization(tmp_path):
  with pytest.raises(ValueError, match=r"\['fixed', 'dynamic', 'none'\].*'stochastic'"):
    data.load_splits(tmp_path, binarization="stochastic", download=False)
