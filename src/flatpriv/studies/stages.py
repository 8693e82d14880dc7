"""The one kind of stage every study trains with: a single run or a pool, from a preset and ``--set`` overrides,
into the study's run directory (``runs/`` or ``pools/``); Ctrl-C inside it leaves the stage unfinished."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..config_io import resolve
from ..pools import train_pool
from ..train import train
from .runner import Context, Stage


def training_stage(
    name: str,
    overrides: list[str],
    models: int | None = None,
    *,
    preset: str = "default",
    keep_fraction: float = 0.5,
    save_weights: bool = False,
) -> Stage:
    """A pool of ``models`` (keep ``keep_fraction`` of the data each; 1: a seed sweep) or, with ``models`` None,
    one run; its record keeps the summary, the run directory and the overrides."""

    def run(ctx: Context) -> dict[str, Any]:
        cfg, _ = resolve(preset=preset, overrides=overrides + [f"train.device={ctx.device}"])
        if models is None:
            summary = train(cfg, name=name, out=ctx.run_dir / "runs", quiet=ctx.quiet)
        else:
            summary = train_pool(
                cfg,
                models,
                keep_fraction=keep_fraction,
                name=name,
                out=ctx.run_dir / "pools",
                quiet=ctx.quiet,
                backend=ctx.backend,
                save_weights=save_weights,
            )
        if not summary.get("finished", True):  # Ctrl-C inside the run or pool: the stage is not finished
            raise KeyboardInterrupt
        return {"run_dir": summary["run_dir"], "summary": summary, "overrides": overrides}

    return Stage(name, run, "pool" if models is not None else "run")


def sharpness_stage(pools: Callable[[dict[str, Any]], list[str]]) -> Callable[[Context], dict[str, Any]]:
    """λ_max and tr ∇²L of the first ``sharpness_models`` models of each finished pool stage ``pools(settings)``
    names (pools saved with weights), with the settings ``sharpness_subset``, ``_iters``, ``_probes`` and ``seed``."""

    def run(ctx: Context) -> dict[str, Any]:
        from ..analyses.sharpness import pool_sharpness

        s = ctx.settings
        return {
            "pools": {
                name: pool_sharpness(
                    ctx.done[name]["run_dir"],
                    s["sharpness_models"],
                    subset=s["sharpness_subset"],
                    iters=s["sharpness_iters"],
                    probes=s["sharpness_probes"],
                    seed=s["seed"],
                )
                for name in pools(s)
            }
        }

    return run
