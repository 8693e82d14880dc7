"""Augmentation (flatpriv.data.augment): per example, seeded, on the device; pools and resumes unchanged by it;
augmentation multiplicity under DP keeps each example's contribution ≤ C; query views for LiRA and RMIA."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import TINY, assert_pool_matches_single_runs, assert_refused_in_one_line, interrupt_after
from torch.func import functional_call

import flatpriv.train as train_module
from flatpriv.analyses.attack import run_attack
from flatpriv.config import AugmentConfig
from flatpriv.config_io import resolve
from flatpriv.data import load_data
from flatpriv.data.augment import augment, hash32, keys, query_views, rows, view
from flatpriv.models import build_model
from flatpriv.pools.masks import make_keep
from flatpriv.pools.plain import train_models
from flatpriv.pools.run import train_pool
from flatpriv.privacy.clipping import clipped_grad
from flatpriv.train import resume, train

CROP_FLIP = AugmentConfig(crop_padding=2, flip=True)
AUG = ["augment.crop_padding=1", "augment.flip=true"]


def _lowbias32(x: int) -> int:
    """Wellons' lowbias32 in Python integers: the reference the int64 torch version must equal."""
    x ^= x >> 16
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x846CA68B) & 0xFFFFFFFF
    return x ^ (x >> 16)


def test_hash_equals_plain_python_integers():
    values = [0, 1, 2, 12345, 2**31 - 1, 2**31, 2**32 - 1] + list(np.random.default_rng(0).integers(0, 2**32, 500))
    got = hash32(torch.tensor(values, dtype=torch.int64)).tolist()
    assert got == [_lowbias32(int(v)) for v in values]


def _candidates(x: torch.Tensor, pad: int) -> list[torch.Tensor]:
    """Every crop of the zero-padded image and its mirror: what one augmented example may be."""
    xp = F.pad(x, (pad, pad, pad, pad))
    h, w = x.shape[-2:]
    crops = [xp[..., dy : dy + h, dx : dx + w] for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)]
    return crops + [c.flip(-1) for c in crops]


def test_each_example_is_one_crop_of_its_padded_self_offsets_uniform_flip_half():
    n, pad = 4000, 2
    x = torch.randn(n, 3, 6, 7)
    out = augment(x, torch.arange(n), seed=3, step=11, cfg=CROP_FLIP)
    assert out.shape == x.shape
    which = []
    for i in range(n):
        match = [j for j, c in enumerate(_candidates(x[i], pad)) if torch.equal(c, out[i])]
        assert len(match) == 1, i  # random data: exactly one candidate crop
        which.append(match[0])
    counts = np.bincount(which, minlength=50)
    assert counts.min() > 0  # every offset and both flips occur
    assert abs(counts[25:].sum() / n - 0.5) < 0.03  # mirrored with probability 1/2 (sd 0.008)
    per_offset = counts[:25] + counts[25:]  # 25 equally likely offsets: expected 160 each, sd 12.4
    assert np.abs(per_offset - n / 25).max() < 5 * np.sqrt(n / 25)


def test_augmentation_is_per_example_whatever_the_batch():
    x = torch.randn(32, 1, 8, 8)
    idx = torch.arange(100, 132)
    whole = augment(x, idx, seed=0, step=5, cfg=CROP_FLIP)
    for i in range(32):  # alone, each example gets what it got inside the batch
        assert torch.equal(augment(x[i : i + 1], idx[i : i + 1], 0, 5, CROP_FLIP)[0], whole[i])
    perm = torch.randperm(32, generator=torch.Generator().manual_seed(0))
    assert torch.equal(augment(x[perm], idx[perm], 0, 5, CROP_FLIP), whole[perm])
    # the same example value at two indices is augmented independently
    same = augment(x[:1].expand(64, 1, 8, 8), torch.arange(64), 0, 5, CROP_FLIP)
    assert len({tuple(s.flatten().tolist()) for s in same}) > 10


def test_augmentation_is_seeded_by_seed_and_step():
    x = torch.randn(256, 3, 8, 8)
    idx = torch.arange(256)
    a = augment(x, idx, 7, 3, CROP_FLIP)
    assert torch.equal(a, augment(x, idx, 7, 3, CROP_FLIP))
    for other in (augment(x, idx, 8, 3, CROP_FLIP), augment(x, idx, 7, 4, CROP_FLIP)):
        changed = (other != a).flatten(1).any(1).float().mean()
        assert changed > 0.9  # 50 outcomes per example: about 98 % change
    assert torch.equal(augment(x, idx, 7, 3, AugmentConfig()), x)  # off: the batch as it is


def test_pool_seeds_broadcast_to_each_models_own_augmentation():
    x = torch.randn(3, 16, 1, 8, 8)
    idx = torch.arange(16).expand(3, 16)
    seeds = torch.tensor([5, 6, 7])[:, None]
    pooled = augment(x, idx, seeds, 9, CROP_FLIP)
    for k, s in enumerate((5, 6, 7)):
        assert torch.equal(pooled[k], augment(x[k], idx[k], s, 9, CROP_FLIP))


ON_GPU = pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU"))


@pytest.mark.parametrize("device", ["cpu", ON_GPU])
def test_augmentation_runs_on_the_datas_device(device):
    x = torch.randn(64, 3, 8, 8)
    idx = torch.arange(64)
    on = augment(x.to(device), idx.to(device), 1, 2, CROP_FLIP, copies=3)
    assert on.device.type == device and on.shape == (64, 3, 3, 8, 8)
    assert torch.equal(on.cpu(), augment(x, idx, 1, 2, CROP_FLIP, copies=3))
    assert keys(1, 2, idx.to(device)).device.type == device  # the draws themselves are made there


def test_one_d_signals_are_shifted_and_reversed():
    x = torch.randn(500, 40)
    out = augment(x, torch.arange(500), 0, 0, AugmentConfig(crop_padding=3, flip=True))
    xp = F.pad(x, (3, 3))
    for i in range(500):
        cands = [xp[i, d : d + 40] for d in range(7)]
        assert any(torch.equal(out[i], c) or torch.equal(out[i], c.flip(0)) for c in cands)
    chan = augment(x[:, None], torch.arange(500), 0, 0, AugmentConfig(crop_padding=3, flip=True))
    assert torch.equal(chan[:, 0], out)  # [C, L] and [L] are the same signal


def test_copies_differ_and_query_views_are_the_shifts_and_mirrors():
    x = torch.randn(8, 1, 8, 8)
    many = augment(x, torch.arange(8), 0, 0, CROP_FLIP, copies=4)
    assert many.shape == (8, 4, 1, 8, 8)
    assert all(len({tuple(c.flatten().tolist()) for c in many[i]}) > 1 for i in range(8))
    views = query_views(CROP_FLIP, (1, 8, 8))
    assert len(views) == 10 and views[0] == (0, 0, False) and (0, 0, True) in views
    assert torch.equal(view(x, 0, 0, False, 2), x)
    assert torch.equal(view(x, 0, 0, True, 2), x.flip(-1))
    right = view(x, 0, 2, False, 2)
    assert torch.equal(right[..., 2:], x[..., :-2]) and (right[..., :2] == 0).all()
    assert query_views(AugmentConfig(crop_padding=2), (40,)) == [(0, 0, False), (0, 2, False), (0, -2, False)]


# --- training ---------------------------------------------------------------------------------------------------


def test_training_sees_augmented_batches_and_resumes_to_the_same_weights(tmp_path, monkeypatch):
    over = TINY + AUG + ["model.name=cnn2d", "model.width=8", "train.epochs=3"]
    cfg, _ = resolve(overrides=over)
    plain, _ = resolve(overrides=[o for o in over if not o.startswith("augment")])
    full, unaugmented = train(cfg, out=tmp_path / "a", quiet=True), train(plain, out=tmp_path / "p", quiet=True)
    a = torch.load(Path(full["run_dir"]) / "model.pt", weights_only=True)
    p = torch.load(Path(unaugmented["run_dir"]) / "model.pt", weights_only=True)
    assert any(not torch.equal(a[k], p[k]) for k in a)
    interrupt_after(monkeypatch, train_module, "_save_checkpoint", 1)
    part = train(cfg, out=tmp_path / "b", quiet=True)
    assert part["interrupted_after_epoch"] == 1
    done = resume(part["run_dir"], quiet=True)
    b = torch.load(Path(done["run_dir"]) / "model.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)  # no augmentation state to lose: it is keyed on the step


@pytest.mark.parametrize("algorithm", ["sgd", "dpsgd"])
def test_augmented_pool_equals_separate_runs(tmp_path, algorithm):
    over = TINY + AUG + [f"algorithm={algorithm}"]
    over += ["privacy.noise_multiplier=1.0", "privacy.noise_seed=11"] if algorithm == "dpsgd" else []
    cfg, _ = resolve(overrides=over + ["seed=5"])
    data = load_data(cfg.data)
    keep = make_keep(3, len(data.y_train), 0.5, seed=1)
    pooled = train_models(cfg, data, keep, seeds=[5, 6, 7])
    assert_pool_matches_single_runs(pooled, over, keep, tmp_path, noise_seed=11 if algorithm == "dpsgd" else None)


def test_dp_pool_with_multiplicity_equals_separate_runs(tmp_path):
    over = TINY + AUG + ["algorithm=dpsat", "privacy.noise_multiplier=1.0", "privacy.noise_seed=3"]
    over += ["augment.multiplicity=3", "train.epochs=1"]
    cfg, _ = resolve(overrides=over + ["seed=5"])
    data = load_data(cfg.data)
    keep = make_keep(3, len(data.y_train), 0.5, seed=1)
    pooled = train_models(cfg, data, keep, seeds=[5, 6, 7])
    for k, s in enumerate(assert_pool_matches_single_runs(pooled, over, keep, tmp_path, noise_seed=3)):
        assert pooled["epsilon"][k] == s["epsilon"]


# --- augmentation multiplicity (De et al. 2022) -------------------------------------------------------------------


def _model_and_batch(n: int = 12, copies: int = 4):
    torch.manual_seed(0)
    cfg, _ = resolve(overrides=TINY + ["model.name=cnn2d", "model.width=8"])
    model = build_model(cfg.model, (1, 8, 8), 10)
    x = torch.randn(n, 1, 8, 8)
    y = torch.randint(0, 10, (n,))
    return model, augment(x, torch.arange(n), 0, 0, CROP_FLIP, copies=copies), y


def test_multiplicity_clips_the_mean_of_each_examples_copies():
    """Σ_i clip_C((1/K) Σ_k ∇ℓ(x_ik, y_i)) against a naive loop of autograd calls, one per copy."""
    model, xk, y = _model_and_batch()
    params = {k: v.detach() for k, v in model.named_parameters()}
    clip = 0.05
    got, info = clipped_grad(model, clip, "auto", copies=4)(params, xk, y, return_norms=True)
    want = {k: torch.zeros_like(v) for k, v in params.items()}
    norms = []
    for i in range(len(y)):
        per_copy = []
        for c in range(4):
            leaves = {k: v.clone().requires_grad_(True) for k, v in params.items()}
            loss = F.cross_entropy(functional_call(model, leaves, (xk[i, c : c + 1],)), y[i : i + 1])
            per_copy.append(torch.autograd.grad(loss, list(leaves.values())))
        mean = [torch.stack(gs).mean(0) for gs in zip(*per_copy)]
        norm = torch.sqrt(sum(g.square().sum() for g in mean))
        norms.append(norm)
        for k, g in zip(want, mean):
            want[k] += g * min(1.0, clip / (float(norm) + 1e-6))
    for k in want:
        torch.testing.assert_close(got[k], want[k], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(info.norms, torch.stack(norms), atol=1e-6, rtol=1e-5)
    assert float(torch.stack(norms).min()) > clip  # every example clipped: the bound below is tight


def test_multiplicity_keeps_each_examples_contribution_within_c():
    """Neighbouring data sets D and D' = D plus one example (its K copies with a huge gradient): the clipped sums
    differ by at most C, and by C itself when that example is clipped."""
    model, xk, y = _model_and_batch(n=9)
    xk[-1] *= 50.0
    params = {k: v.detach() for k, v in model.named_parameters()}
    for clip in (0.1, 1.0):
        oracle = clipped_grad(model, clip, "auto", copies=4)
        with_it, _ = oracle(params, xk, y)
        without, _ = oracle(params, xk[:-1], y[:-1])
        diff = torch.sqrt(sum((with_it[k] - without[k]).square().sum() for k in params))
        assert float(diff) <= clip * (1 + 1e-5)
        assert float(diff) == pytest.approx(clip, rel=1e-4)
        assert oracle.sensitivity == clip and oracle.method == "vmap"


def test_multiplicity_runs_at_the_same_epsilon_and_differs_from_k1(tmp_path):
    over = TINY + AUG + ["algorithm=dpsgd", "privacy.target_epsilon=4", "privacy.noise_seed=0"]
    one = train(resolve(overrides=over)[0], out=tmp_path, quiet=True)
    four = train(resolve(overrides=over + ["augment.multiplicity=4"])[0], out=tmp_path, quiet=True)
    assert four["epsilon"] == one["epsilon"] and four["noise_multiplier"] == one["noise_multiplier"]
    assert four["releases"] == one["releases"]
    assert four["test_accuracy"] != one["test_accuracy"] or four["train_loss"] != one["train_loss"]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (["algorithm=sgd", "augment.multiplicity=2", "augment.flip=true"], "it is for the DP rows"),
        (["algorithm=dpsgd", "augment.multiplicity=2", "privacy.noise_multiplier=1"], "would average identical"),
        (["data.name=synthetic-longtail", "augment.flip=true", "model.name=mlp"], None),
        (["augment.crop_padding=-1"], "augment.crop_padding = -1"),
    ],
)
def test_bad_augmentation_settings_are_refused_in_one_line(tmp_path, capsys, settings, message):
    argv = ["train", "--out", str(tmp_path / "o")]
    for s in TINY + settings:
        argv += ["--set", s]
    (tmp_path / "o").mkdir()
    if message is None:  # a 1-D vector is a signal: augmenting it is allowed
        assert train_module.prepare(resolve(overrides=TINY + settings)[0]) is not None
        return
    assert_refused_in_one_line(argv, message, capsys, tmp_path / "o")


def test_fit_takes_the_augmentation_keywords():
    from flatpriv.api.keywords import config_from_keywords

    cfg = config_from_keywords("fit", "dpsgd", {"crop_padding": 4, "flip": True, "augment_multiplicity": 8})
    assert (cfg.augment.crop_padding, cfg.augment.flip, cfg.augment.multiplicity) == (4, True, 8)


# --- query augmentation for the attacks ---------------------------------------------------------------------------


def test_query_views_make_lira_and_rmia_at_least_as_strong(tmp_path, capsys):
    """An augmented pool of 16 MLPs on digits keeps logits on its 10 query views; each LiRA and RMIA variant
    averaged over the views scores an AUC at least that of the same attack on the example alone (measured
    differences +0.006 to +0.03, docs/privacy_audit section of the README)."""
    cfg, _ = resolve(overrides=["data.name=digits", "train.epochs=30", "train.batch_size=64"] + AUG)
    pool = train_pool(cfg, 16, out=tmp_path, quiet=True)
    arrays = Path(pool["run_dir"]) / "arrays"
    views = np.load(arrays / "train_logits_views.npy")
    assert views.shape == (16, 10, 1347, 10)
    np.testing.assert_array_equal(views[:, 0], np.load(arrays / "train_logits.npy"))  # view 0 is the example
    np.testing.assert_array_equal(np.load(arrays / "query_views.npy")[0], [0, 0, 0])
    summary = run_attack([pool["run_dir"]], out=tmp_path / "att", n_boot=0)
    auc = {row["attack"]: row["auc"] for row in summary["table"]}
    for base in ("lira_online", "lira_online_fixed", "lira_offline", "lira_offline_fixed", "rmia_online"):
        assert auc[base + "_aug"] >= auc[base], (base, auc[base], auc[base + "_aug"])
    assert "10 query views" in summary["variants"]["lira_online_aug"]
    saved = json.loads((Path(summary["run_dir"]) / "summary.json").read_text())
    assert {"lira_online", "lira_online_aug"} <= {r["attack"] for r in saved["table"]}


def test_fit_trains_user_images_with_augmentation(tmp_path):
    import flatpriv

    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(96, 1, 8, 8, generator=gen), torch.randint(0, 3, (96,), generator=gen)

    def build() -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))

    common = dict(epochs=2, batch_size=32, noise_multiplier=1.0, noise_seed=0, out=tmp_path, algorithm="dpsgd")
    plain = flatpriv.fit(build, (x, y), **common)
    augmented = flatpriv.fit(build, (x, y), crop_padding=2, flip=True, augment_multiplicity=2, **common)
    assert augmented["epsilon"] == plain["epsilon"]
    a = torch.load(Path(augmented["run_dir"]) / "model.pt", weights_only=True)
    p = torch.load(Path(plain["run_dir"]) / "model.pt", weights_only=True)
    assert not torch.equal(a["1.weight"], p["1.weight"])
    config = json.loads((Path(augmented["run_dir"]) / "config.json").read_text())
    assert config["augment"] == {"crop_padding": 2, "flip": True, "multiplicity": 2}


@pytest.mark.parametrize("index_shape", [(7,), (3, 5), (0,), (2, 0)])
def test_rows_equals_advanced_indexing(index_shape: tuple[int, ...]) -> None:
    """rows(t, idx) is t[idx] for indices of any shape (a single run's batch, a pool's [K, B] block, an empty
    Poisson batch), for inputs with trailing dimensions and for 1-D labels."""
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, 11, index_shape, generator=g)
    for t in (torch.randn(11, 2, 3, generator=g), torch.arange(11)):
        got = rows(t, idx)
        assert got.shape == t[idx].shape and torch.equal(got, t[idx])
