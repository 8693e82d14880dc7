"""DP-SAT's own cost inside the step: the point w + (ρ/‖g̃‖)·g̃ timed where the step computes it.

DP-SAT (Park et al. 2023) evaluates the clipped-gradient oracle at w_t + ρ g̃_{t−1}/‖g̃_{t−1}‖ instead of w_t; all
it adds to DP-SGD is that point (a global norm ‖g̃‖, its read as a float, one fused add over the leaves) and an
oracle at a tree that is not the model's own. The 5 % target (DP-SAT ≤ 1.05× DP-SGD) allows 0.05 of DP-SGD's
step for it. Four variants step the same batches, interleaved in a shuffled order (``step_time``):

- dpsgd, dpsat_library: as ``dp_step.py`` builds them;
- dpsat: the same, its point computed by this script op for op as the library does (to time its parts);
- dpsat_point_after_step: DP-SAT with the next step's point computed right after the optimizer step, while w and
  g̃ are still in cache, and picked up by the next step when no parameter has changed since (``_version``);
- dpsat_point_untimed: the same point computed just before the step, outside its timer, so this variant's step is
  DP-SAT without its point: the oracle at a tree that is not the model's own, and the rest of DP-SAT's step.
  dpsat_library − dpsat_point_untimed is what the point costs the step (``point_cost_in_step_us``), and
  dpsat_point_untimed − dpsgd what everything else DP-SAT does costs (``rest_of_dpsat_extra_us``).
  All four DP-SAT variants make the same operations on the same tensors, so their weights must be equal after
  the run (checked: ``same_weights``).

While they run, each DP-SAT point is timed in the step, part by part (``point_in_step_us``: the norm, the float,
the add), and afterwards the same point is timed again on the last step's tensors in a tight loop
(``point_alone_us``), so the difference is what the surrounding step costs the point, not the point's own work;
``point_alone_after_sweep_us`` times it after writing 8 or 64 MiB before each repetition (its inputs out of L2,
then out of L3, on 2026-12-06's machine);
``point_in_step_us["again"]`` is the same point computed a second time at once, inside the step (its inputs and
the kernels' code warm). The "dpsat" variant's step includes that second point and its timers, so its step
time is dpsat_library's plus that; compare dpsat_library with dpsgd for the ratio.
On CUDA the script's points read ‖g̃‖ as a float (a device sync) where the library's do not: a CPU question.
Prints one JSON object.
Usage: python benchmarks/dpsat_point.py [--model mlp,cnn1d] [--steps 400] [--batch-size 256] [--block 1]
       [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch
from dp_step import flatpriv_step
from limits import add_allocator_flag, apply_allocator, step_header
from step_time import MODELS, _time_interleaved, add_timing_flags, mnist1d_batches

import flatpriv.step.dp as dp_module
from flatpriv import tree as T
from flatpriv.config import ModelConfig
from flatpriv.data import Dataset
from flatpriv.models import build_model

RHO = 0.03  # dp_step.py's ρ
EPS = 1e-12  # step.transforms.normalize's
SWEEPS_MIB = (8, 64)  # written before each point alone: beyond this machine's L2 (1 MiB a core), beyond its L3 (32)


def sat_point(g: dict, params: dict) -> dict:
    """w + (ρ/(‖g‖ + 1e-12))·g as ``normalize(radius=ρ).point`` computes it on the host, op for op."""
    return T.add(params, g, alpha=RHO / (float(T.norm(g)) + EPS))


class Probe:
    """Replaces ``flatpriv.step.dp.perturb`` for the benchmark: times the parts of each point of the variant being
    stepped, and hands a variant its point prepared after the previous optimizer step when nothing changed since."""

    def __init__(self, original: Callable) -> None:
        self.original = original
        self.active = ""
        self.parts: dict[str, list[float]] = {"norm": [], "float": [], "add": [], "total": [], "again": []}
        self.prepared: dict[int, tuple[dict, list[int], dict]] = {}
        self.last: tuple[dict, dict] | None = None
        self.hits = 0  # steps that took a prepared point

    def perturb(self, direction, g: dict, state, params: dict):
        if self.active == "dpsat_library":
            return self.original(direction, g, state, params)
        ready = self.prepared.get(id(params))
        if ready is not None and ready[0] is g and [p._version for p in params.values()] == ready[1]:
            self.hits += 1
            return ready[2], state
        t0 = time.perf_counter()
        n = T.norm(g)
        t1 = time.perf_counter()
        r = RHO / (float(n) + EPS)
        t2 = time.perf_counter()
        point = T.add(params, g, alpha=r)  # sat_point, split into its parts
        t3 = time.perf_counter()
        if self.active == "dpsat":
            for k, v in zip(("norm", "float", "add", "total"), (t1 - t0, t2 - t1, t3 - t2, t3 - t0)):
                self.parts[k].append(v)
            self.parts["again"].append(self._once(g, params))  # the same point at once: inputs and code warm
            self.last = (g, params)
        return point, state

    @staticmethod
    def _once(g: dict, params: dict) -> float:
        t = time.perf_counter()
        sat_point(g, params)
        return time.perf_counter() - t

    def point_alone(self, repeats: int = 2000, sweep: torch.Tensor | None = None) -> float:
        """The last probed point again in a tight loop; with ``sweep``, that buffer is written before each
        repetition, so the point's inputs come from farther out in the memory hierarchy."""
        assert self.last is not None
        times = []
        for _ in range(repeats):
            if sweep is not None:
                sweep.add_(1.0)
            times.append(self._once(*self.last))
        return statistics.median(times) * 1e6


def prepare_point(probe: Probe, view: Callable) -> Callable[[], None]:
    """``run()`` computes a DP-SAT variant's next point now, from its last release and its weights as they are, and
    leaves it for the probe to hand to that variant's next step (none before the first release)."""

    def run() -> None:
        params, (_, previous) = view()
        if previous is not None:
            versions = [p._version for p in params.values()]
            probe.prepared[id(params)] = (previous, versions, sat_point(previous, params))

    return run


def variant(probe: Probe, name: str, step: Callable, after: Callable | None = None) -> Callable:
    def run(x: torch.Tensor, y: torch.Tensor) -> None:
        probe.active = name
        step(x, y)
        if after is not None:
            after()

    return run


def measure(
    probe: Probe, mcfg: ModelConfig, data: Dataset, batches: list, warmup: int, device: torch.device, block: int = 1
) -> dict:
    """The five variants on one model, interleaved; the JSON row."""
    n, batch = len(data.y_train), len(batches[0][1])
    probe.hits = 0
    probe.prepared.clear()
    models: list[torch.nn.Module] = []

    def fresh() -> torch.nn.Module:
        torch.manual_seed(0)
        models.append(build_model(mcfg, data.input_shape, data.num_classes).to(device))
        return models[-1]

    steps = {
        "dpsgd": variant(probe, "dpsgd", flatpriv_step("dpsgd", fresh(), n, batch, "ghost")),
        "dpsat": variant(probe, "dpsat", flatpriv_step("dpsat", fresh(), n, batch)),
        "dpsat_library": variant(probe, "dpsat_library", flatpriv_step("dpsat", fresh(), n, batch)),
    }
    after_step, after_view = flatpriv_step("dpsat", fresh(), n, batch, with_state=True)
    steps["dpsat_point_after_step"] = variant(probe, "prepared", after_step, prepare_point(probe, after_view))
    untimed_step, untimed_view = flatpriv_step("dpsat", fresh(), n, batch, with_state=True)
    steps["dpsat_point_untimed"] = variant(probe, "prepared", untimed_step)
    untimed = {"dpsat_point_untimed": prepare_point(probe, untimed_view)}  # run before each step, outside its timer
    for step in steps.values():
        step(*batches[0])
    for v in probe.parts.values():
        v.clear()
    times = _time_interleaved(steps, batches, device, warmup, untimed, block)
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    same = all(torch.equal(p, q) for p, *others in zip(*(m.parameters() for m in models[1:])) for q in others)
    return {
        "median_step_ms": {k: round(v, 4) for k, v in med.items()},
        "dpsat_library_over_dpsgd": round(med["dpsat_library"] / med["dpsgd"], 3),
        "probed_dpsat_over_dpsgd": round(med["dpsat"] / med["dpsgd"], 3),
        "dpsat_point_after_step_over_dpsgd": round(med["dpsat_point_after_step"] / med["dpsgd"], 3),
        "dpsat_point_untimed_over_dpsgd": round(med["dpsat_point_untimed"] / med["dpsgd"], 3),
        "dpsat_extra_us": round((med["dpsat_library"] - med["dpsgd"]) * 1e3, 1),
        "point_cost_in_step_us": round((med["dpsat_library"] - med["dpsat_point_untimed"]) * 1e3, 1),
        "rest_of_dpsat_extra_us": round((med["dpsat_point_untimed"] - med["dpsgd"]) * 1e3, 1),
        "allowed_by_target_us": round(0.05 * med["dpsgd"] * 1e3, 1),
        "point_in_step_us": {k: round(statistics.median(v[warmup:]) * 1e6, 1) for k, v in probe.parts.items()},
        "point_alone_us": round(probe.point_alone(), 1),
        "point_alone_after_sweep_us": {
            f"{mib}_MiB": round(probe.point_alone(500, torch.zeros(mib * 2**18, device=device)), 1)
            for mib in SWEEPS_MIB
        },
        "same_weights": same,
        "prepared_points_used": probe.hits,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_allocator_flag(ap)
    ap.add_argument("--model", default="mlp,cnn1d", help="comma-separated: mlp, cnn1d")
    add_timing_flags(ap, steps=400, warmup=20, batch_size=256)
    a = ap.parse_args()
    kept = apply_allocator(a)
    device = torch.device(a.device)
    probe = Probe(dp_module.perturb)
    dp_module.perturb = probe.perturb  # the DP-SAT pipeline looks perturb up in its module at each step
    data, batches = mnist1d_batches(device, a.batch_size, a.steps)
    out: dict = {**step_header(a, kept), "models": {}}
    for mname in a.model.split(","):
        out["models"][mname] = measure(probe, MODELS[mname], data, batches, a.warmup, device, a.block)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
