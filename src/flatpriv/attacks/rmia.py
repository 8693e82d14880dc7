"""RMIA, the relative membership-inference attack (Zarifzadeh, Liu, Shokri, ICML 2024, "Low-Cost High-Power
Membership Inference Attacks"), on arrays of per-model probabilities (numpy only, never torch).

Signal: p(x|θ) = softmax(z / T)_y, the probability a model gives the true label (T: softmax temperature). With
reference models f (a pool's other models):

- online:  P(x) = ½ (mean_{f: x ∈ D_f} p(x|f) + mean_{f: x ∉ D_f} p(x|f)), both sides needed;
- offline: P(x) = ½ [(1 + a) · mean_{f: x ∉ D_f} p(x|f) + (1 − a)], only references that held x out
  (the linear approximation of the IN mean from the OUT mean, a ∈ [0, 1]);
- population points z (never trained on by any model: the test set): P(z) = mean over all references of p(z|f),
  in both modes (every reference is OUT for z, so there is no IN side to average, and no correction to apply);
- LR(x, z) = [p(x|θ) / P(x)] / [p(z|θ) / P(z)], Score(x) = |{z ∈ Z : LR(x, z) > γ}| / |Z|.

With r = p/P the score is |{z : r_z < r_x / γ}| / |Z|: one sort of the r_z and one ``searchsorted`` per target,
never an N × |Z| matrix. It is computed with logs, log r_z < log r_x − log γ, so that probabilities that underflow
stay ordered. Larger scores mean "member". Defaults: γ = 2 (the paper's code; Privacy Meter uses 1), a = 0.3
(the paper's CIFAR-10 value), T = 1. An example with no IN (online only) or no OUT reference gets NaN.

Evaluation as for LiRA: every pool model in turn is the target, the others its references
(:meth:`RMIA.leave_one_out`, per-model sums minus the target's own), or any subset of references per target
(:func:`rmia_scores`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import FlatprivError
from .scores import _log_softmax, _prepare

_TINY = 1e-300  # floor of P: a mean of probabilities that all underflowed


def rmia_signal(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """p(x|θ) = softmax(z / T)_y, float64, shape logits.shape[:-1]."""
    if not temperature > 0:
        raise FlatprivError(f"the RMIA softmax temperature must be > 0, got {temperature}")
    z, is_y = _prepare(logits, labels)
    return np.exp(_log_softmax(z / temperature)[is_y]).reshape(z.shape[:-1])


def _check(gamma: float, a: float) -> None:
    if not gamma > 0:
        raise FlatprivError(f"RMIA's gamma must be > 0, got {gamma}")
    if not 0 <= a <= 1:
        raise FlatprivError(f"RMIA's offline a must lie in [0, 1], got {a}")


def _denominator(s_in: np.ndarray, n_in: np.ndarray, s_out: np.ndarray, n_out: np.ndarray, online: bool, a: float):
    """P(x) from sums and counts of the references' p(x|f) on each side; NaN where a needed side is empty."""
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_out = np.where(n_out > 0, s_out / np.maximum(n_out, 1), np.nan)
        if online:
            mean_in = np.where(n_in > 0, s_in / np.maximum(n_in, 1), np.nan)
            return 0.5 * (mean_in + mean_out)
        return 0.5 * ((1.0 + a) * mean_out + (1.0 - a))


def _score(p_x: np.ndarray, big_p_x: np.ndarray, p_z: np.ndarray, big_p_z: np.ndarray, gamma: float) -> np.ndarray:
    """|{z : r_z < r_x / γ}| / |Z| with r = p / P, in logs; NaN where P(x) is NaN."""
    with np.errstate(divide="ignore", invalid="ignore"):
        log_rz = np.sort(np.log(p_z) - np.log(np.maximum(big_p_z, _TINY)))
        log_rx = np.log(p_x) - np.log(np.maximum(big_p_x, _TINY))
    count = np.searchsorted(log_rz, np.where(np.isnan(log_rx), 0.0, log_rx) - np.log(gamma), side="left")
    return np.where(np.isnan(big_p_x), np.nan, count / log_rz.size)


def _as_pool(p: np.ndarray, keep: np.ndarray, pz: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    p, pz, k = np.asarray(p, dtype=np.float64), np.asarray(pz, dtype=np.float64), np.asarray(keep)
    if p.ndim != 2 or k.shape != p.shape or pz.ndim != 2 or pz.shape[0] != p.shape[0] or pz.shape[1] < 1:
        raise FlatprivError(
            f"RMIA needs p(x|f) [models, N], keep [models, N] and p(z|f) [models, |Z|], got {p.shape}, "
            f"{k.shape} and {pz.shape}"
        )
    if not (np.all((p >= 0) & (p <= 1)) and np.all((pz >= 0) & (pz <= 1))):
        raise FlatprivError("RMIA's signals must be probabilities in [0, 1]")
    return p, k.astype(bool), pz


def rmia_scores(
    target_px: np.ndarray,
    target_pz: np.ndarray,
    ref_px: np.ndarray,
    ref_keep: np.ndarray,
    ref_pz: np.ndarray,
    online: bool = True,
    gamma: float = 2.0,
    offline_a: float = 0.3,
) -> np.ndarray:
    """RMIA scores [N] of one target (p(x|θ) [N], p(z|θ) [|Z|]) against references (p(x|f), keep [R, N],
    p(z|f) [R, |Z|])."""
    _check(gamma, offline_a)
    ref_px, k, ref_pz = _as_pool(ref_px, ref_keep, ref_pz)
    px, pz = np.asarray(target_px, dtype=np.float64), np.asarray(target_pz, dtype=np.float64)
    if px.shape != ref_px.shape[1:] or pz.shape != ref_pz.shape[1:]:
        raise FlatprivError(f"target signals {px.shape}, {pz.shape} do not match the references' {ref_px.shape}")
    big_px = _denominator((ref_px * k).sum(0), k.sum(0), (ref_px * ~k).sum(0), (~k).sum(0), online=online, a=offline_a)
    return _score(px, big_px, pz, ref_pz.mean(0), gamma)


@dataclass(frozen=True)
class RMIA:
    """A configured RMIA attack; :meth:`leave_one_out` scores every pool model with the others as references."""

    online: bool = True
    gamma: float = 2.0
    offline_a: float = 0.3

    def __post_init__(self) -> None:
        _check(self.gamma, self.offline_a)

    def __call__(
        self, target_px: np.ndarray, target_pz: np.ndarray, ref_px: np.ndarray, ref_keep: np.ndarray, ref_pz: np.ndarray
    ) -> np.ndarray:
        return rmia_scores(target_px, target_pz, ref_px, ref_keep, ref_pz, self.online, self.gamma, self.offline_a)

    def leave_one_out(self, keep: np.ndarray, px: np.ndarray, pz: np.ndarray) -> np.ndarray:
        """Scores [K, N]: model t the target, every other model a reference (sums over all models less t's own)."""
        px, k, pz = _as_pool(px, keep, pz)
        n_models = px.shape[0]
        if n_models < 2:
            raise FlatprivError(f"leave-one-out needs at least 2 pool models, got {n_models}")
        s_in, s_out = (px * k).sum(0), (px * ~k).sum(0)
        n_in, n_out, s_z = k.sum(0), (~k).sum(0), pz.sum(0)
        scores = np.empty_like(px)
        for t in range(n_models):
            kt = k[t]
            big_px = _denominator(
                s_in - px[t] * kt, n_in - kt, s_out - px[t] * ~kt, n_out - ~kt, online=self.online, a=self.offline_a
            )
            scores[t] = _score(px[t], big_px, pz[t], (s_z - pz[t]) / (n_models - 1), self.gamma)
        return scores


def choose_offline_a(
    keep: np.ndarray, px: np.ndarray, pz: np.ndarray, gamma: float = 2.0, tune_model: int = 0, grid: int = 11
) -> float:
    """Privacy Meter's way of choosing a: attack one reference model (``tune_model``) with the others as its
    references for each a on a grid of ``grid`` values in [0, 1], and keep the a with the highest AUC.

    In a pool evaluated leave-one-out, ``tune_model`` is later a target too, so its own membership labels were
    seen once when a was chosen (one model of K)."""
    from .metrics import auc

    px, k, pz = _as_pool(px, keep, pz)
    if not 0 <= tune_model < px.shape[0] or px.shape[0] < 2:
        raise FlatprivError(f"tune_model {tune_model} must index one of the {px.shape[0]} (>= 2) models")
    others = np.arange(px.shape[0]) != tune_model
    best, best_auc = 0.0, -np.inf
    for a in np.linspace(0.0, 1.0, grid):
        s = rmia_scores(px[tune_model], pz[tune_model], px[others], k[others], pz[others], False, gamma, float(a))
        value = auc(s, k[tune_model]) if np.isfinite(s).any() else -np.inf
        if value > best_auc:
            best, best_auc = float(a), value
    return best
