"""Models checked before DP training (as Opacus's ModuleValidator does), and the one fix flatpriv offers.

Per-example clipping bounds one example's influence only if the loss of example i depends on example i alone
and its gradient can be computed. :func:`validate_model` refuses, in one line naming the module path:

* any BatchNorm (every subclass of ``torch.nn.modules.batchnorm._BatchNorm``): in training mode it normalises
  with the batch's statistics, so each example's output (and gradient) depends on every other example in the
  batch and clipping bounds nothing. :func:`fix_model` returns a copy with GroupNorm in its place;
* a recurrent layer (``nn.RNN``, ``nn.GRU``, ``nn.LSTM``, the ``nn.*Cell`` layers) whose per-example gradients
  ``torch.func.vmap`` cannot compute: none has a ghost rule, so vmap is their only path, and whether vmap runs
  depends on the kernel torch picks. Each such layer is probed once, on two zero sequences of its own dtype and
  device. On torch 2.13's CPU, ``nn.LSTM`` in float32 runs (oneDNN's kernel; its per-example gradients equal a
  naive loop, tests/test_model_checks.py) and passes, while GRU, RNN, the cells, LSTM with ``proj_size`` and any
  float64 LSTM fail inside the kernel ("output with shape [1, H] doesn't match the broadcast shape [B, 1, H]")
  and are refused;
* a model without parameters (nothing to train).

Layers the ghost path does not cover but vmap does (LayerNorm, grouped convolutions, LSTM, shared parameters,
custom modules) are not refused: :func:`flatpriv.privacy.clipped_grad` says in one ``FlatprivWarning`` line which
layers made it fall back to vmap. Anything vmap still cannot run becomes one FlatprivError line at the first step.
"""

from __future__ import annotations

import copy
import math
import warnings

import torch
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.lazy import LazyModuleMixin

from ..errors import FlatprivError

GROUPS = 32  # fix_model: GroupNorm(gcd(32, C), C), the 32 groups of Wu & He (2018) where C allows it


def _path(name: str) -> str:
    return name or "<the model itself>"


def _vmap_fails(m: nn.Module) -> str | None:
    """For a recurrent layer: why torch.func.vmap cannot give its per-example gradients here (None: it can).

    Two examples of length 3 (zeros, the layer's dtype and device), one vmapped gradient of the output's sum;
    torch's warnings and random state are left as they were."""
    if not isinstance(m, (nn.RNNBase, nn.RNNCellBase)):
        return None
    ref = next(m.parameters(), None)
    if ref is None:
        return None
    cell = isinstance(m, nn.RNNCellBase)
    x = torch.zeros((2, m.input_size) if cell else (2, 3, m.input_size), dtype=ref.dtype, device=ref.device)

    def loss(params: dict[str, torch.Tensor], xi: torch.Tensor) -> torch.Tensor:
        one = xi.unsqueeze(0) if cell or m.batch_first else xi.unsqueeze(1)
        out = functional_call(m, params, (one,))
        return (out[0] if isinstance(out, tuple) else out).sum()

    params = {k: v.detach() for k, v in m.named_parameters()}
    devices = [ref.device] if ref.device.type == "cuda" else []
    with warnings.catch_warnings(), torch.random.fork_rng(devices=devices), torch.enable_grad():
        warnings.simplefilter("ignore")
        try:
            vmap(grad(loss), in_dims=(None, 0))(params, x)
        except RuntimeError as e:
            return (
                f"{str(ref.dtype).removeprefix('torch.')} on {ref.device.type}: "
                + (str(e).strip().splitlines() or [type(e).__name__])[0][:120]
            )
    return None


def _listed(items: list[str], limit: int = 4) -> str:
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def validate_model(model: nn.Module) -> None:
    """Raise a one-line FlatprivError if ``model`` cannot be trained with per-example clipping (module docstring).

    >>> try:
    ...     validate_model(nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)))
    ... except FlatprivError as e:
    ...     print(str(e)[:62])
    1 (BatchNorm1d): BatchNorm mixes the examples of a batch, so p
    """
    if not isinstance(model, nn.Module):
        raise FlatprivError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    modules = list(model.named_modules())
    norms = [f"{_path(n)} ({type(m).__name__})" for n, m in modules if isinstance(m, _BatchNorm)]
    if norms:
        raise FlatprivError(
            f"{_listed(norms)}: BatchNorm mixes the examples of a batch, so per-example clipping bounds nothing "
            "under DP; use model = flatpriv.privacy.fix_model(model) (GroupNorm instead) or "
            "flatpriv.fit(..., fix_batchnorm=True)"
        )
    for n, m in modules:
        why = _vmap_fails(m)
        if why:
            raise FlatprivError(
                f"{_path(n)} ({type(m).__name__}): no per-example gradient path computes this layer (it has no ghost "
                f"rule, and torch.func.vmap fails inside its kernel: {why}), so it cannot be trained with DP"
            )
    if not any(True for _ in model.parameters()):
        raise FlatprivError(f"the model ({type(model).__name__}) has no parameters: there is nothing to train")


def fix_model(model: nn.Module, groups: int = GROUPS, inplace: bool = False) -> nn.Module:
    """A deep copy of ``model`` with every BatchNorm replaced by ``GroupNorm(gcd(groups, C), C)``.

    C is the BatchNorm's ``num_features`` and gcd(32, C) always divides it (C = 48 gets 16 groups, an odd C gets 1,
    which is LayerNorm over the channels and positions). The GroupNorm keeps the BatchNorm's ``eps``, its
    ``affine`` flag and, when affine, its current weight and bias (per-channel scale and shift, as in BatchNorm);
    running statistics are dropped, since GroupNorm has none. On a [B, C] input (BatchNorm1d after a Linear layer)
    the groups are groups of features. The model passed in is left unchanged (``inplace=True``: its submodules
    are replaced and the same object is returned, as ``flatpriv.fit(..., fix_batchnorm=True)`` does); a module
    used at several places stays one (shared) module.

    >>> fixed = fix_model(nn.Sequential(nn.Conv2d(1, 48, 3), nn.BatchNorm2d(48)))
    >>> type(fixed[1]).__name__, fixed[1].num_groups, fixed[1].num_channels
    ('GroupNorm', 16, 48)
    """
    if not isinstance(model, nn.Module):
        raise FlatprivError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not 1 <= groups <= 2**16:
        raise FlatprivError(f"groups = {groups}: must be in [1, 65536]")
    modules = model.named_modules()
    lazy = [_path(n) for n, m in modules if isinstance(m, LazyModuleMixin) and m.has_uninitialized_params()]
    if lazy:
        raise FlatprivError(f"{_listed(lazy)}: uninitialised lazy module; run one forward pass before fix_model")
    fixed = model if inplace else copy.deepcopy(model)
    if isinstance(fixed, _BatchNorm):
        return _group_norm(fixed, groups)
    done: dict[int, nn.Module] = {}

    def replace(parent: nn.Module) -> None:
        for name, child in parent.named_children():
            if isinstance(child, _BatchNorm):
                if id(child) not in done:
                    done[id(child)] = _group_norm(child, groups)
                setattr(parent, name, done[id(child)])
            elif id(child) not in done:
                done[id(child)] = child
                replace(child)

    replace(fixed)
    return fixed


def _group_norm(bn: _BatchNorm, groups: int) -> nn.GroupNorm:
    c = bn.num_features
    ref = bn.weight if bn.affine else bn.running_mean
    kwargs = {} if ref is None else {"device": ref.device, "dtype": ref.dtype}
    gn = nn.GroupNorm(math.gcd(groups, c), c, eps=bn.eps, affine=bn.affine, **kwargs)
    if bn.affine:
        gn.weight.data.copy_(bn.weight.detach())
        gn.bias.data.copy_(bn.bias.detach())
    gn.train(bn.training)
    return gn
