"""The noisy-sgd-bias study's two computed stages: the diagonal linear network and least squares.

Each saves its arrays under ``arrays/`` (``.npz``, read back without pickle) and returns a small JSON record.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..dynamics import (
    alpha_infinity,
    exact_covariance,
    first_order_covariance,
    gd_limit,
    ls_problem,
    simulate_ls,
    sparse_problem,
    train_dln,
)
from .runner import Context


def _save(ctx: Context, name: str, **arrays: np.ndarray) -> str:
    path = ctx.run_dir / "arrays" / f"{name}.npz"
    path.parent.mkdir(exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)
    return str(path.relative_to(ctx.run_dir))


def dln_stage(ctx: Context) -> dict[str, Any]:
    """GD, SGD (batch 1) and Noisy-SGD at every σ, for every α, on ``dln_seeds`` problems; per row the final
    ‖β − β*‖², α∞ = √(w₊ ⊙ w₋), and ‖β_GD(α∞) − β‖² (GD started from the measured α∞: the theory's prediction)."""
    s = ctx.settings
    torch.set_num_threads(1)  # thousands of tiny steps: a second thread only adds contention
    seeds = [s["seed"] + k for k in range(s["dln_seeds"])]
    problem = sparse_problem(seeds, s["dln_n"], s["dln_d"], s["dln_sparsity"], s["dln_value"])
    sigmas = [0.0, *s["dln_sigmas"]]
    record = max(1, s["dln_steps"] // 200)
    out: dict[str, Any] = {"methods": ["GD", "SGD"] + [f"Noisy-SGD σ={x:g}" for x in s["dln_sigmas"]], "alphas": {}}
    for alpha in s["dln_alphas"]:
        gd = train_dln(problem, alpha, s["dln_steps"], batch=None, record_every=record)
        sgd = train_dln(problem, alpha, s["dln_steps"], sigmas=sigmas, batch=1, record_every=record)
        dist = torch.cat([gd.distance, sgd.distance], 1).numpy()  # [S, 1 + M, R]
        a_inf = torch.cat([alpha_infinity(gd), alpha_infinity(sgd)], 1)  # [S, 1 + M, d]
        beta = torch.cat([gd.beta, sgd.beta], 1)
        pred = gd_limit(problem, a_inf, s["dln_steps"])
        pred_gap = ((pred.beta - beta) ** 2).sum(-1).numpy()
        plain_gap = ((gd.beta - beta) ** 2).sum(-1).numpy()  # the same against GD from α itself
        geo = a_inf.log().mean(-1).exp().numpy()
        path = _save(
            ctx,
            f"dln-alpha{alpha:g}",
            distance=dist,
            steps=sgd.steps_recorded,
            alpha_inf=geo,
            prediction_gap=pred_gap,
            gd_gap=plain_gap,
            final_loss=torch.cat([gd.loss, sgd.loss], 1)[..., -1].numpy(),
        )
        out["alphas"][f"{alpha:g}"] = {
            "arrays": path,
            "final_distance": dist[..., -1].tolist(),  # [S][1 + M]
            "gamma_mean": float(gd.gamma.mean()),
        }
    return out


def _c_hat(cov_noisy: np.ndarray, cov_plain: np.ndarray, h_inv: np.ndarray, gamma: float, sigma: float) -> float:
    """ĉ/γ: the projection of M(σ) − M(0) on σ²H⁻¹, per unit γ (first order predicts 1/2)."""
    diff = cov_noisy - cov_plain
    return float((diff * h_inv).sum() / (sigma**2 * gamma * (h_inv * h_inv).sum()))


def ls_stage(ctx: Context) -> dict[str, Any]:
    """Least squares: simulated stationary covariances at σ = 0 and each σ against the exact discrete Lyapunov
    solution and the first-order formula, with ĉ/γ and its CI over chains; and the over-parameterised bound."""
    s = ctx.settings
    torch.set_num_threads(1)
    p = ls_problem(s["ls_n"], s["ls_d"], s["ls_noise"], s["seed"])
    gamma = s["ls_step"] / float((p.X**2).sum(1).max())
    h_inv = np.linalg.inv(p.hessian.numpy())
    burn = s["ls_steps"] // 10
    covs, rows = {}, []
    rng = np.random.default_rng(s["seed"])
    for k, sigma in enumerate([0.0, *s["ls_sigmas"]]):
        run = simulate_ls(p, gamma, sigma, s["ls_steps"], s["ls_chains"], s["seed"] + k, burn_in=burn)
        covs[sigma] = run.cov_per_chain  # type: ignore[assignment]
        exact = exact_covariance(p, gamma, sigma)
        first, homo = first_order_covariance(p, gamma, sigma)
        sim = run.cov_per_chain.mean(0)  # type: ignore[union-attr]
        se = run.cov_per_chain.std(0, ddof=1) / np.sqrt(s["ls_chains"])  # type: ignore[union-attr]
        row = {
            "sigma": sigma,
            "rel_err_exact": float(np.linalg.norm(sim - exact) / np.linalg.norm(exact)),
            "max_z_exact": float(np.abs((sim - exact) / se).max()),
            "rel_err_first_order": float(np.linalg.norm(first - exact) / np.linalg.norm(exact)),
            "rel_err_homoscedastic": float(np.linalg.norm(homo - exact) / np.linalg.norm(exact)),
            "sim_diag": np.diag(sim).tolist(),
            "exact_diag": np.diag(exact).tolist(),
            "first_order_diag": np.diag(first).tolist(),
        }
        if sigma > 0:
            plain = covs[0.0]
            row["c_exact"] = _c_hat(exact, exact_covariance(p, gamma, 0.0), h_inv, gamma, sigma)
            row["c_sim"] = _c_hat(sim, plain.mean(0), h_inv, gamma, sigma)
            draws = []
            for _ in range(s["resamples"]):
                a = run.cov_per_chain[rng.integers(0, len(plain), len(plain))].mean(0)  # type: ignore[index]
                b = plain[rng.integers(0, len(plain), len(plain))].mean(0)
                draws.append(_c_hat(a, b, h_inv, gamma, sigma))
            row["c_sim_ci"] = [float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))]
        rows.append(row)
    over = ls_problem(s["ls_over_n"], s["ls_over_d"], 0.0, s["seed"])
    g_over = 1.0 / float((over.X**2).sum(1).max())
    coupled = simulate_ls(
        over,
        g_over,
        s["ls_over_sigma"],
        s["ls_over_steps"],
        max(2, s["ls_chains"] // 4),
        s["seed"] + 100,
        coupled=True,
        record_every=max(1, s["ls_over_steps"] // 50),
    )
    path = _save(
        ctx,
        "least-squares",
        gap=coupled.gap,
        bound_noisy=coupled.bound_noisy,
        bound_sgd=coupled.bound_sgd,
        steps=coupled.steps,  # type: ignore[arg-type]
    )
    holds = bool((coupled.gap <= coupled.bound_noisy).all())  # type: ignore[operator]
    return {
        "gamma": gamma,
        "rows": rows,
        "over": {
            "arrays": path,
            "gamma": g_over,
            "holds_noisy": holds,
            "holds_sgd": bool((coupled.gap <= coupled.bound_sgd).all()),  # type: ignore[operator]
            "final_gap": float(coupled.gap[-1]),  # type: ignore[index]
            "final_bound_noisy": float(coupled.bound_noisy[-1]),  # type: ignore[index]
            "final_bound_sgd": float(coupled.bound_sgd[-1]),  # type: ignore[index]
        },
    }
