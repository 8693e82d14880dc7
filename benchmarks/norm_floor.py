"""Other ways to compute one layer's per-example squared gradient norms, for the floor under DP-SGD/SGD.

``privacy.ghost_rules`` picks one method per layer. To show what the norms cost at best with torch's kernels on a
machine, :func:`alternatives` gives every other method that computes the same ‖∇_θ ℓ_i‖² [B] from the layer's
recorded (input a, output gradient g); ``dp_parts.py`` times them next to the rule and takes, layer by layer, the
fastest (``norm_floor_ms``). The formulas (Li et al. 2022, "Large language models can be strong differentially
private learners", ghost norm; Rochette et al. 2019 for materialised per-example gradients):

- ghost norm of a 1-D convolution with patches P_i [T, C·k] and output gradients G_i [T, O]:
  ‖∇_W ℓ_i‖² = ⟨P_i P_iᵀ, G_i G_iᵀ⟩, with P_i P_iᵀ from the padded input's Gram (``gram_padded``, the rule's
  choice when it is the cheaper side) or from the unfolded patches (``gram_patches``);
- materialised: ∇_W ℓ_i = G_iᵀ P_i by one ``bmm``, then its norm (``materialised``);
- the bias adds ‖Σ_t G_i[t]‖² in every method;
- GroupNorm: ∇_γ ℓ_i = Σ_positions g·x̂ and ∇_β ℓ_i = Σ_positions g per channel; the rule takes x̂ from
  ``native_group_norm`` without the affine part and Σ g·x̂ from one ``vecdot``; ``product_sum`` is the rule
  before that (x̂ from ``F.group_norm``, then g·x̂ and a sum).

Each returns exactly what the rule's first output is, up to float rounding (``tests/test_bench_limits.py``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from flatpriv.privacy import ghost_rules as R


def _bias_sq(g: torch.Tensor, bias: bool) -> torch.Tensor | float:
    """‖∇_b ℓ_i‖² = ‖Σ_positions g_i‖² for g [B, O, T]."""
    return g.sum(2).square().sum(1) if bias else 0.0


def _conv1d(m: nn.Conv1d, a: torch.Tensor, g: torch.Tensor) -> dict[str, Callable[[], torch.Tensor]]:
    batch, bias = a.shape[0], m.bias is not None

    def gram_padded() -> torch.Tensor:
        ap, gg = R._padded(m, a), g.reshape(batch, g.shape[1], -1)
        return (R._conv1d_gram(m, ap, gg.shape[-1]) * torch.bmm(gg.mT, gg)).sum((1, 2)) + _bias_sq(gg, bias)

    def gram_patches() -> torch.Tensor:
        p, gg = R._patches(m, R._padded(m, a)), g.reshape(batch, g.shape[1], -1)
        gt = gg.mT
        return (torch.bmm(p, p.mT) * torch.bmm(gt, gt.mT)).sum((1, 2)) + _bias_sq(gg, bias)

    def materialised() -> torch.Tensor:
        p, gg = R._patches(m, R._padded(m, a)), g.reshape(batch, g.shape[1], -1)
        gt = gg.mT
        # the wider of O and C·k last, as the rule does it (the faster orientation of CPU bmm)
        per_example = torch.bmm(p.mT, gt) if gt.shape[-1] >= p.shape[-1] else torch.bmm(gg, p)
        return torch.linalg.vector_norm(per_example.reshape(batch, -1), dim=1).square() + _bias_sq(gg, bias)

    return {"gram_padded": gram_padded, "gram_patches": gram_patches, "materialised": materialised}


def _group_norm(m: nn.GroupNorm, a: torch.Tensor, g: torch.Tensor) -> dict[str, Callable[[], torch.Tensor]]:
    batch, c = a.shape[0], m.num_channels

    def product_sum() -> torch.Tensor:
        gw = (g * F.group_norm(a, m.num_groups, eps=m.eps)).reshape(batch, c, -1).sum(-1)
        return gw.square().sum(1) + g.reshape(batch, c, -1).sum(-1).square().sum(1)

    return {"product_sum": product_sum}


def alternatives(m: nn.Module, a: torch.Tensor, g: torch.Tensor) -> dict[str, Callable[[], torch.Tensor]]:
    """The other methods for a layer called once with input ``a`` and output gradient ``g`` (empty when there
    are none: a Linear on one token has a closed form, ‖a_i‖²‖g_i‖², that nothing beats)."""
    if type(m) is nn.Conv1d and m.groups == 1:
        return _conv1d(m, a, g)
    if type(m) is nn.GroupNorm and m.affine:
        return _group_norm(m, a, g)
    return {}
