"""Opacus DP-SGD on flatpriv's data and model at a given σ: the outside reference row of the dp-sat study and of
``benchmarks/opacus_dp.py`` (Opacus is optional: ``pip install -e '.[bench]'``; it is in the test extra too).

The same model (built by :func:`flatpriv.models.build_model` after ``torch.manual_seed(seed)``, so the same
initial weights as flatpriv's model with that seed), the same Poisson rate q = B/N and round(1/q) steps per
epoch (Opacus's ``DPDataLoader`` with ``sample_rate = q``, its sampler set to flatpriv's step count), clipping
norm C, noise multiplier σ, SGD with the config's lr, momentum and weight decay and a constant lr. Opacus
divides the noisy sum by its own expected batch size, ⌊N/len(loader)⌋, which differs from flatpriv's q·N by at
most a few examples.
"""

from __future__ import annotations

import importlib.util
import time
import warnings
from typing import Any

import torch
import torch.nn.functional as F

from ..config import Config
from ..data import load_data
from ..errors import FlatprivError
from ..models import build_model
from ..privacy.accounting import epsilon


def available() -> bool:
    return importlib.util.find_spec("opacus") is not None


def opacus_dpsgd(cfg: Config, sigma: float, seed: int, mode: str = "hooks", device: str = "cpu") -> dict[str, Any]:
    """Train ``cfg``'s model with Opacus DP-SGD at noise multiplier ``sigma`` (data sampled on the CPU, the model
    on ``device``); test accuracy, wall time per epoch and the ε of exactly the releases Opacus made (flatpriv's
    accountant on its σ, q and steps)."""
    if not available():
        raise FlatprivError("Opacus is not installed: pip install -e '.[bench]'")
    from opacus import PrivacyEngine
    from opacus.data_loader import DPDataLoader

    if mode not in ("hooks", "ghost"):
        raise FlatprivError(f"opacus mode {mode!r}: hooks or ghost")
    if cfg.optim.schedule != "constant" or cfg.optim.name != "sgd":
        raise FlatprivError("the Opacus reference trains with SGD at a constant lr (optim.schedule=constant)")
    data = load_data(cfg.data)
    n = len(data.y_train)
    q = cfg.privacy.sample_rate or cfg.train.batch_size / n
    torch.manual_seed(seed)
    model = build_model(cfg.model, data.input_shape, data.num_classes).to(device)
    o = cfg.optim
    opt = torch.optim.SGD(model.parameters(), lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    loader = DPDataLoader(
        torch.utils.data.TensorDataset(data.x_train, data.y_train),
        sample_rate=q,
        generator=torch.Generator().manual_seed(seed),
    )
    loader.batch_sampler.steps = max(1, round(1 / q))  # flatpriv's steps per epoch (Opacus's own: ⌊1/q⌋)
    kwargs: dict[str, Any] = {"grad_sample_mode": mode}
    if mode == "ghost":
        kwargs["criterion"] = torch.nn.CrossEntropyLoss()
    with warnings.catch_warnings():  # Opacus warns about secure RNG and its own version checks
        warnings.simplefilter("ignore")
        made = PrivacyEngine().make_private(
            module=model,
            optimizer=opt,
            data_loader=loader,
            noise_multiplier=sigma,
            max_grad_norm=cfg.privacy.clip_norm,
            poisson_sampling=False,  # the loader already samples each example with probability q
            noise_generator=torch.Generator().manual_seed(seed + 1),
            **kwargs,
        )
        model, opt = made[0], made[1]
        criterion = made[2] if mode == "ghost" else None
        loader = made[-1]
        steps = 0
        t0 = time.perf_counter()
        for _ in range(cfg.train.epochs):
            for x, y in loader:
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                opt.zero_grad()
                if criterion is not None:
                    criterion(model(x), y).backward()
                else:
                    F.cross_entropy(model(x), y).backward()
                opt.step()
                steps += 1
        wall = time.perf_counter() - t0
    model.eval()
    with torch.no_grad():
        x_test = data.x_test.to(device)
        logits = torch.cat([model(x_test[i : i + 2048]) for i in range(0, len(x_test), 2048)]).cpu()
    return {
        "seed": seed,
        "test_accuracy": float((logits.argmax(1) == data.y_test).float().mean()),
        "noise_multiplier": sigma,
        "sample_rate": q,
        "steps": steps,
        "epsilon": epsilon(sigma, q, steps, cfg.privacy.delta, cfg.privacy.accountant),
        "wall_seconds": wall,
        "seconds_per_epoch": wall / cfg.train.epochs,
        "mode": mode,
    }
