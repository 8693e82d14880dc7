"""Parameter-space sharpness of the training loss: the Hessian's largest eigenvalue and its trace.

L(θ) = (1/n) Σ_{i∈S} ℓ(f_θ(x_i), y_i) over a set S of n training examples (the full training set, or a fixed
subset), and H = ∇²L(θ), the Hessian with respect to every parameter of the model. H is never formed: both
measures only need Hessian-vector products, by double backpropagation (Pearlmutter's trick),

    H v = ∇_θ ⟨∇_θ L(θ), v⟩,

computed in evaluation batches B_1, …, B_m of S: with L_B the mean loss over B, L = Σ_j (|B_j|/n) L_{B_j}, so
H v = Σ_j (|B_j|/n) ∇²L_{B_j} v, the size-weighted mean of per-batch products (exact, whatever the batch size).

* λ_max = max eig ∇²L(θ), by power iteration: v_{k+1} = H v_k / ‖H v_k‖, with the Rayleigh quotient
  λ_k = v_kᵀ H v_k, stopped when |λ_k − λ_{k−1}| ≤ tol·|λ_k| or after ``iters`` products. Power iteration finds
  the eigenvalue of largest magnitude; when that one is negative (a saddle), it is run again on H − λ I, whose
  dominant eigenvalue is λ_max − λ, so the estimate is always the largest eigenvalue, not the largest in size.
* tr ∇²L = E_v[vᵀ ∇²L v] for v with i.i.d. Rademacher entries (P(±1) = ½), by Hutchinson's estimator: the mean
  of vᵀ H v over P probes, with its standard error sd/√P (its variance is 2 Σ_{i≠j} H_ij² per probe).

References: M. F. Hutchinson, "A stochastic estimator of the trace of the influence matrix for Laplacian
smoothing splines", Commun. Stat. Simul. Comput. 18(3), 1989; Z. Yao, A. Gholami, K. Keutzer, M. W. Mahoney,
"PyHessian: Neural networks through the lens of the Hessian", IEEE BigData 2020 (the same two estimators).

The model is evaluated with ``torch.func.functional_call`` on a detached copy of ``params`` (the model's own
weights by default), in eval mode (every submodule's mode restored afterwards), in ``dtype`` (float32 by default)
on the device of the parameters. Start vectors and probes come from a CPU generator seeded with ``seed``, drawn
one parameter after another in ``named_parameters`` order, so a result is deterministic given the seed, whatever
the device or the batch size.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from ..tree import Tree

__all__ = ["TopEigenvalue", "HessianTrace", "fixed_subset", "hessian_vector_product", "top_eigenvalue", "hessian_trace"]

LossFn = Callable[[Tensor, Tensor], Tensor]
Indices = Tensor | Sequence[int] | None
Progress = Callable[[], object] | None  # called after each batch's Hessian-vector product (a progress bar's update)


@dataclass(frozen=True)
class TopEigenvalue:
    """λ_max of the training-loss Hessian. ``dominant`` is the eigenvalue of largest magnitude that the first
    power iteration found (λ_max itself unless it was negative); ``iterations`` counts every product, both runs."""

    value: float
    iterations: int
    converged: bool
    dominant: float
    examples: int
    vector: Tree  # the unit eigenvector estimate, keyed like the parameters


@dataclass(frozen=True)
class HessianTrace:
    """Hutchinson's tr ∇²L: ``mean`` ± ``stderr`` over ``samples`` (vᵀ H v, one per probe)."""

    mean: float
    stderr: float
    probes: int
    examples: int
    samples: Tensor


def fixed_subset(n: int, count: int, seed: int = 0) -> Tensor:
    """``count`` distinct positions of 0..n−1, sorted, drawn uniformly with a CPU generator seeded ``seed``."""
    if not 1 <= count <= n:
        raise ValueError(f"a subset of {count} examples out of {n}: need 1 <= count <= {n}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[:count].sort().values


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


class _Loss:
    """The training loss over the set S, in evaluation batches, as a function of a flat list of leaves."""

    def __init__(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        params: Tree | None,
        indices: Indices,
        batch_size: int,
        loss_fn: LossFn,
        dtype: torch.dtype,
        progress: Progress = None,
    ) -> None:
        self.progress = progress or (lambda: None)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"x and y disagree on the number of examples: {x.shape[0]} vs {y.shape[0]}")
        params = dict(model.named_parameters()) if params is None else params
        if not params:
            raise ValueError("the model has no parameters")
        self.names = list(params)
        self.device = next(iter(params.values())).device
        # A copy of the model in dtype only when it is not already there (its buffers must match the weights).
        same = all(p.dtype == dtype for p in model.parameters()) and all(b.dtype == dtype for b in model.buffers())
        self.model = model if same else copy.deepcopy(model).to(dtype)
        self.leaves = [params[k].detach().to(self.device, dtype) for k in self.names]
        self.x, self.y, self.loss_fn, self.batch_size, self.dtype = x, y, loss_fn, batch_size, dtype
        if indices is None:
            self.indices = torch.arange(x.shape[0])
        else:
            self.indices = torch.as_tensor(indices, dtype=torch.long).flatten().cpu()
            if len(self.indices) and not 0 <= int(self.indices.min()) <= int(self.indices.max()) < x.shape[0]:
                raise ValueError(f"subset indices must lie in [0, {x.shape[0]})")
        self.n = len(self.indices)
        if self.n == 0:
            raise ValueError("the set of examples is empty")

    def batches(self) -> Iterator[tuple[float, Tensor, Tensor]]:
        """(|B|/n, x_B, y_B) for each evaluation batch of S, on the parameters' device, x in ``dtype``."""
        for start in range(0, self.n, self.batch_size):
            idx = self.indices[start : start + self.batch_size].to(self.x.device)
            xb = self.x[idx].to(self.device)
            xb = xb.to(self.dtype) if xb.is_floating_point() else xb
            yield len(idx) / self.n, xb, self.y[idx].to(self.device)

    def grad(self, xb: Tensor, yb: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """(leaves, ∇L_B) with the graph kept, for products ∇⟨∇L_B, v⟩."""
        leaves = [p.clone().requires_grad_(True) for p in self.leaves]
        loss = self.loss_fn(functional_call(self.model, dict(zip(self.names, leaves)), (xb,)), yb)
        grads = torch.autograd.grad(loss, leaves, create_graph=True, allow_unused=True)
        return leaves, [torch.zeros_like(p) if g is None else g for g, p in zip(grads, leaves)]

    @staticmethod
    def product(leaves: list[Tensor], grads: list[Tensor], v: list[Tensor], retain: bool) -> list[Tensor]:
        """∇²L_B v = ∇⟨∇L_B, v⟩; a gradient leaf that no longer depends on θ (loss linear in it) adds 0."""
        live = [(g, u) for g, u in zip(grads, v) if g.requires_grad]
        if not live:
            return [torch.zeros_like(p) for p in leaves]
        out = torch.autograd.grad(
            [g for g, _ in live], leaves, grad_outputs=[u for _, u in live], retain_graph=retain, allow_unused=True
        )
        return [torch.zeros_like(p) if h is None else h.detach() for h, p in zip(out, leaves)]

    def hvp(self, v: list[Tensor]) -> list[Tensor]:
        """H v = Σ_B (|B|/n) ∇²L_B v."""
        total = [torch.zeros_like(p) for p in self.leaves]
        with torch.enable_grad():
            for w, xb, yb in self.batches():
                leaves, grads = self.grad(xb, yb)
                for t, h in zip(total, self.product(leaves, grads, v, retain=False)):
                    t.add_(h, alpha=w)
                self.progress()
        return total

    def draw(self, generator: torch.Generator, rademacher: bool) -> list[Tensor]:
        """One random vector shaped like the leaves, from the CPU generator (device-independent)."""
        if rademacher:
            out = [torch.randint(0, 2, p.shape, generator=generator, dtype=torch.int8) for p in self.leaves]
            return [r.to(self.device, self.dtype).mul_(2).sub_(1) for r in out]
        return [
            torch.randn(p.shape, generator=generator, dtype=torch.float64).to(self.device, self.dtype)
            for p in self.leaves
        ]


def _dot(a: list[Tensor], b: list[Tensor]) -> float:
    return float(sum((u.double() * w.double()).sum() for u, w in zip(a, b)))


def _power(loss: _Loss, v: list[Tensor], iters: int, tol: float, shift: float) -> tuple[float, list[Tensor], int, bool]:
    """Power iteration on H − shift·I from v: (its Rayleigh quotient, the unit vector, products, converged)."""
    norm = math.sqrt(_dot(v, v))
    v = [u / norm for u in v]
    lam_prev, lam = math.nan, 0.0
    for k in range(1, iters + 1):
        hv = loss.hvp(v)
        if shift:
            hv = [h - shift * u for h, u in zip(hv, v)]
        lam = _dot(v, hv)
        norm = math.sqrt(_dot(hv, hv))
        if norm == 0.0:  # v is in H's null space (for shift 0): H v = 0, the iteration cannot move
            return lam, v, k, True
        v = [h / norm for h in hv]
        if abs(lam - lam_prev) <= tol * abs(lam):
            return lam, v, k, True
        lam_prev = lam
    return lam, v, iters, False


def top_eigenvalue(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    params: Tree | None = None,
    indices: Indices = None,
    iters: int = 100,
    tol: float = 1e-4,
    seed: int = 0,
    batch_size: int = 2048,
    loss_fn: LossFn = F.cross_entropy,
    dtype: torch.dtype = torch.float32,
    progress: Progress = None,
) -> TopEigenvalue:
    """λ_max = max eig ∇²L(θ) of the mean loss ``loss_fn`` over ``x[indices]`` (all of x when None), by power
    iteration on Hessian-vector products (see the module docstring): at most ``iters`` products per run, stopped
    at a relative change of the Rayleigh quotient ≤ ``tol``; a Gaussian start vector from ``seed``.

    ``loss_fn(outputs, y)`` must be the batch mean (as ``F.cross_entropy``, the trainer's loss). ``progress()`` is
    called after each evaluation batch's product (``iterations × batches`` calls in all).
    """
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    if not tol >= 0:
        raise ValueError(f"tol must be >= 0, got {tol}")
    loss = _Loss(model, x, y, params, indices, batch_size, loss_fn, dtype, progress)
    generator = torch.Generator().manual_seed(seed)
    with _eval_mode(model), _eval_mode(loss.model):
        dominant, v, k, converged = _power(loss, loss.draw(generator, rademacher=False), iters, tol, 0.0)
        value = dominant
        if dominant < 0:  # the dominant eigenvalue is the most negative one: the largest is that of H − λ I, + λ
            shifted, v, k2, converged = _power(loss, loss.draw(generator, rademacher=False), iters, tol, dominant)
            value, k = shifted + dominant, k + k2
    return TopEigenvalue(value, k, converged, dominant, loss.n, dict(zip(loss.names, v)))


def hessian_trace(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    params: Tree | None = None,
    indices: Indices = None,
    probes: int = 100,
    seed: int = 0,
    batch_size: int = 2048,
    loss_fn: LossFn = F.cross_entropy,
    dtype: torch.dtype = torch.float32,
    progress: Progress = None,
) -> HessianTrace:
    """tr ∇²L(θ) = E[vᵀ ∇²L v], v Rademacher, by Hutchinson's estimator over ``probes`` probes from ``seed``.

    Batches are the outer loop: each batch's gradient graph is built once and serves every probe, and the probes
    are drawn again, identically, for each batch (only one probe is held at a time). ``progress()`` is called after
    each (batch, probe) product (``batches × probes`` calls in all).
    """
    if probes < 1:
        raise ValueError(f"probes must be >= 1, got {probes}")
    loss = _Loss(model, x, y, params, indices, batch_size, loss_fn, dtype, progress)
    samples = torch.zeros(probes, dtype=torch.float64)
    with _eval_mode(model), _eval_mode(loss.model), torch.enable_grad():
        for w, xb, yb in loss.batches():
            leaves, grads = loss.grad(xb, yb)
            generator = torch.Generator().manual_seed(seed)
            for p in range(probes):
                v = loss.draw(generator, rademacher=True)
                samples[p] += w * _dot(v, loss.product(leaves, grads, v, retain=p < probes - 1))
                loss.progress()
    stderr = float(samples.std(correction=1)) / math.sqrt(probes) if probes > 1 else math.nan
    return HessianTrace(float(samples.mean()), stderr, probes, loss.n, samples)


def hessian_vector_product(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    v: Tree,
    *,
    params: Tree | None = None,
    indices: Indices = None,
    batch_size: int = 2048,
    loss_fn: LossFn = F.cross_entropy,
    dtype: torch.dtype = torch.float32,
) -> Tree:
    """∇²L(θ) v for the mean loss over ``x[indices]``, as the size-weighted mean of per-batch products."""
    loss = _Loss(model, x, y, params, indices, batch_size, loss_fn, dtype)
    with _eval_mode(model), _eval_mode(loss.model):
        hv = loss.hvp([v[k].detach().to(loss.device, dtype) for k in loss.names])
    return dict(zip(loss.names, hv))
