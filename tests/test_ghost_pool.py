"""Ghost clipping vmapped over a pool's model axis equals the single-model ghost oracle, model by model."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY, assert_pool_matches_single_runs

from flatpriv.config_io import resolve
from flatpriv.data import load_data
from flatpriv.pools import dp as pool_dp
from flatpriv.pools import make_keep, train_models
from flatpriv.pools.stack import stacked_models
from flatpriv.privacy import clipped_grad
from flatpriv.privacy.ghost_pool import pooled_clipped_sums


@pytest.mark.parametrize(
    "model",
    [
        ["model.name=mlp", "model.width=32"],
        ["model.name=cnn2d", "model.width=8"],
        ["model.name=resnet", "model.width=8"],
        ["data.name=mnist1d", "model.name=cnn1d", "model.width=16"],
    ],
)
def test_pooled_ghost_equals_the_single_model_oracle(model):
    cfg, _ = resolve(overrides=["data.name=digits", *model])
    data = load_data(cfg.data)
    params, base = stacked_models(cfg, data, [0, 1, 2])
    idx = torch.randint(0, len(data.y_train), (3, 20), generator=torch.Generator().manual_seed(0))
    x, y = data.x_train[idx], data.y_train[idx]
    counts = [20, 15, 5]  # models 1 and 2 have padded rows (weight 0)
    w = (torch.arange(20) < torch.tensor(counts)[:, None]).float()
    got = pooled_clipped_sums(base, 0.5)(params, x, y, w)
    oracle = clipped_grad(base, 0.5, "ghost")
    for k, n in enumerate(counts):
        ref, info = oracle({name: v[k] for name, v in params.items()}, x[k, :n], y[k, :n], return_norms=True)
        assert (info.norms > 0.5).any()  # clipping is active, not the identity
        for name, v in ref.items():
            torch.testing.assert_close(got[name][k], v, atol=1e-6, rtol=1e-5)


def test_dp_cnn_pool_with_vectorized_clipping_equals_separate_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(pool_dp, "vmap_models", lambda model, device: True)  # the GPU path for a CNN, on the CPU
    over = TINY + [
        "model.name=cnn2d",
        "model.width=8",
        "train.epochs=2",
        "algorithm=dpsat",
        "privacy.noise_multiplier=1.0",
        "privacy.noise_seed=11",
        "sharpness.rho=0.2",
    ]
    cfg, _ = resolve(overrides=over + ["seed=5"])
    data = load_data(cfg.data)
    keep = make_keep(3, len(data.y_train), 0.5, seed=30, mode="bernoulli")
    pooled = train_models(cfg, data, keep, seeds=[5, 6, 7])
    for k, s in enumerate(assert_pool_matches_single_runs(pooled, over, keep, tmp_path, noise_seed=11)):
        assert pooled["epsilon"][k] == s["epsilon"]
