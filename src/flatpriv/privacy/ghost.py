"""Ghost clipping ("book-keeping"): per-example gradient norms and the clipped sum from ONE backward pass.

For a layer s = a Wᵀ (+ b) applied at T positions of example i (tokens, or conv patches after unfolding), with
input rows a_{i,t} ∈ R^K and output gradients g_{i,t} = ∂(Σ_j ℓ_j)/∂s_{i,t} ∈ R^O, the per-example weight gradient
is G_i = Σ_t g_{i,t} a_{i,t}ᵀ, and

    ‖G_i‖²_F = Σ_{t,t'} (a_{i,t}·a_{i,t'}) (g_{i,t}·g_{i,t'})       (the "ghost norm": no O×K matrix per example)
             = ‖a_i‖² ‖g_i‖²                                       (T = 1, e.g. an MLP layer)

(Goodfellow 2015; Li et al. 2022, "Large language models can be strong differentially private learners"). With
c_i = min(1, C/(‖∇ℓ_i‖ + 1e-6)) the clipped sum is one weighted product, Σ_i c_i G_i = Σ_{i,t} c_i g_{i,t} a_{i,t}ᵀ,
so no second backward over the model is needed (Bu et al. 2023, "Differentially private optimization on large
model at small cost", book-keeping). Per layer the cheaper of the ghost norm (cost ∝ T²(K+O)) and materialising
G_i (cost ∝ T·K·O) is used. GroupNorm's per-example gradients (Σ g·x̂ and Σ g per channel) are small and are
materialised; Embedding uses index coincidence, ‖G_i‖² = Σ_{t,t'} [idx_t = idx_t'] g_t·g_t'.

The rules, one per layer type, are in :mod:`flatpriv.privacy.ghost_rules`. A forward hook on each supported layer
records (a, s); one ``torch.autograd.grad`` of Σ_i ℓ_i w.r.t. every recorded s gives the g's. A
module called several times in one forward has its calls concatenated along T.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ..tree import Tree
from .ghost_rules import Finish, Rule, rule_for


class GhostUnsupported(ValueError):
    """The forward pass did something the ghost path cannot account for (detected while running)."""


def unsupported_parts(model: nn.Module) -> list[str]:
    """What keeps ``model`` off the ghost path, one entry per cause: each parameter-owning module without a rule
    (``"rnn (LSTM)"``) and each parameter registered under a second name (``"head.weight (= embed.weight)"``)."""
    first: dict[int, str] = {}
    shared = []
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in first:
            shared.append(f"{name} (= {first[id(p)]})")
        first.setdefault(id(p), name)
    parts = []
    for path, m in model.named_modules():
        names = {n for n, _ in m.named_parameters(recurse=False)}
        if names and (rule_for(m) is None or not names <= {"weight", "bias"}):
            parts.append(f"{path or '<the model itself>'} ({type(m).__name__})")
    return parts + shared


def supports_ghost(model: nn.Module) -> bool:
    """True when every parameter belongs (as ``weight``/``bias``) to a supported layer and none is shared.

    Supported: nn.Linear, nn.Conv1d/2d/3d with groups = 1 (any stride, padding, padding mode, dilation),
    affine nn.GroupNorm, nn.Embedding without max_norm / scale_grad_by_freq. Parameter-free modules are free.
    """
    return not unsupported_parts(model)


def ghost_layers(model: nn.Module) -> list[tuple[str, nn.Module, Rule]]:
    """(name prefix, module, rule) for every parameter-owning module; call only when ``supports_ghost``."""
    out = []
    for name, m in model.named_modules():
        rule = rule_for(m)
        if rule is not None and any(True for _ in m.parameters(recurse=False)):
            out.append((f"{name}." if name else "", m, rule))
    return out


def ghost_norms(
    model: nn.Module,
    layers: list[tuple[str, nn.Module, Rule]],
    params: Tree,
    x: torch.Tensor,
    y: torch.Tensor,
    own: bool = False,
    call: Callable[[Tree, torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, Callable[[torch.Tensor], Tree], torch.Tensor]:
    """One forward + one backward to the layer outputs -> (‖∇ℓ_i‖² [B], c ↦ Σ_i c_i ∇ℓ_i, Σ_i ℓ_i).

    ``own``: ``params`` is the model's own parameter tree, so the model is called directly (DP-SGD's every step,
    and DP-SAM's first release) instead of through ``functional_call``'s re-parametrisation; the backward asks
    for the layer outputs' gradients only, so no weight gradient is computed either way. ``call(tree, x)``
    evaluates the model at any other tree (:class:`flatpriv.tree.Evaluator`; default ``functional_call``).
    Raises GhostUnsupported when a recorded tensor was modified in place, or a parameter was used outside its
    module's forward (a module that never ran but whose parameter still reached the loss).
    """
    batch = x.shape[0]
    records: list[list[tuple[torch.Tensor, torch.Tensor, int, int]]] = [[] for _ in layers]

    def hook(store: list) -> Callable:
        def record(_m: nn.Module, inputs: tuple, out: torch.Tensor) -> None:
            store.append((inputs[0], out, inputs[0]._version, out._version))

        return record

    handles = [m.register_forward_hook(hook(store)) for (_, m, _), store in zip(layers, records)]
    try:
        leaves = params if own else {k: v.detach().requires_grad_(True) for k, v in params.items()}
        with torch.enable_grad():
            if own:
                logits = model(x)
            else:
                logits = call(leaves, x) if call is not None else functional_call(model, leaves, (x,))
            loss = F.cross_entropy(logits, y, reduction="sum")
    finally:
        for h in handles:
            h.remove()
    if any(a._version != va or s._version != vs for rec in records for a, s, va, vs in rec):
        raise GhostUnsupported("a layer's input or output was modified in place after the layer ran")
    idle = [leaves[p + n] for (p, m, _), rec in zip(layers, records) if not rec for n, _ in m.named_parameters()]
    outs = [s for rec in records for _, s, _, _ in rec]
    grads = torch.autograd.grad(loss, outs + idle, allow_unused=True, materialize_grads=False) if outs + idle else ()
    if any(g is not None for g in grads[len(outs) :]):
        raise GhostUnsupported("a parameter reached the loss without its module being called")
    flat = iter(grads[: len(outs)])
    sq: torch.Tensor | None = None  # the first layer's sum starts it: no zeros and no add of them
    finishers: list[tuple[str, Finish]] = []
    with torch.no_grad():
        for (prefix, m, rule), rec in zip(layers, records):
            if not rec:  # never called and nothing reached the loss: zero gradient
                continue
            calls = [(a.detach(), torch.zeros_like(s) if (gs := next(flat)) is None else gs) for a, s, _, _ in rec]
            layer_sq, finish = rule(m, calls, batch)
            sq = layer_sq if sq is None else sq + layer_sq
            finishers.append((prefix, finish))

    def clipped_sum(c: torch.Tensor) -> Tree:
        with torch.no_grad():
            out = {prefix + k: v for prefix, finish in finishers for k, v in finish(c).items()}
        return {k: out[k] if k in out else torch.zeros_like(v) for k, v in params.items()}

    if sq is None:  # no supported layer ran
        sq = torch.zeros(batch, dtype=loss.dtype, device=loss.device)
    return sq, clipped_sum, loss.detach()
