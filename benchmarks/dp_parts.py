"""Where one DP step's time goes, part by part: the measured floor under DP-SGD/SGD and DP-SAT/DP-SGD.

On one batch of MNIST-1D (expected batch 256), each part of a step is timed in turn, interleaved round by round so
load drift hits all alike, in a new random order every round (seeded), so that no part always runs on tensors
the part before it left in cache (medians over the timed rounds):

- forward: the model's forward pass alone (no graph);
- sgd_gradient: the mean-gradient oracle SGD uses (forward, backward with weight gradients);
- ghost_norms: the ghost path's forward and backward to the layer outputs, with the per-example norms;
- ghost_clipped_sum: the same plus the clipped sum Σ c_i ∇ℓ_i;
- clip_oracle: the whole clipped-gradient oracle (norms, clip factors, clipped sum) at the model's own weights;
- clip_oracle_at_w_plus_eps: the same at another tree (DP-SAT's point), through ``tree.Evaluator``;
- noise: the Gaussian draw z ~ N(0, I) of every parameter (``privacy.sampling.standard_normal``);
- uniform_draw: as many U(0, 1) numbers from the same generator (``torch.rand``), the generator's own cost, under
  which no Gaussian draw from it can go;
- privatize: (Σ + σC z)/(qN);
- optimizer: SGD with momentum and weight decay, as ``step.optim.make_optimizer`` builds it;
- dpsat_direction, dpsat_point: DP-SAT's ε = ρ g̃/‖g̃‖ and w + ε as two passes; dpsat_fused_point: w + ε as the
  DP-SAT step computes it (``step.transforms.perturb``: one pass w + (ρ/‖g̃‖)·g̃);
- functional_call, evaluator: a forward at another tree through ``torch.func.functional_call`` and through
  ``tree.Evaluator``;
- norms:LAYER and clipped_sum:LAYER: each layer's ghost rule (``privacy.ghost_rules``) on the (input, output
  gradient) the layer recorded in one step, its per-example squared norms and then its part of Σ c_i ∇ℓ_i;
- norm_alt:LAYER:METHOD: every other method for the same norms (:mod:`norm_floor`).

Prints one JSON object with the medians (ms) and the sums they imply for an SGD and a DP-SGD step. The floor
(``dpsgd_floor_over_sgd``) is what DP-SGD cannot do without on top of SGD's step: the per-example norms, each
layer's by the fastest method timed (``norm_floor_ms``), and the generator's uniform draw; it counts the clipped
sum as free (it takes the place of SGD's weight gradients) and the privatization as free.
Usage: python benchmarks/dp_parts.py [--model mlp|cnn1d] [--rounds 400] [--batch-size 256] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time

import torch
import torch.nn.functional as F
from limits import add_allocator_flag, apply_allocator, cache_capacity
from norm_floor import alternatives
from step_time import MODELS
from torch.func import functional_call

from flatpriv import tree as T
from flatpriv.config import DataConfig, config_from_dict
from flatpriv.data import load_data
from flatpriv.models import build_model
from flatpriv.privacy.clipping import clipped_grad
from flatpriv.privacy.ghost import ghost_layers, ghost_norms
from flatpriv.privacy.privatizer import privatize
from flatpriv.privacy.sampling import make_generator, standard_normal
from flatpriv.step.optim import make_optimizer
from flatpriv.step.oracles import mean_grad
from flatpriv.step.transforms import normalize, perturb


def _recorded_calls(model: torch.nn.Module, layers: list, x: torch.Tensor, y: torch.Tensor) -> list:
    """(layer name, module, rule, [(input, output gradient)]) for every ghost layer, from one forward/backward."""
    seen: dict[str, tuple] = {}
    handles = [
        m.register_forward_hook(lambda _m, i, o, p=p: seen.__setitem__(p, (i[0].detach(), o))) for p, m, _ in layers
    ]
    loss = F.cross_entropy(model(x), y, reduction="sum")
    for h in handles:
        h.remove()
    grads = torch.autograd.grad(loss, [seen[p][1] for p, _, _ in layers])
    return [(p.rstrip(".") or "model", m, r, [(seen[p][0], gr)]) for (p, m, r), gr in zip(layers, grads)]


def parts(model_name: str, batch: int, device: str) -> dict:
    data = load_data(DataConfig(name="mnist1d"), device)
    torch.manual_seed(0)
    model = build_model(MODELS[model_name], data.input_shape, data.num_classes).to(device)
    own = dict(model.named_parameters())
    x, y = data.x_train[:batch], data.y_train[:batch]
    oracle, clip, layers = mean_grad(model), clipped_grad(model, 1.0, "ghost"), ghost_layers(model)
    gen = make_generator(0, device)
    cfg = config_from_dict({"optim": {"lr": 1e-6, "momentum": 0.9, "weight_decay": 5e-4}})
    opt, _ = make_optimizer(cfg, list(model.parameters()), 1)  # the optimizer flatpriv builds (fused where it can)
    g, _ = clip(own, x, y)
    c = torch.rand(batch, generator=torch.Generator().manual_seed(0)).to(device)
    direction = normalize(radius=0.03)
    eps, _ = direction.update(g, (), own)
    point = T.add(own, eps)
    evaluator = T.Evaluator(model)
    count = sum(p.numel() for p in own.values())

    def forward() -> None:
        with torch.no_grad():
            model(x)

    def clipped_sum() -> None:
        ghost_norms(model, layers, own, x, y, True)[1](c)

    def step_optimizer() -> None:
        for k, p in own.items():
            p.grad = g[k]
        opt.step()

    def at(call) -> None:
        with torch.no_grad():
            call()

    rules = {}
    for name, m, rule, calls in _recorded_calls(model, layers, x, y):
        _, finish = rule(m, calls, batch)
        rules[f"norms:{name}"] = lambda m=m, rule=rule, calls=calls: rule(m, calls, batch)
        rules[f"clipped_sum:{name}"] = lambda finish=finish: finish(c)
        for method, fn in (alternatives(m, *calls[0]) if len(calls) == 1 else {}).items():
            rules[f"norm_alt:{name}:{method}"] = fn
    return rules | {
        "forward": forward,
        "sgd_gradient": lambda: oracle(own, x, y),
        "ghost_norms": lambda: ghost_norms(model, layers, own, x, y, True),
        "ghost_clipped_sum": clipped_sum,
        "clip_oracle": lambda: clip(own, x, y),
        "clip_oracle_at_w_plus_eps": lambda: clip(point, x, y),
        "noise": lambda: standard_normal(own, gen),
        "uniform_draw": lambda: torch.rand(count, generator=gen, device=device),
        "privatize": lambda: privatize(g, g, 1.0, float(batch)),
        "optimizer": step_optimizer,
        "dpsat_direction": lambda: direction.update(g, (), own),
        "dpsat_point": lambda: T.add(own, eps),
        "dpsat_fused_point": lambda: perturb(direction, g, (), own),
        "functional_call": lambda: at(lambda: functional_call(model, point, (x,))),
        "evaluator": lambda: at(lambda: evaluator(point, x)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_allocator_flag(ap)
    ap.add_argument("--model", default="mlp", choices=list(MODELS))
    ap.add_argument("--rounds", type=int, default=400)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    a = ap.parse_args()
    kept = apply_allocator(a)
    fns = parts(a.model, a.batch_size, a.device)
    sync = torch.cuda.synchronize if a.device == "cuda" else (lambda: None)
    times: dict[str, list[float]] = {k: [] for k in fns}
    order, shuffle = list(fns), random.Random(0).shuffle
    for r in range(a.rounds + a.warmup):
        shuffle(order)
        for name in order:
            f = fns[name]
            sync()
            t0 = time.perf_counter()
            f()
            sync()
            dt = time.perf_counter() - t0
            if r >= a.warmup:
                times[name].append(dt)
    ms = {k: round(statistics.median(v) * 1e3, 4) for k, v in times.items()}
    sgd = ms["sgd_gradient"] + ms["optimizer"]
    dpsgd = ms["clip_oracle"] + ms["noise"] + ms["privatize"] + ms["optimizer"]
    floor = sgd + ms["noise"]
    fastest: dict[str, str] = {}  # layer -> the fastest method for its norms ("rule": the ghost rule's own)
    norm_floor = 0.0
    for key in (k for k in ms if k.startswith("norms:")):
        layer = key.split(":", 1)[1]
        options = {"rule": ms[key]} | {
            k.rsplit(":", 1)[1]: v for k, v in ms.items() if k.startswith(f"norm_alt:{layer}:")
        }
        fastest[layer] = min(options, key=options.__getitem__)
        norm_floor += options[fastest[layer]]
    out = {
        "model": a.model,
        "device": a.device,
        "batch_size": a.batch_size,
        "threads": torch.get_num_threads(),
        "allocator_kept_freed_memory": kept,
        "onednn_primitive_cache_capacity": cache_capacity(),
        "median_ms": ms,
        "sgd_step_parts_ms": round(sgd, 4),
        "dpsgd_step_parts_ms": round(dpsgd, 4),
        "dpsgd_over_sgd_from_parts": round(dpsgd / sgd, 3),
        "sgd_plus_noise_over_sgd": round(floor / sgd, 3),
        "ghost_rules_ms": {
            "norms": round(sum(v for k, v in ms.items() if k.startswith("norms:")), 4),
            "clipped_sum": round(sum(v for k, v in ms.items() if k.startswith("clipped_sum:")), 4),
        },
        "sgd_plus_uniform_draw_over_sgd": round((sgd + ms["uniform_draw"]) / sgd, 3),
        "norm_floor_ms": round(norm_floor, 4),
        "norm_floor_methods": fastest,
        "dpsgd_floor_over_sgd": round((sgd + norm_floor + ms["uniform_draw"]) / sgd, 3),
        # what DP-SAT's step adds to DP-SGD's: the fused point, and the oracle at a tree that is not the model's own
        "dpsat_extra_over_dpsgd": round(
            (ms["dpsat_fused_point"] + ms["clip_oracle_at_w_plus_eps"] - ms["clip_oracle"]) / dpsgd, 3
        ),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
