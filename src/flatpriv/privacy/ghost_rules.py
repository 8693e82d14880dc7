"""Ghost-clipping rules, one per supported layer type (:mod:`flatpriv.privacy.ghost` runs them).

A rule takes a module and its calls' (input a, output gradient g) and returns the per-example squared gradient
norms ‖∇_θ ℓ_i‖² of the module's parameters [B] and ``finish``: clip factors c [B] -> Σ_i c_i ∇_θ ℓ_i. The
formulas (ghost norm, materialised G_i, GroupNorm, Embedding) are in :mod:`flatpriv.privacy.ghost`'s docstring.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

Finish = Callable[[torch.Tensor], dict[str, torch.Tensor]]  # factors c [B] -> clipped sums of one layer
Calls = list[tuple[torch.Tensor, torch.Tensor]]  # (layer input a, output gradient g) per call of the module
Rule = Callable[[nn.Module, Calls, int], tuple[torch.Tensor, Finish]]
_MAX_MATERIALISED = 2**25  # elements of the stacked per-example weight gradients [B, O, K] kept in memory


def _ghost_cheaper(batch: int, ghost_flops: int, materialised_flops: int, size: int) -> bool:
    """Per example: the ghost norm's flops versus materialising G_i (its flops, and ``size`` = O·K numbers each)."""
    return ghost_flops < materialised_flops or batch * size > _MAX_MATERIALISED


def _rows(a: torch.Tensor, g: torch.Tensor, bias: bool) -> tuple[torch.Tensor, Finish]:
    """Linear layer on one row per example: a [B, K], g [B, O]. ‖G_i‖² = ‖a_i‖²‖g_i‖², and the bias adds ‖g_i‖²."""
    k, o = a.shape[1], g.shape[1]
    # one fused kernel per norm (vector_norm), not a squared copy and a sum: profiled, docs/benchmarks.md
    gg = torch.linalg.vector_norm(g, dim=1).square()
    aa = torch.linalg.vector_norm(a, dim=1).square()
    sq = gg * (aa + 1.0) if bias else gg * aa

    def finish(c: torch.Tensor) -> dict[str, torch.Tensor]:
        # c scales the narrower side of the product (a layer's input or its output gradient)
        w = g.T @ (a * c[:, None]) if k <= o else (g * c[:, None]).T @ a
        return {"weight": w, "bias": c @ g} if bias else {"weight": w}

    return sq, finish


def _tokens(a: torch.Tensor, g: torch.Tensor, bias: bool) -> tuple[torch.Tensor, Finish]:
    """Linear-type layer in token form: a [B, T, K], g [B, T, O] -> (‖∇_W ℓ_i‖² (+ ‖∇_b ℓ_i‖²), finish)."""
    batch, t, k = a.shape
    o = g.shape[-1]
    if t == 1:
        return _rows(a[:, 0], g[:, 0], bias)
    if _ghost_cheaper(batch, t * t * (k + o), t * k * o, k * o):  # the T×T Grams of a and g
        sq = (torch.bmm(a, a.mT) * torch.bmm(g, g.mT)).sum((1, 2))

        def weight(c: torch.Tensor) -> torch.Tensor:
            return (g * c[:, None, None]).reshape(-1, o).T @ a.reshape(-1, k)

    else:
        # G_i, flattened, with the wider of O and K last: CPU bmm of [T, 5]ᵀ @ [T, 32] runs 3× faster than the
        # [T, 32]ᵀ @ [T, 5] of the same product (a conv on one input channel; docs/benchmarks.md)
        wide_out = o >= k
        per_example = (torch.bmm(a.mT, g) if wide_out else torch.bmm(g.mT, a)).reshape(batch, o * k)
        sq = torch.linalg.vector_norm(per_example, dim=1).square()

        def weight(c: torch.Tensor) -> torch.Tensor:
            return (c @ per_example).view(k, o).T.contiguous() if wide_out else (c @ per_example).view(o, k)

    gb = g.sum(1) if bias else None
    if gb is not None:
        sq = sq + gb.square().sum(1)

    def finish(c: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {"weight": weight(c)}
        if gb is not None:
            out["bias"] = c @ gb
        return out

    return sq, finish


def _cat_tokens(parts: Calls) -> tuple[torch.Tensor, torch.Tensor]:
    if len(parts) == 1:
        return parts[0]
    return torch.cat([p[0] for p in parts], 1), torch.cat([p[1] for p in parts], 1)


def _linear(m: nn.Module, calls: Calls, batch: int) -> tuple[torch.Tensor, Finish]:
    """nn.Linear on [B, ..., K]: every leading position after the batch dim is a token."""
    if len(calls) == 1 and calls[0][0].dim() == 2:  # an MLP's layer, called once: no token views (fewer ops)
        return _rows(*calls[0], bias=m.bias is not None)
    parts = [(a.reshape(batch, -1, a.shape[-1]), g.reshape(batch, -1, g.shape[-1])) for a, g in calls]
    return _tokens(*_cat_tokens(parts), bias=m.bias is not None)


def _padded(m: nn.Module, a: torch.Tensor) -> torch.Tensor:
    """A conv's input after its own padding (any padding mode), so the conv itself runs with padding 0."""
    pad = m._reversed_padding_repeated_twice  # set by _ConvNd for int, tuple and "same"/"valid" padding
    if any(pad):
        a = F.pad(a, pad, mode="constant" if m.padding_mode == "zeros" else m.padding_mode)
    return a


def _patches(m: nn.Module, a: torch.Tensor) -> torch.Tensor:
    """Padded conv input [B, C, *spatial] -> patches [B, L, C·Πk] in the order of ``weight.view(O, -1)`` (im2col).

    Built from ``Tensor.unfold`` views (stride, dilation), so one copy in all.
    """
    n = len(m.kernel_size)
    for d, (k, s, dil) in enumerate(zip(m.kernel_size, m.stride, m.dilation)):
        a = a.unfold(2 + d, dil * (k - 1) + 1, s)  # appends the window as a trailing dim
        if dil > 1:
            a = a[..., ::dil]
    a = a.permute(0, *range(2, 2 + n), 1, *range(2 + n, 2 + 2 * n))  # [B, *out_spatial, C, *kernel]
    return a.reshape(a.shape[0], math.prod(a.shape[1 : 1 + n]), -1).contiguous()  # bmm wants dense batches


def _conv_weight(m: nn.Module, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Σ_i of the weight gradients for padded inputs ``a`` and output gradients ``g``: the conv's own backward
    kernel (no im2col copy), asked for the weight gradient only."""
    n = len(m.kernel_size)
    weight = g.new_empty(1).expand(m.weight.shape)  # only its shape is read
    mask = (False, True, False)
    return torch.ops.aten.convolution_backward(
        g, a, weight, None, m.stride, [0] * n, m.dilation, False, [0] * n, 1, mask
    )[1]


def _conv1d_gram(m: nn.Module, a: torch.Tensor, t: int) -> torch.Tensor:
    """Patch Gram [B, T, T] of a 1-D conv from its padded input a [B, C, L'] without unfolding it.

    With M = aᵀa [B, L', L'] (M_uv = Σ_c a_cu a_cv), patch t covering positions s·t + d·κ (κ < k):

        a_t · a_t' = Σ_κ M[s·t + d·κ, s·t' + d·κ],

    a sum along M's diagonals, read as one strided view [B, T, T, k].
    """
    s, d, k, lp = m.stride[0], m.dilation[0], m.kernel_size[0], a.shape[-1]
    gram = torch.bmm(a.mT, a)
    return gram.as_strided((a.shape[0], t, t, k), (lp * lp, s * lp, s, d * (lp + 1))).sum(-1)


def _conv(m: nn.Module, calls: Calls, batch: int) -> tuple[torch.Tensor, Finish]:
    """nn.Conv1d/2d/3d (groups = 1): a Linear over the L output positions of the input's patches.

    A 1-D conv called once, when the ghost norm is the cheaper side, takes its patch Gram from the padded input
    (:func:`_conv1d_gram`) and its clipped sum from the conv's weight-gradient kernel with output gradients
    c_i g_i: no im2col copy. Otherwise the input is unfolded into patches (:func:`_patches`).
    """
    padded = [(_padded(m, a), g.reshape(batch, g.shape[1], -1)) for a, g in calls]
    shape, bias = m.weight.shape, m.bias is not None
    if len(calls) == 1 and len(shape) == 3:
        a, g = padded[0]
        (c_in, lp), (o, t) = a.shape[1:], g.shape[1:]
        k = c_in * shape[-1]
        if batch * lp * lp <= _MAX_MATERIALISED and _ghost_cheaper(batch, lp * lp * c_in + t * t * o, t * k * o, k * o):
            sq = (_conv1d_gram(m, a, t) * torch.bmm(g.mT, g)).sum((1, 2))
            gb = g.sum(2) if bias else None
            if gb is not None:
                sq = sq + gb.square().sum(1)

            def finish1d(c: torch.Tensor) -> dict[str, torch.Tensor]:
                out = {"weight": _conv_weight(m, a, g * c[:, None, None])}
                if gb is not None:
                    out["bias"] = c @ gb
                return out

            return sq, finish1d
    parts = [(_patches(m, a), g.mT) for a, g in padded]
    sq, finish = _tokens(*_cat_tokens(parts), bias=bias)

    def finish_conv(c: torch.Tensor) -> dict[str, torch.Tensor]:
        out = finish(c)
        out["weight"] = out["weight"].view(shape)
        return out

    return sq, finish_conv


def _group_norm(m: nn.Module, calls: Calls, batch: int) -> tuple[torch.Tensor, Finish]:
    """nn.GroupNorm (affine): ∇_γ ℓ_i = Σ_positions g·x̂ and ∇_β ℓ_i = Σ_positions g, per channel, materialised.

    x̂ from ``native_group_norm`` without the affine part (``F.group_norm``'s own kernel, without its wrapper) and
    no running ``sum()`` over a single call (it starts from 0, one more kernel per sum): the 1-D CNN's DP-SGD step
    0.08–0.23 ms faster than before in an in-step A/B, though timed alone the two are within 0.03 ms per layer
    (docs/benchmarks.md). ``vecdot`` is a product then a sum on a CPU, as before.
    """
    c = m.num_channels
    gws, gbs = [], []
    for a, g in calls:
        a, g = a.reshape(batch, c, -1), g.reshape(batch, c, -1)
        xhat = torch.native_group_norm(a, None, None, batch, c, a.shape[-1], m.num_groups, m.eps)[0]
        gws.append(torch.linalg.vecdot(g, xhat))
        gbs.append(g.sum(-1))
    gw, gb = (v[0] if len(v) == 1 else torch.stack(v).sum(0) for v in (gws, gbs))
    sq = gw.square().sum(1) + gb.square().sum(1)
    return sq, lambda c: {"weight": c @ gw, "bias": c @ gb}


def _embedding(m: nn.Module, calls: Calls, batch: int) -> tuple[torch.Tensor, Finish]:
    """nn.Embedding: ‖G_i‖² = Σ_{t,t'} [idx_t = idx_t'] g_t·g_t'; the clipped sum is an index_add of c_i g_t."""
    idx = torch.cat([a.reshape(batch, -1) for a, _ in calls], 1)
    g = torch.cat([g.reshape(batch, -1, m.embedding_dim) for _, g in calls], 1)
    if m.padding_idx is not None:  # the padding row never receives gradient
        g = g * (idx != m.padding_idx).unsqueeze(-1)
    sq = (torch.bmm(g, g.mT) * (idx[:, :, None] == idx[:, None, :])).sum((1, 2))

    def finish(c: torch.Tensor) -> dict[str, torch.Tensor]:
        rows = (g * c[:, None, None]).reshape(-1, m.embedding_dim)
        return {"weight": g.new_zeros(m.num_embeddings, m.embedding_dim).index_add_(0, idx.reshape(-1), rows)}

    return sq, finish


def rule_for(m: nn.Module) -> Rule | None:
    """The ghost rule for a parameter-owning module, or None when it is not supported (exact types only)."""
    t = type(m)
    if t is nn.Linear:
        return _linear
    if t in (nn.Conv1d, nn.Conv2d, nn.Conv3d) and m.groups == 1:
        return _conv
    if t is nn.GroupNorm and m.affine:
        return _group_norm
    if t is nn.Embedding and m.max_norm is None and not m.scale_grad_by_freq:
        return _embedding
    return None
