"""Input loss curvature as a per-example memorization score (Garg et al. 2024; Ravikumar et al., ICML 2024).

The score of an example (x, y) is the curvature of the loss ℓ(x) = CE(f(x), y) with respect to the *input* x,
estimated with Hutchinson's trick and Rademacher probes r ∈ {±1}^D (D = numel of one example):

finite differences (``method="finite_difference"``, the authors' method, the default)::

    δ_k = ∇_x ℓ(x + h r_k) − ∇_x ℓ(x)          ≈ h · H r_k,   k = 1..n
    'norm'    : (1/n) Σ_k ‖δ_k‖₂               # what the authors' released code computes
    'squared' : (1/n) Σ_k ‖δ_k‖₂² / h²         # the paper's equation, E = tr(H²)
    'trace'   : (1/n) Σ_k <r_k, δ_k> / h       # Hutchinson, E = tr(H)

exact Hessian-vector products (``method="hvp"``, double backprop, same probes)::

    'norm'    : (1/n) Σ_k ‖H r_k‖₂ · h         # times h, on the same scale as the FD 'norm'
    'squared' : (1/n) Σ_k ‖H r_k‖₂²
    'trace'   : (1/n) Σ_k <r_k, H r_k>

The loss is summed over the batch (``reduction='sum'``): examples do not interact in eval mode, so the input
gradient of the summed loss is, row by row, each example's own gradient, whatever the batch size.

Vectorisation: for a chunk of B examples the n probes are stacked along the batch axis, so one forward and one
backward pass over (n + 1)·B rows (the unperturbed rows included, FD) or n·B rows (HVP, one double backward)
score the whole chunk. On a 2-core CPU this is faster than a loop over probes (larger matmuls, fewer passes);
the price is memory: a pass holds (n + 1)·``batch_size`` rows of activations.

Probes are drawn example-major (shape [B, n, ...]) from ``generator`` with ``torch.randint``, whose CPU stream is
serial, so for a seeded generator the probes of an example, hence its score, do not depend on ``batch_size``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["VARIANTS", "METHODS", "AGGREGATIONS", "input_curvature", "input_curvatures", "aggregate"]

VARIANTS = ("norm", "squared", "trace")
METHODS = ("finite_difference", "hvp")
AGGREGATIONS = ("mean", "max", "sum")

LossFn = Callable[[Tensor, Tensor], Tensor]


def _cross_entropy_sum(logits: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(logits, y, reduction="sum")


def _input_grad(model: Callable[[Tensor], Tensor], loss_fn: LossFn, x: Tensor, y: Tensor, create_graph: bool) -> Tensor:
    """∇_x Σ_i ℓ(x_i, y_i): row i is example i's own input gradient (a non-scalar loss is summed)."""
    x = x.detach().requires_grad_(True)
    loss = loss_fn(model(x), y)
    (g,) = torch.autograd.grad(loss.sum(), x, create_graph=create_graph)
    return g if create_graph else g.detach()


def _probes(n: int, n_probes: int, shape: Sequence[int], generator: torch.Generator | None, like: Tensor) -> Tensor:
    """Rademacher probes [n_probes, n, *shape] in ``like``'s dtype/device, drawn example-major (chunk-invariant)."""
    device = generator.device if generator is not None else torch.device("cpu")
    bits = torch.randint(0, 2, (n, n_probes, *shape), generator=generator, dtype=torch.int8, device=device)
    r = bits.to(device=like.device, dtype=like.dtype).mul_(2).sub_(1)
    return r.transpose(0, 1)


def _chunk_scores(
    model: Callable[[Tensor], Tensor],
    loss_fn: LossFn,
    x: Tensor,
    y: Tensor,
    r: Tensor,
    h: float,
    variants: Sequence[str],
    method: str,
) -> dict[str, Tensor]:
    """Scores of one chunk for each variant, from the same probes; ``r`` is [P, B, *x.shape[1:]] -> {variant: [B]}."""
    p, b = r.shape[0], r.shape[1]
    y_rep = y.repeat(p, *([1] * (y.dim() - 1)))
    if method == "finite_difference":
        # One pass over [x; x + h r_1; ...; x + h r_P]: (P + 1)·B rows.
        xs = torch.cat([x, (x.unsqueeze(0) + h * r).flatten(0, 1)])
        g = _input_grad(model, loss_fn, xs, torch.cat([y, y_rep]), create_graph=False).reshape(p + 1, b, -1)
        hr = g[1:] - g[:1]  # δ_k ≈ h H r_k
        scale_norm, scale_sq, scale_tr = 1.0, 1.0 / h**2, 1.0 / h
    else:
        # One double backward over P·B rows: H r_k = ∇_x <∇_x ℓ(x), r_k> (rows independent).
        xs = x.unsqueeze(0).expand(p, *x.shape).flatten(0, 1).detach().requires_grad_(True)
        with torch.enable_grad():
            loss = loss_fn(model(xs), y_rep)
            (g,) = torch.autograd.grad(loss.sum(), xs, create_graph=True)
            (hv,) = torch.autograd.grad(g, xs, grad_outputs=r.flatten(0, 1))
        hr = hv.detach().reshape(p, b, -1)
        scale_norm, scale_sq, scale_tr = h, 1.0, 1.0
    reduce = {
        "norm": lambda: hr.norm(dim=2) * scale_norm,
        "squared": lambda: hr.square().sum(dim=2) * scale_sq,
        "trace": lambda: (r.reshape(p, b, -1) * hr).sum(dim=2) * scale_tr,
    }
    return {v: reduce[v]().mean(dim=0) for v in variants}


def input_curvature(
    model: Callable[[Tensor], Tensor],
    x: Tensor,
    y: Tensor,
    *,
    n_probes: int = 10,
    h: float = 1e-3,
    variant: str = "norm",
    method: str = "finite_difference",
    batch_size: int = 256,
    generator: torch.Generator | None = None,
    loss_fn: LossFn | None = None,
    progress: Callable[[int], Any] | None = None,
) -> Tensor:
    """Per-example input loss curvature (see the module docstring for the estimators).

    Args:
        model: an ``nn.Module`` (put in eval mode while scoring, every submodule's mode restored afterwards)
            or any callable ``f(x) -> logits``. Examples must not interact (no batch statistics).
        x: inputs [N, ...], computed on in their own dtype and device (cast the model accordingly).
        y: targets [N] (class indices for the default loss).
        n_probes: Rademacher probes per example (the authors use 10).
        h: finite-difference step (the authors use 1e-3); for ``method="hvp"`` it only scales 'norm'.
        variant: 'norm' (default, the released code), 'squared' (≈ tr(H²)) or 'trace' (≈ tr(H)).
        method: 'finite_difference' (default) or 'hvp' (exact Hessian-vector products by double backprop).
        batch_size: examples per chunk; one pass holds (n_probes + 1)·batch_size rows.
        generator: source of the probes (the default CPU generator when None).
        loss_fn: ``loss_fn(outputs, y)``, a scalar or per-example losses (summed); default cross-entropy sum.
        progress: called with the number of examples of each chunk once it is scored (a progress bar's update).

    Returns:
        [N] float32 scores on the CPU.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown curvature variant {variant!r}; expected one of {VARIANTS}")
    return input_curvatures(
        model,
        x,
        y,
        variants=(variant,),
        n_probes=n_probes,
        h=h,
        method=method,
        batch_size=batch_size,
        generator=generator,
        loss_fn=loss_fn,
        progress=progress,
    )[variant]


def input_curvatures(
    model: Callable[[Tensor], Tensor],
    x: Tensor,
    y: Tensor,
    *,
    variants: Sequence[str] = VARIANTS,
    n_probes: int = 10,
    h: float = 1e-3,
    method: str = "finite_difference",
    batch_size: int = 256,
    generator: torch.Generator | None = None,
    loss_fn: LossFn | None = None,
    progress: Callable[[int], Any] | None = None,
) -> dict[str, Tensor]:
    """:func:`input_curvature` for several variants at the cost of one: every variant reduces the same probes'
    δ_k (so each equals what :func:`input_curvature` gives with the same generator state). -> {variant: [N]}."""
    bad = [v for v in variants if v not in VARIANTS]
    if bad or not variants:
        raise ValueError(f"unknown curvature variant {bad or variants!r}; expected some of {VARIANTS}")
    if method not in METHODS:
        raise ValueError(f"unknown curvature method {method!r}; expected one of {METHODS}")
    if n_probes < 1:
        raise ValueError(f"n_probes must be >= 1, got {n_probes}")
    if not h > 0:
        raise ValueError(f"h must be > 0, got {h}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y disagree on the number of examples: {x.shape[0]} vs {y.shape[0]}")
    loss_fn = _cross_entropy_sum if loss_fn is None else loss_fn
    y = y.to(x.device)
    modes = [(m, m.training) for m in model.modules()] if isinstance(model, nn.Module) else []
    if isinstance(model, nn.Module):
        model.eval()
    out = {v: torch.empty(x.shape[0], dtype=torch.float32) for v in variants}
    try:
        with torch.enable_grad():
            for start in range(0, x.shape[0], batch_size):
                xb, yb = x[start : start + batch_size].detach(), y[start : start + batch_size]
                r = _probes(xb.shape[0], n_probes, xb.shape[1:], generator, xb)
                scores = _chunk_scores(model, loss_fn, xb, yb, r, h, variants, method)
                for v, sc in scores.items():
                    out[v][start : start + xb.shape[0]] = sc.detach().float().cpu()
                if progress is not None:
                    progress(xb.shape[0])
    finally:
        for m, training in modes:
            m.training = training
    return out


def aggregate(scores: Sequence[Tensor] | Tensor, how: str = "mean", mask: Tensor | None = None) -> Tensor:
    """Combine K score vectors [N] (checkpoints of one run, or models of a pool) into one [N] vector.

    ``how``: 'mean' or 'sum' over checkpoints (the paper averages over training: end-of-training curvature falls
    while overfitting), or 'max' over pool models (the authors' code). ``mask`` [K, N] bool keeps, per example,
    only the models that had it IN; an example that no model counts gets NaN.
    """
    if how not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {how!r}; expected one of {AGGREGATIONS}")
    s = scores if isinstance(scores, Tensor) else torch.stack([torch.as_tensor(t) for t in scores])
    s = s.float().reshape(1, -1) if s.dim() == 1 else s.float()
    if s.dim() != 2:
        raise ValueError(f"scores must be [K, N] or a list of [N] tensors, got shape {tuple(s.shape)}")
    if mask is None:
        mask = torch.ones_like(s, dtype=torch.bool)
    mask = torch.as_tensor(mask, dtype=torch.bool, device=s.device)
    if mask.shape != s.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match scores shape {tuple(s.shape)}")
    count = mask.sum(dim=0)
    if how == "max":
        out = s.masked_fill(~mask, float("-inf")).amax(dim=0)
    else:
        out = s.masked_fill(~mask, 0.0).sum(dim=0)
        if how == "mean":
            out = out / count.clamp(min=1)
    return out.masked_fill(count == 0, float("nan"))
