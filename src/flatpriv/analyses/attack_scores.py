"""Membership scores of every attack on a pool: each model the target, the other models (or a chosen subset of them)
its references. The attacks themselves are array-only (:mod:`flatpriv.attacks`); this module only wires a pool's
arrays into them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..attacks.lira import LiRA, leave_one_out
from ..attacks.lira_variants import LiRARefFixed, LiRATwoSided
from ..attacks.rmia import RMIA, rmia_signal
from ..attacks.scores import logit_scaled_confidence, per_class_calibrate, per_class_leave_one_out, threshold_scores
from ..errors import FlatprivError

# name -> what it computes (every table names the variant)
VARIANTS = {
    "loss": "global threshold on -loss",
    "loss_per_class": "per-class threshold on -loss (standardised by the references' OUT scores)",
    "confidence": "global threshold on p_y",
    "confidence_per_class": "per-class threshold on p_y",
    "mentr": "global threshold on -modified entropy",
    "mentr_per_class": "per-class threshold on -modified entropy",
    "lira_online": "LiRA online, per-example sigma_in, sigma_out (paper)",
    "lira_online_fixed": "LiRA online, fixed variance as the paper describes it (one pooled sigma per side)",
    "lira_online_fixed_refcode": "LiRA online, fixed variance as the reference code has it (IN values' std for both)",
    "lira_offline": "LiRA offline, the paper's one-sided test log Phi((phi-mu_out)/sigma_out), per-example sigma",
    "lira_offline_fixed": "LiRA offline, the paper's one-sided test, one pooled sigma_out",
    "lira_offline_twosided": "LiRA offline, reference code's two-sided -log N(phi; mu_out, sigma_out), per-example std",
    "lira_offline_twosided_fixed": "LiRA offline, the reference code's two-sided statistic, std of all OUT values",
    "rmia_online": "RMIA online (gamma {gamma}, T {temperature})",
    "rmia_offline": "RMIA offline (gamma {gamma}, a {a}, T {temperature})",
}
ATTACKS = tuple(VARIANTS)
# Query augmentation (pools trained with augmentation keep logits on fixed views, flatpriv.data.augment): each
# attack fitted per view and its scores averaged over the views, as LiRA's reference code averages the per-view
# log-likelihood ratios (Carlini et al. 2022 §5); RMIA's per-view scores are averaged the same way.
QUERY_AUGMENTED = (
    "lira_online",
    "lira_online_fixed",
    "lira_offline",
    "lira_offline_fixed",
    "rmia_online",
    "rmia_offline",
)
AUG_SUFFIX = "_aug"
_LIRA = {
    "lira_online": LiRA(online=True, fixed_variance=False),
    "lira_online_fixed": LiRA(online=True, fixed_variance=True, min_shadows=1),  # no per-example σ to estimate
    "lira_online_fixed_refcode": LiRARefFixed(),
    "lira_offline": LiRA(online=False, fixed_variance=False),
    "lira_offline_fixed": LiRA(online=False, fixed_variance=True, min_shadows=1),
    "lira_offline_twosided": LiRATwoSided(fixed_variance=False),
    "lira_offline_twosided_fixed": LiRATwoSided(fixed_variance=True),
}


@dataclass(frozen=True)
class RmiaSettings:
    gamma: float = 2.0
    offline_a: float | str = 0.3  # "auto": chosen on a reference model (:func:`flatpriv.attacks.rmia.choose_offline_a`)
    temperature: float = 1.0


class PoolSignals:
    """A pool's per-model statistics, computed once: threshold scores, LiRA's φ, RMIA's p(x|θ) and p(z|θ)."""

    def __init__(self, pool: dict[str, Any], rmia: RmiaSettings) -> None:
        self.keep = np.asarray(pool["keep"], dtype=bool)
        self.labels = pool["train_labels"]
        logits = pool["train_logits"]
        self.threshold = {kind: threshold_scores(kind, logits, self.labels) for kind in ("loss", "confidence", "mentr")}
        self.phi = logit_scaled_confidence(logits, self.labels)
        self.px = rmia_signal(logits, self.labels, rmia.temperature)
        self.pz = rmia_signal(pool["test_logits"], pool["test_labels"], rmia.temperature)
        views, test_views = pool.get("train_logits_views"), pool.get("test_logits_views")
        self.views: list[PoolSignals] = []  # one per query view: the same signals on that view's logits
        if views is not None and test_views is not None:
            for v in range(views.shape[1]):
                one = {**pool, "train_logits": views[:, v], "test_logits": test_views[:, v]}
                self.views.append(PoolSignals({k: x for k, x in one.items() if not k.endswith("_views")}, rmia))
        a = float(rmia.offline_a)
        self.rmia = {
            "rmia_online": RMIA(online=True, gamma=rmia.gamma, offline_a=a),
            "rmia_offline": RMIA(online=False, gamma=rmia.gamma, offline_a=a),
        }
        self.settings = rmia

    def variant(self, attack: str) -> str:
        s = self.settings
        if attack.endswith(AUG_SUFFIX):
            base = self.variant(attack[: -len(AUG_SUFFIX)])
            return f"{base}, mean score over {len(self.views)} query views (the example, shifted, mirrored)"
        return VARIANTS[attack].format(gamma=s.gamma, a=s.offline_a, temperature=s.temperature)

    def _over_views(self, attack: str, score: Callable[[PoolSignals, str], np.ndarray]) -> np.ndarray:
        if not self.views:
            raise FlatprivError(f"{attack}: the pool has no query views (train it with augment.crop_padding/flip)")
        base = attack[: -len(AUG_SUFFIX)]
        return np.mean([score(v, base) for v in self.views], axis=0)

    def leave_one_out(self, attack: str) -> np.ndarray:
        """Scores [K, N]: every model the target, all the others its references."""
        if attack.endswith(AUG_SUFFIX):
            return self._over_views(attack, lambda v, a: v.leave_one_out(a))
        if attack in self.threshold:
            return self.threshold[attack]  # a global threshold needs no references
        if attack.endswith("_per_class"):
            return per_class_leave_one_out(self.keep, self.threshold[attack[: -len("_per_class")]], self.labels)[0]
        if attack in _LIRA:
            return leave_one_out(self.keep, self.phi, _LIRA[attack])[0]
        if attack in self.rmia:
            return self.rmia[attack].leave_one_out(self.keep, self.px, self.pz)
        raise FlatprivError(f"unknown attack {attack!r}")

    def with_references(self, attack: str, target: int, refs: Sequence[int] | np.ndarray) -> np.ndarray:
        """Scores [N] of model ``target`` with only the models ``refs`` as its references."""
        refs = np.asarray(refs, dtype=np.int64)
        if target in refs:
            raise FlatprivError("a target cannot be its own reference")
        if attack.endswith(AUG_SUFFIX):
            return self._over_views(attack, lambda v, a: v.with_references(a, target, refs))
        if attack in self.threshold:
            return self.threshold[attack][target]
        k = self.keep[refs]
        if attack.endswith("_per_class"):
            s = self.threshold[attack[: -len("_per_class")]]
            return per_class_calibrate(s[target], s[refs], k, self.labels)
        if attack in _LIRA:
            return _LIRA[attack](self.phi[target], self.phi[refs], k)
        if attack in self.rmia:
            return self.rmia[attack](self.px[target], self.pz[target], self.px[refs], k, self.pz[refs])
        raise FlatprivError(f"unknown attack {attack!r}")
