"""Data sets as in-memory tensors: offline, deterministic given ``DataConfig.seed``.

* ``mnist1d``: the MNIST-1D generator of the ``mnist1d`` package (Greydanus & Kobak, 2020), called through
  ``mnist1d.data.make_dataset`` (never its download path) and cached as .npz under :func:`cache_dir`.
* ``digits``: scikit-learn's bundled 8x8 digits; a fixed stratified 75/25 split that ignores the seed.
* ``synthetic-longtail``: a Gaussian mixture with one common mode per class plus rare sub-populations, the
  long-tail model of Feldman (2020, "Does learning require memorization?"): a rare group's centre is drawn
  independently of its class's centre, so its label can only be memorised, not inferred.
* ``mnist``, ``fashion-mnist``, ``cifar10``: read from ``data.root`` in torchvision's layout
  (see :mod:`flatpriv.data.imagefiles`), scaled to [0, 1], then normalised per channel with the mean/std of the
  full training set.

Afterwards ``limit_train`` keeps a prefix of the training set and symmetric label noise is applied.
Meta keys prefixed ``train_``/``test_`` are per-example arrays aligned with ``x_train``/``x_test``.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import random
import tempfile
import zipfile
from dataclasses import dataclass, field

import numpy as np
import torch

from ..config import DataConfig
from ..errors import FlatprivError
from .imagefiles import read_cifar10_split, read_idx_split

DATASETS: tuple[str, ...] = ("mnist1d", "digits", "synthetic-longtail", "mnist", "fashion-mnist", "cifar10")
MAX_SYNTHETIC_NUMBERS = 10**8  # synthetic-longtail's centres and examples, drawn as float64
_NOISE_SALT = 0x1AB31  # separates the label-noise stream from the generator stream of the same seed
_MNIST1D_CACHE_VERSION = 1


@dataclass
class Dataset:
    """Train/test tensors plus stable example indices and extra per-example arrays (``meta``).

    ``meta`` always holds ``clean_labels`` (int64 [N_train], labels before noise) and ``flipped`` (sorted
    int64 positions in the training set whose label was flipped); synthetic-longtail adds ``train_rare``,
    ``test_rare`` (bool) and ``train_group``, ``test_group`` (int64, -1 typical, else a sub-population id).
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    input_shape: tuple[int, ...]
    train_index: torch.Tensor
    test_index: torch.Tensor
    meta: dict[str, np.ndarray] = field(default_factory=dict)

    def subset(self, positions: torch.Tensor) -> Dataset:
        """The same data set with only the training examples at ``positions`` (in that order); test set kept.

        Per-training-example meta (keys ``train_*``, ``clean_labels``) is sliced too; ``flipped`` is dropped
        because its positions would no longer mean anything (``clean_labels`` still tells which were flipped).
        """
        pos = positions.to(self.x_train.device)
        idx = positions.cpu().numpy()
        meta = {
            k: (v[idx] if k.startswith("train_") or k == "clean_labels" else v)
            for k, v in self.meta.items()
            if k != "flipped"
        }
        return dataclasses.replace(
            self, x_train=self.x_train[pos], y_train=self.y_train[pos], train_index=self.train_index[pos], meta=meta
        )

    def arrays(self, indices: bool = True) -> dict[str, np.ndarray]:
        """What a run directory keeps of the data set, as numpy: ``train_labels``, ``test_labels``, with
        ``indices`` the stable ``train_index`` and ``test_index``, then every ``meta`` array."""
        out = {"train_labels": self.y_train, "test_labels": self.y_test}
        if indices:
            out |= {"train_index": self.train_index, "test_index": self.test_index}
        return {k: v.cpu().numpy() for k, v in out.items()} | {k: np.asarray(v) for k, v in self.meta.items()}

    def to(self, device: str | torch.device) -> Dataset:
        """A copy whose tensors are on ``device`` (meta stays numpy, shared)."""
        return dataclasses.replace(
            self,
            x_train=self.x_train.to(device),
            y_train=self.y_train.to(device),
            x_test=self.x_test.to(device),
            y_test=self.y_test.to(device),
            train_index=self.train_index.to(device),
            test_index=self.test_index.to(device),
            meta=dict(self.meta),
        )


def cache_dir() -> pathlib.Path:
    """``$FLATPRIV_CACHE``, else ``$XDG_CACHE_HOME/flatpriv``, else ``~/.cache/flatpriv`` (not created)."""
    if os.environ.get("FLATPRIV_CACHE"):
        return pathlib.Path(os.environ["FLATPRIV_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return pathlib.Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "flatpriv"
    return pathlib.Path.home() / ".cache" / "flatpriv"


def quiet_matplotlib_cache() -> None:
    """Point matplotlib's config and font cache at ``cache_dir()/matplotlib`` unless MPLCONFIGDIR is set: by
    default it writes under the home directory, and flatpriv writes outside --out only under its own cache."""
    os.environ.setdefault("MPLCONFIGDIR", str(cache_dir() / "matplotlib"))


# A loader returns (x_train, y_train, x_test, y_test, num_classes, meta) as numpy arrays.
_Raw = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int, dict[str, np.ndarray]]


def _generate_mnist1d(num_samples: int, seed: int) -> dict[str, np.ndarray]:
    """Call mnist1d's generator; it reseeds numpy's and Python's global RNGs, so both are restored after."""
    quiet_matplotlib_cache()
    import mnist1d.data  # deferred: pulls in matplotlib

    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        args = mnist1d.data.get_dataset_args()
        args.num_samples = num_samples
        args.seed = seed
        d = mnist1d.data.make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    return {k: np.asarray(d[k]) for k in ("x", "y", "x_test", "y_test")}


def _write_npz_atomic(path: pathlib.Path, arrays: dict[str, np.ndarray]) -> None:
    """Write to a temporary file in the same directory, then rename; failures leave no partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


def _load_mnist1d(cfg: DataConfig) -> _Raw:
    if cfg.num_samples < 10:
        raise FlatprivError(f"data.num_samples={cfg.num_samples}: mnist1d needs at least 10 (one per class)")
    path = cache_dir() / f"mnist1d_v{_MNIST1D_CACHE_VERSION}_n{cfg.num_samples}_s{cfg.seed}.npz"
    d: dict[str, np.ndarray] | None = None
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                d = {k: z[k] for k in ("x", "y", "x_test", "y_test")}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            d = None  # unreadable cache entry: regenerate and overwrite it
    if d is None:
        d = _generate_mnist1d(cfg.num_samples, cfg.seed)
        try:
            _write_npz_atomic(path, d)
        except OSError:
            pass  # a read-only cache only costs regeneration next time
    return d["x"], d["y"], d["x_test"], d["y_test"], 10, {}


def _load_digits(cfg: DataConfig) -> _Raw:
    """sklearn's digits, x/16 in [0, 1]; split 75/25 stratified with random_state=0, independent of seed."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.data / 16.0).reshape(-1, 1, 8, 8)
    x_tr, x_te, y_tr, y_te = train_test_split(x, digits.target, test_size=0.25, random_state=0, stratify=digits.target)
    return x_tr, y_tr, x_te, y_te, 10, {}


def _load_synthetic(cfg: DataConfig) -> _Raw:
    """Feldman-style long tail. All centres are i.i.d. N(0, separation^2 I) in ``dim`` dimensions (expected
    distance between two centres: separation * sqrt(2 * dim)); points are centre + N(0, I).

    Class c's typical examples come from centre c; its rare group j (global id c * rare_groups_per_class + j)
    has its own centre, unrelated to centre c. Train order is shuffled; test is typical-then-rare.
    """
    k, g = cfg.num_classes, cfg.rare_groups_per_class
    if k < 2 or min(cfg.dim, cfg.typical_per_class, cfg.test_per_class) < 1:
        raise FlatprivError(
            "data: synthetic-longtail needs num_classes >= 2 and dim, typical_per_class, test_per_class >= 1"
        )
    if min(g, cfg.rare_size, cfg.rare_test_size) < 0 or cfg.separation <= 0:
        raise FlatprivError(
            "data: synthetic-longtail needs rare_groups_per_class, rare_size, rare_test_size >= 0 and separation > 0"
        )
    rows = k * (1 + g) + k * (cfg.typical_per_class + g * cfg.rare_size + cfg.test_per_class + g * cfg.rare_test_size)
    if rows * cfg.dim > MAX_SYNTHETIC_NUMBERS:  # each setting is bounded, their product is not
        raise FlatprivError(
            f"data: synthetic-longtail would draw {rows} x {cfg.dim} = {rows * cfg.dim:.3g} numbers, more than "
            f"{MAX_SYNTHETIC_NUMBERS:.0e} (0.8 GB): lower data.num_classes, data.dim or the per-class counts"
        )
    rng = np.random.default_rng(cfg.seed)
    # rows 0..k-1: the classes' common modes; row k + i: rare group i, of class i // g
    centres = rng.normal(0.0, cfg.separation, size=(k + k * g, cfg.dim))
    group_class = np.repeat(np.arange(k), g)

    def draw(n_typical: int, n_rare: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        y = np.concatenate([np.repeat(np.arange(k), n_typical), np.repeat(group_class, n_rare)])
        group = np.concatenate([np.full(k * n_typical, -1), np.repeat(np.arange(k * g), n_rare)])
        mode = np.where(group >= 0, k + group, y)
        x = centres[mode] + rng.normal(size=(len(y), cfg.dim))
        return x, y, group

    x_tr, y_tr, grp_tr = draw(cfg.typical_per_class, cfg.rare_size)
    x_te, y_te, grp_te = draw(cfg.test_per_class, cfg.rare_test_size)
    perm = rng.permutation(len(y_tr))
    x_tr, y_tr, grp_tr = x_tr[perm], y_tr[perm], grp_tr[perm]
    meta = {"train_rare": grp_tr >= 0, "test_rare": grp_te >= 0, "train_group": grp_tr, "test_group": grp_te}
    return x_tr, y_tr, x_te, y_te, k, meta


def _load_image_files(cfg: DataConfig) -> _Raw:
    """uint8 files -> [0, 1] -> per-channel standardisation with the full training set's mean and std."""
    if cfg.name == "cifar10":
        (x_tr, y_tr), (x_te, y_te) = (read_cifar10_split(cfg.root, s) for s in ("train", "test"))
    else:
        (x_tr, y_tr), (x_te, y_te) = (read_idx_split(cfg.root, cfg.name, s) for s in ("train", "test"))
    x_tr = x_tr.astype(np.float32) / 255.0
    x_te = x_te.astype(np.float32) / 255.0
    mean = x_tr.mean(axis=(0, 2, 3), dtype=np.float64, keepdims=True)
    std = np.maximum(x_tr.std(axis=(0, 2, 3), dtype=np.float64, keepdims=True), 1e-8)
    x_tr = ((x_tr - mean) / std).astype(np.float32)
    x_te = ((x_te - mean) / std).astype(np.float32)
    return x_tr, y_tr, x_te, y_te, 10, {}


_LOADERS = {
    "mnist1d": _load_mnist1d,
    "digits": _load_digits,
    "synthetic-longtail": _load_synthetic,
    "mnist": _load_image_files,
    "fashion-mnist": _load_image_files,
    "cifar10": _load_image_files,
}


def flip_labels(y: np.ndarray, p: float, num_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric noise: exactly round(p * len(y)) positions, each relabelled uniformly among the others.

    Returns (noisy labels, sorted flipped positions). The stream is seeded from (seed, a fixed salt).
    """
    n_flip = int(round(p * len(y)))
    if n_flip == 0:
        return y.copy(), np.zeros(0, dtype=np.int64)
    rng = np.random.default_rng([seed, _NOISE_SALT])
    flipped = np.sort(rng.choice(len(y), size=n_flip, replace=False)).astype(np.int64)
    noisy = y.copy()
    noisy[flipped] = (y[flipped] + rng.integers(1, num_classes, size=n_flip)) % num_classes
    return noisy, flipped


def load_data(cfg: DataConfig, device: str | torch.device = "cpu") -> Dataset:
    """Build the data set ``cfg`` names, apply ``limit_train`` then label noise, and put it on ``device``."""
    if cfg.name not in _LOADERS:
        raise FlatprivError(f"data.name={cfg.name!r} is unknown: use one of {', '.join(DATASETS)}")
    if not 0 <= cfg.seed < 2**32:
        raise FlatprivError(f"data.seed={cfg.seed}: use an integer in [0, 2**32)")
    if not 0.0 <= cfg.label_noise < 1.0:
        raise FlatprivError(f"data.label_noise={cfg.label_noise}: use a fraction in [0, 1)")
    if cfg.limit_train < 0:
        raise FlatprivError(f"data.limit_train={cfg.limit_train}: use 0 (all) or a positive count")
    x_tr, y_tr, x_te, y_te, num_classes, meta = _LOADERS[cfg.name](cfg)
    y_tr, y_te = np.asarray(y_tr, dtype=np.int64), np.asarray(y_te, dtype=np.int64)
    n_all = len(y_tr)
    n = n_all
    if cfg.limit_train > 0:
        if cfg.limit_train > n_all:
            msg = f"data.limit_train={cfg.limit_train} exceeds the {n_all} training examples of {cfg.name}"
            raise FlatprivError(msg + ": lower it")
        n = cfg.limit_train
        x_tr, y_tr = x_tr[:n], y_tr[:n]
        meta = {k: (v[:n] if k.startswith("train_") else v) for k, v in meta.items()}
    if cfg.label_noise > 0 and num_classes < 2:
        raise FlatprivError("data.label_noise > 0 needs at least 2 classes")
    noisy, flipped = flip_labels(y_tr, cfg.label_noise, num_classes, cfg.seed)
    meta = {**meta, "clean_labels": y_tr.copy(), "flipped": flipped}
    x_tr_t = torch.as_tensor(np.ascontiguousarray(x_tr, dtype=np.float32))
    ds = Dataset(
        name=cfg.name,
        x_train=x_tr_t,
        y_train=torch.as_tensor(noisy),
        x_test=torch.as_tensor(np.ascontiguousarray(x_te, dtype=np.float32)),
        y_test=torch.as_tensor(y_te),
        num_classes=num_classes,
        input_shape=tuple(x_tr_t.shape[1:]),
        train_index=torch.arange(n, dtype=torch.int64),
        test_index=torch.arange(len(y_te), dtype=torch.int64),
        meta=meta,
    )
    return ds if torch.device(device) == torch.device("cpu") else ds.to(device)
