"""flatpriv.data: determinism, caching, splits, label noise, the long-tail generator, the file readers."""

from __future__ import annotations

import gzip
import pickle
import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from flatpriv.config import DataConfig
from flatpriv.data import DATASETS, cache_dir, load_data
from flatpriv.data import datasets as data_mod
from flatpriv.errors import FlatprivError


@pytest.fixture(autouse=True)
def tmp_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "cache"
    monkeypatch.setenv("FLATPRIV_CACHE", str(path))
    return path


def _same(a: data_mod.Dataset, b: data_mod.Dataset) -> bool:
    return all(
        torch.equal(getattr(a, f), getattr(b, f))
        for f in ("x_train", "y_train", "x_test", "y_test", "train_index", "test_index")
    )


def test_cache_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FLATPRIV_CACHE", str(tmp_path / "a"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert cache_dir() == tmp_path / "a"
    monkeypatch.delenv("FLATPRIV_CACHE")
    assert cache_dir() == tmp_path / "x" / "flatpriv"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir() == Path.home() / ".cache" / "flatpriv"


def test_mnist1d_deterministic_cached_and_seeded(tmp_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = DataConfig(name="mnist1d", num_samples=500, seed=3)
    np.random.seed(123)
    random.seed(123)
    before_np, before_py = np.random.get_state()[1].copy(), random.getstate()
    a = load_data(cfg)
    assert np.array_equal(np.random.get_state()[1], before_np) and random.getstate() == before_py
    assert a.x_train.shape == (400, 40) and a.x_test.shape == (100, 40) and a.input_shape == (40,)
    assert a.x_train.dtype == torch.float32 and a.y_train.dtype == torch.int64 and a.num_classes == 10
    assert torch.equal(a.train_index, torch.arange(400))
    files = list(tmp_cache.glob("*.npz"))
    assert len(files) == 1 and not list(tmp_cache.glob("*.tmp"))

    def no_generation(*args: object) -> None:
        raise AssertionError("cache miss: mnist1d regenerated")

    monkeypatch.setattr(data_mod, "_generate_mnist1d", no_generation)
    b = load_data(cfg)  # must come from the cache
    assert _same(a, b)
    monkeypatch.undo()
    monkeypatch.setenv("FLATPRIV_CACHE", str(tmp_cache))
    files[0].unlink()
    c = load_data(cfg)  # regenerated: identical
    assert _same(a, c)
    d = load_data(replace(cfg, seed=4))
    assert not torch.equal(a.x_train, d.x_train)


def test_synthetic_deterministic_and_seeded() -> None:
    cfg = DataConfig(name="synthetic-longtail", seed=1)
    a, b, c = load_data(cfg), load_data(cfg), load_data(replace(cfg, seed=2))
    assert _same(a, b) and all(np.array_equal(a.meta[k], b.meta[k]) for k in a.meta)
    assert not torch.equal(a.x_train, c.x_train)
    assert a.input_shape == (cfg.dim,) and a.x_train.dtype == torch.float32
    # the train order is shuffled, not grouped by class
    assert len(set(a.y_train[:20].tolist())) > 1


def test_synthetic_rare_groups_are_rare_and_sized() -> None:
    cfg = DataConfig(name="synthetic-longtail")
    ds = load_data(cfg)
    m = ds.meta
    n_groups = cfg.num_classes * cfg.rare_groups_per_class
    assert len(ds.y_train) == cfg.num_classes * cfg.typical_per_class + n_groups * cfg.rare_size
    assert len(ds.y_test) == cfg.num_classes * cfg.test_per_class + n_groups * cfg.rare_test_size
    assert m["train_rare"].dtype == bool and m["train_rare"].mean() < 0.10
    assert np.array_equal(m["train_rare"], m["train_group"] >= 0)
    assert np.array_equal(m["test_rare"], m["test_group"] >= 0)
    assert set(np.unique(m["train_group"][m["train_rare"]])) == set(range(n_groups))
    sizes = np.bincount(m["train_group"][m["train_rare"]], minlength=n_groups)
    assert (sizes == cfg.rare_size).all()
    assert (np.bincount(m["test_group"][m["test_rare"]]) == cfg.rare_test_size).all()
    # every member of a group has the same label, in train and test
    y = ds.y_train.numpy()
    for g in range(n_groups):
        assert len(np.unique(y[m["train_group"] == g])) == 1
        assert np.unique(ds.y_test.numpy()[m["test_group"] == g]) == np.unique(y[m["train_group"] == g])


def test_synthetic_rare_groups_not_predictable_from_common_mode() -> None:
    ds = load_data(DataConfig(name="synthetic-longtail", seed=0))
    x, y, rare = ds.x_train.numpy(), ds.y_train.numpy(), ds.meta["train_rare"]
    means = np.stack([x[(y == c) & ~rare].mean(0) for c in range(ds.num_classes)])
    xt, yt = ds.x_test.numpy(), ds.y_test.numpy()
    pred = np.argmin(((xt[:, None, :] - means[None]) ** 2).sum(-1), axis=1)
    typical_acc = (pred == yt)[~ds.meta["test_rare"]].mean()
    rare_acc = (pred == yt)[ds.meta["test_rare"]].mean()
    assert typical_acc > 0.95
    assert rare_acc < 0.3
    # rare training points sit far from their class's common mode
    d_rare = np.linalg.norm(x[rare] - means[y[rare]], axis=1)
    d_typ = np.linalg.norm(x[~rare] - means[y[~rare]], axis=1)
    assert np.median(d_rare) > 2 * np.median(d_typ)


def test_digits_shapes_and_fixed_split() -> None:
    a = load_data(DataConfig(name="digits", seed=0))
    b = load_data(DataConfig(name="digits", seed=7))
    assert a.x_train.shape == (1347, 1, 8, 8) and a.x_test.shape == (450, 1, 8, 8)
    assert a.input_shape == (1, 8, 8) and a.num_classes == 10
    assert float(a.x_train.min()) >= 0.0 and float(a.x_train.max()) == 1.0
    assert _same(a, b)  # the split ignores the seed
    # stratified: each class's test share is a quarter of its examples, to within one
    per_class = np.bincount(np.concatenate([a.y_train.numpy(), a.y_test.numpy()]), minlength=10)
    assert (np.abs(np.bincount(a.y_test.numpy(), minlength=10) - per_class / 4) <= 1).all()


@pytest.mark.parametrize("p", [0.0, 0.1, 0.1237])  # 0.1237 * 2100 = 259.77: round, not floor
def test_label_noise_exact(p: float) -> None:
    cfg = DataConfig(name="synthetic-longtail", label_noise=p, seed=5)
    ds = load_data(cfg)
    clean, noisy, flipped = ds.meta["clean_labels"], ds.y_train.numpy(), ds.meta["flipped"]
    n = len(noisy)
    assert flipped.dtype == np.int64 and clean.dtype == np.int64
    assert np.array_equal(flipped, np.sort(flipped)) and len(np.unique(flipped)) == len(flipped)
    assert len(flipped) == round(p * n)
    assert np.array_equal(np.flatnonzero(noisy != clean), flipped)
    assert np.array_equal(clean, load_data(replace(cfg, label_noise=0.0)).y_train.numpy())
    assert noisy.min() >= 0 and noisy.max() < ds.num_classes
    if p > 0:
        again = load_data(cfg)
        assert np.array_equal(again.meta["flipped"], flipped) and torch.equal(again.y_train, ds.y_train)
        other = load_data(replace(cfg, seed=6))
        assert not np.array_equal(other.meta["flipped"], flipped)


def test_limit_train_then_noise() -> None:
    full = load_data(DataConfig(name="synthetic-longtail"))
    ds = load_data(DataConfig(name="synthetic-longtail", limit_train=100, label_noise=0.2))
    assert ds.x_train.shape[0] == 100 and torch.equal(ds.train_index, torch.arange(100))
    assert torch.equal(ds.x_train, full.x_train[:100])
    assert np.array_equal(ds.meta["clean_labels"], full.y_train[:100].numpy())
    assert np.array_equal(ds.meta["train_rare"], full.meta["train_rare"][:100])
    assert len(ds.meta["flipped"]) == 20 and len(ds.x_test) == len(full.x_test)
    with pytest.raises(FlatprivError, match="limit_train"):
        load_data(DataConfig(name="synthetic-longtail", limit_train=10**6))


def test_to_returns_copy_on_device() -> None:
    ds = load_data(DataConfig(name="synthetic-longtail", typical_per_class=5, test_per_class=2))
    moved = ds.to("cpu")
    assert moved is not ds and _same(ds, moved) and moved.meta is not ds.meta


def _idx_bytes(arr: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, arr.ndim]) + np.asarray(arr.shape, dtype=">i4").tobytes()
    return header + arr.astype(np.uint8).tobytes()


def _write_idx_layout(root: Path, folder: str, n_train: int, n_test: int, gz: bool) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test),
    }
    for name, arr in arrays.items():
        blob = _idx_bytes(arr)
        if gz:
            (raw / (name + ".gz")).write_bytes(gzip.compress(blob))
        else:
            (raw / name).write_bytes(blob)
    return arrays


@pytest.mark.parametrize(("name", "folder", "gz"), [("mnist", "MNIST", False), ("fashion-mnist", "FashionMNIST", True)])
def test_idx_reader(tmp_path: Path, name: str, folder: str, gz: bool) -> None:
    arrays = _write_idx_layout(tmp_path, folder, 20, 8, gz)
    ds = load_data(DataConfig(name=name, root=str(tmp_path)))
    assert ds.x_train.shape == (20, 1, 28, 28) and ds.x_test.shape == (8, 1, 28, 28)
    assert ds.input_shape == (1, 28, 28) and ds.num_classes == 10
    assert np.array_equal(ds.y_train.numpy(), arrays["train-labels-idx1-ubyte"])
    assert np.array_equal(ds.y_test.numpy(), arrays["t10k-labels-idx1-ubyte"])
    # standardised with the training set's statistics, pixel order preserved
    assert abs(float(ds.x_train.mean())) < 1e-4 and abs(float(ds.x_train.std()) - 1) < 1e-2
    img = arrays["train-images-idx3-ubyte"][3].astype(np.float64)
    got = ds.x_train[3, 0].numpy()
    assert np.corrcoef(img.ravel(), got.ravel())[0, 1] > 0.9999


def _write_cifar_layout(root: Path, per_batch: int, protocol: int = 2) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    all_x, all_y = [], []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        y = rng.integers(0, 10, per_batch).tolist()
        with (base / name).open("wb") as f:
            pickle.dump({b"batch_label": b"x", b"data": x, b"labels": y}, f, protocol=protocol)
        all_x.append(x)
        all_y.append(y)
    return np.concatenate(all_x), np.concatenate(all_y)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar10_reader(tmp_path: Path, protocol: int) -> None:
    x, y = _write_cifar_layout(tmp_path, 4, protocol)
    ds = load_data(DataConfig(name="cifar10", root=str(tmp_path)))
    assert ds.x_train.shape == (20, 3, 32, 32) and ds.x_test.shape == (4, 3, 32, 32)
    assert ds.input_shape == (3, 32, 32)
    assert np.array_equal(ds.y_train.numpy(), y[:20]) and np.array_equal(ds.y_test.numpy(), y[20:])
    per_channel = ds.x_train.mean(dim=(0, 2, 3))
    assert torch.allclose(per_channel, torch.zeros(3), atol=1e-4)
    # channel-major: the red plane of image 0 is the first 1024 bytes
    red = x[0, :1024].astype(np.float64)
    assert np.corrcoef(red, ds.x_train[0, 0].numpy().ravel())[0, 1] > 0.9999


def test_cifar10_refuses_code_in_pickle(tmp_path: Path) -> None:
    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with (base / name).open("wb") as f:
            pickle.dump({b"data": Path("x"), b"labels": [0]}, f, protocol=2)
    with pytest.raises(FlatprivError, match="data_batch_1"):
        load_data(DataConfig(name="cifar10", root=str(tmp_path)))


def test_missing_root_and_files(tmp_path: Path) -> None:
    with pytest.raises(FlatprivError, match="data.root is not set"):
        load_data(DataConfig(name="mnist", root=""))
    with pytest.raises(FlatprivError) as e:
        load_data(DataConfig(name="mnist", root=str(tmp_path)))
    assert str(tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte") in str(e.value)
    _write_idx_layout(tmp_path, "FashionMNIST", 4, 2, gz=False)
    (tmp_path / "FashionMNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FlatprivError) as e:
        load_data(DataConfig(name="fashion-mnist", root=str(tmp_path)))
    assert str(tmp_path / "FashionMNIST" / "raw" / "t10k-labels-idx1-ubyte") in str(e.value)
    _write_cifar_layout(tmp_path, 2)
    (tmp_path / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(FlatprivError) as e:
        load_data(DataConfig(name="cifar10", root=str(tmp_path)))
    assert str(tmp_path / "cifar-10-batches-py" / "test_batch") in str(e.value)
    assert "\n" not in str(e.value)


def test_corrupt_idx_file(tmp_path: Path) -> None:
    _write_idx_layout(tmp_path, "MNIST", 4, 2, gz=False)
    path = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(FlatprivError, match="truncated"):
        load_data(DataConfig(name="mnist", root=str(tmp_path)))


def test_unknown_name_and_bad_values() -> None:
    with pytest.raises(FlatprivError) as e:
        load_data(DataConfig(name="imagenet"))
    assert all(n in str(e.value) for n in DATASETS)
    with pytest.raises(FlatprivError, match="label_noise"):
        load_data(DataConfig(name="synthetic-longtail", label_noise=1.0))
