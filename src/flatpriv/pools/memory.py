"""How many models of a pool to train at once: chunks sized to a memory budget.

With P parameters, A activation elements per example (counted on the meta device, no compute), batch B (for DP
pools B' = q·|S| + 4√(q·|S|), a generous Poisson batch), N + M train and test examples and C classes, the
estimate in float32 elements is, for every model of a chunk,

    10·P                   weights, gradient, optimizer state (2 for Adam), pipeline state, ε and w + ε, the
                           displacement copy of ``pool_steps.descend``
    + 5·(N + M)·C          the final logits: float32, their argmax, the float32 copies saved and concatenated
    + 1 Mi                 per-model bookkeeping (measured: module objects, allocator slack)
    + 3·B·A                the step's activations and their gradients (ghost clipping's probes for DP pools),
                           when the step is one vmap over the models (``pool_steps.vmap_models``)

and once per chunk, for the work done one model at a time,

    2·E·A_max              the final logits' forward pass without autograd (eval batch E; A_max the largest
                           layer output: only a layer's input and output are alive)
    + B·A                  the step, when it runs one model at a time (convolutional models on a CPU; measured
                           about a third of what the vmap needs per model, which adds grouped-convolution buffers)
    + 3·min(B'·P, 2²⁶)     DP pools whose clipped sums run per model: per-example gradients where the single
                           run's oracle materialises them (in chunks of at most 2²⁶ numbers)

It is an estimate, not a measurement: allocator slack and temporary buffers come on top, which is why the default
budget is half of what the device has free.
"""

from __future__ import annotations

import math
import os

import torch

from ..config import Config
from ..errors import FlatprivError
from ..models import build_model
from ..privacy.ghost import supports_ghost
from ..step import get_algorithm
from .steps import vmap_models

GIB = 2**30


def pool_memory(
    cfg: Config,
    input_shape: tuple[int, ...],
    num_classes: int,
    n_train: int,
    n_test: int,
    kept: int,
    device: torch.device,
) -> tuple[int, int]:
    """(bytes per model, bytes per chunk) by the estimate above, for models that keep at most ``kept`` examples."""
    with torch.device("meta"):  # shapes only: no memory, no compute, no draw from the global RNG
        model = build_model(cfg.model, input_shape, num_classes)
    params = sum(p.numel() for p in model.parameters())
    outputs = []
    hooks = [
        m.register_forward_hook(lambda _m, _i, out: outputs.append(out.numel()))
        for m in model.modules()
        if not list(m.children())
    ]
    with torch.no_grad():
        model(torch.empty((1, *input_shape), device="meta"))
    for h in hooks:
        h.remove()
    acts = sum(outputs)
    private = get_algorithm(cfg.algorithm).private
    batch = float(cfg.train.batch_size)
    if private:
        q = cfg.privacy.sample_rate if cfg.privacy.sample_rate > 0 else batch / kept
        batch = q * kept + 4 * math.sqrt(q * kept)
    vectorized = vmap_models(model, device)
    per_model = 10 * params + 5 * (n_train + n_test) * num_classes + 2**20 + (3 * batch * acts if vectorized else 0)
    per_chunk = 2 * cfg.train.eval_batch_size * max(outputs) + (0 if vectorized else batch * acts)
    if private and not (vectorized and supports_ghost(model) and cfg.privacy.clip_method != "vmap"):
        per_chunk += 3 * min(batch * params, 2**26)
    return int(4 * per_model), int(4 * per_chunk)


def free_bytes(device: torch.device) -> int:
    """What the device has free now: CUDA's free memory, or the machine's available RAM."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not POSIX: assume a modest 8 GiB
        return 8 * GIB


def chunk_size(
    requested: int | None, budget_gib: float | None, per_model: int, per_chunk: int, device: torch.device, n_models: int
) -> int:
    """Models per chunk: ``requested`` if it fits the budget (refused otherwise), else as many as fit, at most
    64 (larger chunks save no time on a CPU). The default budget is half the device's free memory."""
    if budget_gib is not None and budget_gib <= 0:
        raise FlatprivError(f"--memory-budget {budget_gib}: must be a positive number of GiB")
    budget = budget_gib * GIB if budget_gib is not None else free_bytes(device) / 2
    fits = int((budget - per_chunk) // per_model)
    if fits < 1:
        raise FlatprivError(
            f"one model needs about {(per_model + per_chunk) / GIB:.2f} GiB, over the memory budget of "
            f"{budget / GIB:.2f} GiB: raise --memory-budget or use a smaller model or batch"
        )
    if requested is not None:
        if requested < 1:
            raise FlatprivError(f"--chunk-size {requested}: must be at least 1")
        if min(requested, n_models) > fits:
            need = requested * per_model + per_chunk
            raise FlatprivError(
                f"--chunk-size {requested} needs about {need / GIB:.2f} GiB, over "
                f"the memory budget of {budget / GIB:.2f} GiB: use --chunk-size {fits} or less, or "
                "raise --memory-budget"
            )
        return requested
    return max(1, min(fits, 64, n_models))
