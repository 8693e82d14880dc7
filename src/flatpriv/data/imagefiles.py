"""Readers for MNIST, Fashion-MNIST and CIFAR-10 in torchvision's on-disk layout, without torchvision.

Layouts read (the ones ``torchvision.datasets`` downloads to):

* ``<root>/MNIST/raw/`` and ``<root>/FashionMNIST/raw/``: ``train-images-idx3-ubyte``,
  ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each also accepted
  gzip-compressed with a ``.gz`` suffix. The IDX format is LeCun's: two zero bytes, a type code
  (0x08 = unsigned byte), the number of dimensions, then each dimension as a big-endian int32.
* ``<root>/cifar-10-batches-py/``: ``data_batch_1`` .. ``data_batch_5`` and ``test_batch``, Python pickles
  of dicts with ``b'data'`` (uint8 [10000, 3072], channel-major) and ``b'labels'``. They are unpickled with
  an allow-list that admits only numpy's array-reconstruction functions (and ``_codecs.encode``), so a
  file cannot run code.

Each reader returns uint8 images [N, C, H, W] and int64 labels; scaling and normalisation are the caller's.
"""

from __future__ import annotations

import gzip
import math
import pickle
from pathlib import Path

import numpy as np

from ..errors import FlatprivError

NUM_CLASSES = 10  # MNIST, Fashion-MNIST and CIFAR-10 alike
IDX_DIRS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_CIFAR_DIR = "cifar-10-batches-py"
_CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_TEST = "test_batch"
_PICKLE_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"),  # protocol 5
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # bytes in protocol-2 pickles written by Python 3
}


def _root(root: str, name: str, example: str) -> Path:
    if not root:
        msg = f"data.root is not set: {name} needs data.root=DIR holding {example} in torchvision's layout"
        raise FlatprivError(msg)
    return Path(root).expanduser()


def _missing(path: Path, what: str, gz: bool) -> FlatprivError:
    alt = " (or .gz)" if gz else ""
    msg = f"data.root: missing {path}{alt}: put the {what} files in torchvision's layout under data.root"
    return FlatprivError(msg)


def _read_idx(path: Path, what: str) -> np.ndarray:
    """Read one IDX file (plain or ``.gz``) of unsigned bytes."""
    gz_path = path.with_name(path.name + ".gz")
    if path.is_file():
        raw = path.read_bytes()
    elif gz_path.is_file():
        try:
            raw = gzip.decompress(gz_path.read_bytes())
        except (OSError, EOFError) as e:
            raise FlatprivError(f"data.root: {gz_path} is not valid gzip ({e}): replace the file") from None
    else:
        raise _missing(path, what, gz=True)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise FlatprivError(f"data.root: {path} is not an unsigned-byte IDX file: replace it")
    ndim = raw[3]
    offset = 4 + 4 * ndim
    if len(raw) < offset:
        raise FlatprivError(
            f"data.root: {path} is truncated or corrupt (its header names {ndim} dimensions): replace it"
        )
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    if any(d < 0 for d in dims) or len(raw) != offset + math.prod(dims):  # Python ints: the product cannot wrap
        raise FlatprivError(f"data.root: {path} is truncated or corrupt (header says {dims}): replace it")
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(dims)


def read_idx_split(root: str, name: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """mnist/fashion-mnist ``split`` ("train" or "test"): images uint8 [N, 1, 28, 28], labels int64 [N]."""
    folder = IDX_DIRS[name]
    base = _root(root, name, f"DIR/{folder}/raw/train-images-idx3-ubyte") / folder / "raw"
    img_name, lab_name = _IDX_FILES[split]
    images = _read_idx(base / img_name, folder)
    labels = _read_idx(base / lab_name, folder)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise FlatprivError(
            f"data.root: {base / img_name} and {base / lab_name} do not match (shapes {images.shape}, "
            f"{labels.shape}): replace them with the original files"
        )
    return images[:, None].copy(), _labels(labels.astype(np.int64), base / lab_name)


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in _PICKLE_ALLOWED:
            raise pickle.UnpicklingError(f"refused global {module}.{name}")
        return super().find_class(module, name)


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise _missing(path, "CIFAR-10 python-version", gz=False)
    try:
        with path.open("rb") as f:
            batch = _ArrayUnpickler(f, encoding="bytes").load()
        data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError, OverflowError) as e:
        raise FlatprivError(f"data.root: {path} is not a CIFAR-10 python batch ({e}): replace it") from None
    if labels.ndim != 1 or len(data) != len(labels):
        raise FlatprivError(f"data.root: {path} has {len(data)} images but {labels.shape} labels: replace it")
    return data, _labels(labels, path)


def _labels(labels: np.ndarray, path: Path) -> np.ndarray:
    """The labels of ``path``, refused unless each is a class 0..9 and there is at least one: a label out of range
    would index past the model's 10 outputs in the middle of training."""
    if len(labels) == 0:
        raise FlatprivError(f"data.root: {path} holds no examples: replace it with the original file")
    if labels.min() < 0 or labels.max() >= NUM_CLASSES:
        bad = labels[(labels < 0) | (labels >= NUM_CLASSES)]
        raise FlatprivError(
            f"data.root: {path} has {len(bad)} label(s) outside 0..{NUM_CLASSES - 1} (e.g. {int(bad[0])}): "
            "replace it with the original file"
        )
    return labels


def read_cifar10_split(root: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 [N, 3, 32, 32] and labels int64 [N] of CIFAR-10's ``split`` ("train" or "test")."""
    base = _root(root, "cifar10", f"DIR/{_CIFAR_DIR}/data_batch_1") / _CIFAR_DIR
    names = _CIFAR_TRAIN if split == "train" else (_CIFAR_TEST,)
    parts = [_read_cifar_batch(base / n) for n in names]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
