"""The clipped-gradient oracle of DP-SGD (Abadi et al. 2016), science.md §2.1:

    Σ_{i∈B} clip_C(∇ℓ_i(w)),   clip_C(v) = v · min(1, C/(‖v‖₂ + 1e-6)),

with ℓ_i the cross-entropy of example i and ‖·‖₂ the global norm over ALL parameters of the tree. Adding or
removing one example moves the sum by at most C in L2 norm: the oracle carries ``sensitivity = C`` (2C under
replace-one neighbours, which the accountant handles).

Same calling convention as :func:`flatpriv.step.oracles.mean_grad`: ``oracle(params, x, y)`` evaluates the model with
``torch.func.functional_call`` at whatever tree it is given (DP-SAT passes w + ε), never mutating the model.

Two interchangeable methods (identical results up to float rounding):

* ``"ghost"`` (:mod:`flatpriv.privacy.ghost`): ghost norms / book-keeping (Li et al. 2022; Bu et al. 2023), one forward
  and one backward, per-example norms from layer inputs and output gradients, the clipped sum as one weighted
  matmul per layer. Needs every parameter in a supported layer (:func:`supports_ghost`).
* ``"vmap"``: ``torch.func.vmap(torch.func.grad_and_value(ℓ))`` over single examples, materialising every
  per-example gradient. Works for any per-example-independent model (no BatchNorm); memory B × #params, so the
  batch is processed in chunks.

``"auto"`` picks ghost when :func:`supports_ghost`, else vmap; if the ghost path detects at run time something it
cannot account for (an in-place op on a layer's output, a parameter used outside its module's forward) it
switches to vmap for good and ``method`` says so.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad_and_value, vmap

from ..errors import FlatprivError
from ..tree import Evaluator, Tree
from .ghost import GhostUnsupported, ghost_layers, ghost_norms, supports_ghost, unsupported_parts

__all__ = ["ClipInfo", "ClippedOracle", "FlatprivWarning", "clip_factor", "clipped_grad", "supports_ghost"]

METHODS = ("auto", "ghost", "vmap")
_VMAP_MAX_ELEMENTS = 2**26  # per-example gradient elements (B_chunk × #params) materialised at once
_STABILITY = 1e-6  # the +1e-6 in min(1, C/(‖g‖ + 1e-6))


@dataclass
class ClipInfo:
    """What one oracle call saw besides the gradient; tensors are 0-d / [B] and detached (no host sync)."""

    loss: torch.Tensor  # mean per-example loss (0-d); 0 for an empty batch
    batch_size: int
    norms: torch.Tensor | None  # per-example gradient norms ‖∇ℓ_i‖ before clipping [B], when return_norms
    all_norms: torch.Tensor  # the same norms, always (a reference, no copy)
    clip_norm: float

    @property
    def clipped_fraction(self) -> torch.Tensor:
        """Fraction of examples with ‖∇ℓ_i‖ > C (0-d; 0 for an empty batch), computed when asked for: a training
        step never reads it, and its three kernels were part of DP-SGD's overhead (docs/benchmarks.md)."""
        if self.all_norms.numel() == 0:
            return torch.zeros((), dtype=self.all_norms.dtype, device=self.all_norms.device)
        return (self.all_norms > self.clip_norm).to(self.all_norms.dtype).mean()


class ClippedOracle(Protocol):
    sensitivity: float  # = clip_norm: L2 sensitivity of the sum under add/remove-one neighbours
    method: str  # "ghost" or "vmap"

    def __call__(
        self, params: Tree, x: torch.Tensor, y: torch.Tensor, return_norms: bool = False
    ) -> tuple[Tree, ClipInfo]: ...


def clip_factor(norms: torch.Tensor, clip_norm: float) -> torch.Tensor:
    """min(1, C/(‖∇ℓ_i‖ + 1e-6)) per example: the one clip factor of single runs and pools (C = inf gives 1)."""
    return (clip_norm / (norms + _STABILITY)).clamp(max=1.0)


Chunk = tuple[torch.Tensor, Callable[[torch.Tensor], Tree], torch.Tensor]  # (‖∇ℓ_i‖², c ↦ Σ c_i ∇ℓ_i, Σ ℓ_i)


def _vmap_chunk(model: nn.Module, params: Tree, x: torch.Tensor, y: torch.Tensor, copies: int = 1) -> Chunk:
    """Per-example gradients by vmap(grad) over examples, each evaluated as a batch of one; with ``copies`` K > 1
    example i is x[i] of shape [K, ...] and its gradient is ∇ (1/K) Σ_k ℓ(x_ik, y_i), the mean over its copies."""

    def loss_one(p: Tree, xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        if copies > 1:
            return F.cross_entropy(functional_call(model, p, (xi,)), yi.expand(copies))
        return F.cross_entropy(functional_call(model, p, (xi.unsqueeze(0),)), yi.unsqueeze(0))

    detached = {k: v.detach() for k, v in params.items()}
    try:
        with torch.enable_grad():
            grads, losses = vmap(grad_and_value(loss_one), in_dims=(None, 0, 0))(detached, x, y)
    except torch.OutOfMemoryError:
        raise
    except RuntimeError as e:  # a kernel without a batching rule that its fallback cannot run either
        first = (str(e).strip().splitlines() or [""])[0][:200]
        suspects = ", ".join(unsupported_parts(model)[:4]) or "a layer"
        raise FlatprivError(
            f"per-example gradients by torch.func.vmap failed on this model ({type(e).__name__}: {first}); "
            f"layers without a ghost rule here: {suspects}"
        ) from e
    batch = x.shape[0]
    flat = {k: g.reshape(batch, -1) for k, g in grads.items()}
    sq = torch.stack([g.square().sum(1) for g in flat.values()]).sum(0)

    def clipped_sum(c: torch.Tensor) -> Tree:
        return {k: (c @ g).view(params[k].shape) for k, g in flat.items()}

    return sq, clipped_sum, losses.detach().sum()


class FlatprivWarning(UserWarning):
    """A choice flatpriv made for the user (a slower but exact path); the CLI prints it as one line."""


_TYING_RTOL = 1e-3  # float32 ghost and autograd sums agree to ~1e-6; a missed parameter use is off by ≳ 0.1


def _check_every_use(model: nn.Module, params: Tree, x: torch.Tensor, y: torch.Tensor, clipped_sum: Any) -> None:
    """Raise GhostUnsupported unless the ghost path's unclipped sum (every c_i = 1) equals autograd's gradient of
    Σ_i ℓ_i: a parameter also used outside its layer's hooked call (weight tying such as F.linear(h, emb.weight),
    or a layer's ``.forward()`` called directly) reaches the loss unseen by the hooks, and its gradient would be
    silently wrong. One extra backward, once per oracle; a model whose uses change from batch to batch is not
    covered by a check on one batch."""
    leaves = {k: v.detach().requires_grad_(True) for k, v in params.items()}
    with torch.enable_grad():
        loss = F.cross_entropy(functional_call(model, leaves, (x,)), y, reduction="sum")
        ref = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
    ghost = clipped_sum(torch.ones(x.shape[0], dtype=loss.dtype, device=loss.device))
    ref = [torch.zeros_like(v) if r is None else r for v, r in zip(leaves.values(), ref)]
    # A gradient that is zero in exact arithmetic (a conv bias before GroupNorm) is round-off in both sums: judge
    # each parameter relative to itself, but only above round-off of the whole gradient.
    floor = 1e-6 * float(torch.stack([r.norm() for r in ref]).norm()) if ref else 0.0
    for name, r in zip(leaves, ref):
        err = float((ghost[name] - r).norm())
        if err > max(_TYING_RTOL * max(float(r.norm()), float(ghost[name].norm())), floor, 1e-30):
            raise GhostUnsupported(
                f"parameter {name!r} is also used outside its layer's call (weight tying, or .forward() called "
                f"directly): the ghost gradient is off by {err / max(float(r.norm()), 1e-12):.2g} relative"
            )


class _Clipped:
    """Callable oracle; see the module docstring and :func:`clipped_grad`."""

    def __init__(self, model: nn.Module, clip_norm: float, method: str, copies: int = 1) -> None:
        if method not in METHODS:
            raise ValueError(f"method={method!r}; valid: {', '.join(METHODS)}")
        if not (clip_norm > 0):  # also refuses NaN
            raise ValueError(f"clip_norm={clip_norm} must be > 0 (math.inf for no clipping)")
        if copies > 1 and method == "ghost":
            raise ValueError("augmentation multiplicity averages each example's copies before clipping: use vmap")
        self.copies = int(copies)
        # Ghost norms see rows, not groups of rows: the mean of K copies' gradients takes the vmap path.
        ghost_ok = supports_ghost(model) and copies == 1
        if method == "ghost" and not ghost_ok:
            raise ValueError(
                "method='ghost' needs every parameter in a supported layer (Linear, Conv1d/Conv2d with groups=1, "
                "GroupNorm, Embedding) and no shared parameters; use method='vmap' or 'auto'"
            )
        self.model = model
        self.sensitivity = float(clip_norm)
        self.method = "ghost" if method == "ghost" or (method == "auto" and ghost_ok) else "vmap"
        if method == "auto" and not ghost_ok and copies == 1:
            warnings.warn(
                f"ghost clipping does not cover {', '.join(unsupported_parts(model)[:4])}: per-example gradients "
                "by vmap for the whole model (exact, slower)",
                FlatprivWarning,
                stacklevel=3,
            )
        self._auto = method == "auto"
        self._layers = ghost_layers(model) if self.method == "ghost" else []
        self._own = dict(model.named_parameters())
        self._call = Evaluator(model)
        self._verified = False  # the ghost sum is checked against autograd once, on the first batch

    def __repr__(self) -> str:
        return f"clipped_grad(clip_norm={self.sensitivity}, method={self.method!r})"

    def _chunks(self, params: Tree, x: torch.Tensor, y: torch.Tensor) -> list[Chunk]:
        if self.method == "ghost":
            if params.keys() != self._own.keys():
                raise ValueError("method='ghost' needs a params tree holding exactly the model's named_parameters()")
            try:
                own = all(params.get(k) is v for k, v in self._own.items())
                chunk = ghost_norms(self.model, self._layers, params, x, y, own, self._call)
                if not self._verified:
                    _check_every_use(self.model, params, x, y, chunk[1])
                    self._verified = True
                return [chunk]
            except GhostUnsupported as err:
                if not self._auto:
                    raise ValueError(f"method='ghost' cannot handle this model: {err}; use method='vmap'") from err
                warnings.warn(
                    f"ghost clipping cannot handle this model ({err}): using per-example gradients (vmap)",
                    FlatprivWarning,
                    stacklevel=3,
                )
                self.method = "vmap"  # auto: fall back for good
        numel = max(1, sum(v.numel() for v in params.values()))
        step = max(1, _VMAP_MAX_ELEMENTS // numel)
        step = max(1, step // self.copies)
        return [
            _vmap_chunk(self.model, params, x[i : i + step], y[i : i + step], self.copies)
            for i in range(0, len(x), step)
        ]

    def __call__(
        self, params: Tree, x: torch.Tensor, y: torch.Tensor, return_norms: bool = False
    ) -> tuple[Tree, ClipInfo]:
        """Σ_i clip_C(∇ℓ_i(params)) and a :class:`ClipInfo`; an empty batch gives a zero tree and loss 0."""
        batch = int(x.shape[0])
        if batch == 0:
            ref = next(iter(params.values()), None)
            ref = torch.zeros(()) if ref is None else ref
            zero = torch.zeros((), dtype=ref.dtype, device=ref.device)
            norms = torch.zeros(0, dtype=ref.dtype, device=ref.device) if return_norms else None
            empty = torch.zeros(0, dtype=ref.dtype, device=ref.device)
            info = ClipInfo(zero, 0, norms, empty, self.sensitivity)
            return {k: torch.zeros_like(v) for k, v in params.items()}, info
        total: Tree | None = None
        loss: torch.Tensor | None = None
        all_norms = []
        for sq, clipped_sum, loss_sum in self._chunks(params, x, y):
            norm = sq.sqrt()
            factor = clip_factor(norm, self.sensitivity)
            part = clipped_sum(factor)
            total = part if total is None else {k: total[k] + part[k] for k in total}
            all_norms.append(norm)
            loss = loss_sum if loss is None else loss + loss_sum
        assert total is not None and loss is not None
        norms = torch.cat(all_norms) if len(all_norms) > 1 else all_norms[0]
        info = ClipInfo(
            loss=loss / batch,
            batch_size=batch,
            norms=norms if return_norms else None,
            all_norms=norms,
            clip_norm=self.sensitivity,
        )
        return total, info


def clipped_grad(model: nn.Module, clip_norm: float, method: str = "auto", copies: int = 1) -> ClippedOracle:
    """The DP-SGD oracle ``(params, x, y, return_norms=False) -> (Σ_i clip_C(∇ℓ_i), ClipInfo)``.

    ``copies`` K > 1 is augmentation multiplicity (De et al. 2022): x is [B, K, ...], K augmented copies of each
    example, and ℓ_i is the mean loss over example i's copies, so each clipped ∇ℓ_i = clip_C((1/K) Σ_k ∇ℓ(x_ik))
    still has norm ≤ C and the sensitivity stays C (per-example gradients by vmap).

    ``clip_norm`` is C (``math.inf``: the plain sum of per-example gradients, B × the mean gradient); ``method`` is
    "auto" (ghost when :func:`supports_ghost`, else vmap), "ghost" (ValueError on an unsupported model) or "vmap".
    The returned oracle has ``sensitivity == clip_norm`` and ``method`` set to what was used.

    >>> model = torch.nn.Linear(1, 2, bias=False)
    >>> oracle = clipped_grad(model, clip_norm=0.1)
    >>> s, info = oracle(dict(model.named_parameters()), torch.full((3, 1), 100.0), torch.tensor([0, 1, 0]))
    >>> oracle.sensitivity, bool(s["weight"].norm() <= 3 * 0.1 + 1e-6), oracle.method  # each ‖clip_C(∇ℓ_i)‖ ≤ C
    (0.1, True, 'ghost')
    """
    return _Clipped(model, clip_norm, method, copies)
