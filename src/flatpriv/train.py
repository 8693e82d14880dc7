"""Train one model: data resident on the device, batches as index gathers, a checkpoint every epoch.

One step: ``g, state, loss = pipeline.grad(params, state, x_B, y_B)``; ``p.grad = g``; ``optimizer.step()``.
A run interrupted and resumed from its last checkpoint ends with the same weights as an uninterrupted one:
the checkpoint holds the weights, the optimizer, the schedule, the pipeline state (e.g. VaSSO's d) and the
batch-order generator.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import checkpoint, results
from .config import USER, Config, config_from_dict, config_to_dict
from .data import Dataset, load_data
from .data import augment as aug
from .errors import FlatprivError
from .memorization.curvature import input_curvatures
from .models import build_model, count_parameters, evaluate, predict, resolve_device, synchronize
from .privacy.privatizer import PrivateRun, privacy_summary, setup_privacy
from .privacy.sampling import noise_source
from .privacy.validate import validate_model
from .progress import Progress
from .step import Pipeline, get_algorithm, make_optimizer, take_step
from .step.averaging import RunAverage

CHECKPOINT = checkpoint.CHECKPOINT


@dataclass
class Setup:
    cfg: Config
    data: Dataset
    model: torch.nn.Module
    pipeline: Pipeline
    optimizer: torch.optim.Optimizer
    scheduler: Any
    steps_per_epoch: int
    private: PrivateRun | None  # DP and Noisy-SGD runs: rates, σ, generators, ledger
    average: RunAverage | None = None  # SWA: the weight average the run evaluates and saves
    supplied: dict[str, Any] | None = None  # flatpriv.fit: what the given model and data were (resume checks it)

    @property
    def evaluated(self) -> torch.nn.Module:
        """The model the run evaluates and saves: SWA's average once it holds a snapshot, else the trained one."""
        return self.average.model(self.model) if self.average else self.model


def prepare(
    cfg: Config,
    subset: torch.Tensor | None = None,
    model: torch.nn.Module | Callable[[], torch.nn.Module] | None = None,
    data: Dataset | None = None,
) -> Setup:
    """Everything that can fail on bad input happens here, before any run directory is created.

    ``subset``: train on these training-set positions only (a pool member's keep mask, as a single run).
    ``model``, ``data`` (flatpriv.fit): used instead of building cfg.model and loading cfg.data; a zero-argument
    function for ``model`` is called where the config path builds its model, right after seeding torch.
    A DP row checks the model first (:func:`flatpriv.privacy.validate_model`).
    """
    device = resolve_device(cfg.train.device)
    algorithm = get_algorithm(cfg.algorithm)
    if (model is None and cfg.model.name == USER) or (data is None and cfg.data.name == USER):
        raise FlatprivError(
            "this run's model and data were passed to flatpriv.fit: continue it with "
            "flatpriv.fit(model, train_data, test_data, resume=RUN_DIR)"
        )
    data = load_data(cfg.data, device) if data is None else data.to(device)
    if subset is not None:
        data = data.subset(subset)
    n = len(data.y_train)
    aug.check(cfg.augment, algorithm.kind == "dp", data.input_shape)
    private = setup_privacy(cfg, algorithm, n, device)
    torch.manual_seed(cfg.seed)
    if model is None:
        model = build_model(cfg.model, data.input_shape, data.num_classes)
    elif not isinstance(model, torch.nn.Module):
        model = model()
    model = model.to(device)
    if algorithm.private:
        validate_model(model)
    steps_per_epoch = private.steps_per_epoch if private else math.ceil(n / cfg.train.batch_size)
    optimizer, scheduler = make_optimizer(cfg, list(model.parameters()), steps_per_epoch * cfg.train.epochs)
    pipeline = algorithm.pipeline(cfg, model, private, total_steps=steps_per_epoch * cfg.train.epochs)
    average = RunAverage(cfg, model) if algorithm.averages else None
    return Setup(cfg, data, model, pipeline, optimizer, scheduler, steps_per_epoch, private, average)


def _save_checkpoint(run_dir: Path, s: Setup, epoch: int, state: Any, gen: torch.Generator, elapsed: float) -> None:
    checkpoint.save(run_dir, checkpoint.run_state(s, epoch, state, gen, elapsed), config_to_dict(s.cfg))


def _loop(
    s: Setup,
    run_dir: Path,
    start_epoch: int,
    state: Any,
    gen: torch.Generator,
    elapsed: float,
    console: Progress,
    record: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Epochs ``start_epoch`` .. the last, then the final files; returns summary.json with ``finished: true``.

    Interrupted (Ctrl-C) it returns ``finished: false`` with the last epoch whose checkpoint was saved, so the caller
    can say how to resume (or that nothing can be resumed yet); the run directory stays resumable."""
    try:
        return _epochs(s, run_dir, start_epoch, state, gen, elapsed, console, record)
    except KeyboardInterrupt:  # what can be resumed is what the (atomically replaced) checkpoint on disk holds
        ckpt = run_dir / CHECKPOINT
        epoch = int(checkpoint.load(run_dir, config_to_dict(s.cfg))["epoch"]) if ckpt.exists() else 0
        return {"finished": False, "interrupted_after_epoch": epoch, "run_dir": str(run_dir)}


def _epochs(
    s: Setup,
    run_dir: Path,
    start_epoch: int,
    state: Any,
    gen: torch.Generator,
    elapsed: float,
    console: Progress,
    record: dict[str, Any] | None,
) -> dict[str, Any]:
    cfg, data = s.cfg, s.data
    params = dict(s.model.named_parameters())
    n = len(data.y_train)
    bs = cfg.train.batch_size
    t0 = time.perf_counter() - elapsed
    record = dict(record or {})
    bar = console.epochs(f"train {cfg.algorithm}", start_epoch, cfg.train.epochs)
    train_seconds = float(record.get("train_seconds", 0.0))
    for epoch in bar:
        loss_sum = torch.zeros((), device=data.x_train.device)
        losses = []
        t_steps = time.perf_counter()
        for j, idx in enumerate(_batches(s, gen, n, bs)):
            x = aug.batch(data, idx, cfg.augment, cfg.seed, epoch * s.steps_per_epoch + j)
            state, loss = take_step(s.pipeline, params, state, s.optimizer, x, aug.labels(data, idx))
            if s.scheduler is not None:
                s.scheduler.step()
            loss_sum += loss * len(idx)
            losses.append(loss.detach())
        synchronize(data.x_train.device)
        train_seconds += time.perf_counter() - t_steps  # sampling and steps alone: what Opacus's loop times
        checkpoint.check_finite(losses, params, epoch, s.steps_per_epoch, run_dir)
        if s.average:
            s.average.after_epoch(epoch, s.model)
        train_loss, train_acc = evaluate(s.evaluated, data.x_train, data.y_train, cfg.train.eval_batch_size)
        test_loss, test_acc = evaluate(s.evaluated, data.x_test, data.y_test, cfg.train.eval_batch_size)
        record = {
            "epoch": epoch + 1,
            "step": (epoch + 1) * s.steps_per_epoch,
            "lr": s.optimizer.param_groups[0]["lr"],
            "minibatch_loss": loss_sum.item() / n,
            "train_loss": train_loss,
            "train_accuracy": train_acc,
            "test_loss": test_loss,
            "test_accuracy": test_acc,
            "epsilon": s.private.epsilon() if s.private else None,
            "wall_seconds": time.perf_counter() - t0,
            "train_seconds": train_seconds,
        }
        if s.private:
            results.write_json(run_dir / "privacy_ledger.json", s.private.privatizer.ledger.to_dict())
        k = cfg.train.curvature_every
        if k and (epoch + 1) % k == 0:  # averaged over training later: end-of-training curvature alone misleads
            curv = input_curvatures(  # 'norm' (the authors' default) and the other two from the same probes
                s.evaluated,
                data.x_train,
                data.y_train,
                n_probes=cfg.train.curvature_probes,
                generator=torch.Generator().manual_seed(cfg.seed),
            )
            for variant, c in curv.items():
                prefix = "curvature" if variant == "norm" else f"curvature_{variant}"
                results.save_array(run_dir, f"{prefix}_epoch_{epoch + 1:04d}", c.numpy())
        results.append_jsonl(run_dir / "metrics.jsonl", record)
        _save_checkpoint(run_dir, s, epoch + 1, state, gen, record["wall_seconds"])
        console.epoch_done(bar, record, cfg.train.epochs)  # the bar's figures; the log line when due
    bar.close()
    return _finish(s, run_dir, record)


def _finish(s: Setup, run_dir: Path, last: dict[str, Any]) -> dict[str, Any]:
    cfg, data = s.cfg, s.data
    if cfg.train.save_model:
        results.write_file(run_dir / "model.pt", lambda f: torch.save(s.evaluated.state_dict(), f))
    if cfg.train.save_logits:
        for split, x in (("train", data.x_train), ("test", data.x_test)):
            if not len(x):  # fit without test data
                continue
            logits = predict(s.evaluated, x, cfg.train.eval_batch_size)
            results.save_array(run_dir, f"{split}_logits", logits.cpu().numpy().astype(np.float32))
    for name, arr in data.arrays().items():
        results.save_array(run_dir, name, arr)
    summary = {
        "algorithm": cfg.algorithm,
        "dataset": cfg.data.name,
        "model": cfg.model.name,
        "num_parameters": count_parameters(s.model),
        "seed": cfg.seed,
        "test_accuracy": last["test_accuracy"],
        "train_accuracy": last["train_accuracy"],
        "test_loss": last["test_loss"],
        "train_loss": last["train_loss"],
        **(
            s.private.summary(
                last["epsilon"], cfg.privacy.clip_norm, noise_source(cfg.privacy.secure_rng, cfg.privacy.noise_seed)
            )
            if s.private
            else privacy_summary("plain")
        ),
        "epochs": cfg.train.epochs,
        "steps": last["step"],
        "wall_seconds": round(last["wall_seconds"], 3),
        "train_seconds": round(last.get("train_seconds", last["wall_seconds"]), 3),
        "run_dir": str(run_dir),
        "finished": True,
    }
    results.write_json(run_dir / "summary.json", summary)
    (run_dir / CHECKPOINT).unlink(missing_ok=True)
    return summary


def _batches(s: Setup, gen: torch.Generator, n: int, bs: int) -> Any:
    """Shuffled fixed-size batches, or for DP runs Poisson samples (sizes vary; an empty batch still steps)."""
    if s.private is not None and s.private.accounted:
        for _ in range(s.steps_per_epoch):
            yield s.private.poisson_batch(n).to(s.data.x_train.device)
        return
    perm = torch.randperm(n, generator=gen).to(s.data.x_train.device)
    yield from (perm[i : i + bs] for i in range(0, n, bs))


def train(
    cfg: Config,
    name: str = "custom",
    out: str | Path = "runs",
    quiet: bool = False,
    subset: torch.Tensor | None = None,
    setup: Setup | None = None,
    log_every: int | None = 0,
) -> dict[str, Any]:
    """Train one model into a new run directory under ``out``; returns summary.json's contents (``finished: true``),
    or after Ctrl-C ``finished: false``, ``interrupted_after_epoch`` and the run directory to resume.

    ``subset`` trains on those training positions only (not resumable: the subset is not saved). ``setup``: what
    :func:`prepare` made of ``cfg`` already (flatpriv.fit, with its own model and data). ``quiet``: no epoch bar
    (it shows only on a terminal anyway); ``log_every``: a line every N epochs and after the last on stdout
    (:mod:`flatpriv.progress`).
    """
    console = Progress.of(quiet, log_every)
    s = setup if setup is not None else prepare(cfg, subset)
    with results.discard_on_os_error():  # a full disk before the first checkpoint leaves no directory behind
        run_dir = results.new_run_dir(out, "train", name)
        with results.locked(run_dir):
            results.write_json(run_dir / "config.json", config_to_dict(cfg))
            supplied = {"user_supplied": s.supplied} if s.supplied else {}  # flatpriv.fit's model and data
            prov = results.provenance(str(s.data.x_train.device))
            results.write_json(run_dir / "provenance.json", {**prov, **supplied})
            gen = torch.Generator().manual_seed(cfg.seed)
            state = s.pipeline.init(dict(s.model.named_parameters()))
            out_summary = _loop(s, run_dir, 0, state, gen, 0.0, console)
    out_summary.setdefault("run_dir", str(run_dir))
    return out_summary


def resume(
    run_dir: str | Path,
    quiet: bool = False,
    model: torch.nn.Module | None = None,
    data: Dataset | None = None,
    supplied: dict[str, Any] | None = None,
    log_every: int | None = 0,
) -> dict[str, Any]:
    """Continue an interrupted run from its last epoch checkpoint, in the same run directory. A flatpriv.fit run
    needs its ``model`` and ``data`` again, and ``supplied`` (their description) must equal the run's."""
    console = Progress.of(quiet, log_every)
    run_dir = Path(run_dir)
    if not results.is_run_dir(run_dir):
        raise FlatprivError(f"--resume {run_dir}: not a run directory (no config.json)")
    with results.locked(run_dir):  # the checks below too: another writer may be finishing the run right now
        return _resume(run_dir, console, model, data, supplied)


def _resume(
    run_dir: Path, shown: Progress, model: torch.nn.Module | None, data: Dataset | None, supplied: dict[str, Any] | None
) -> dict[str, Any]:
    if (run_dir / "summary.json").exists():
        raise FlatprivError(f"--resume {run_dir}: this run already finished (summary.json exists)")
    ckpt_path = run_dir / CHECKPOINT
    if not ckpt_path.exists():
        raise FlatprivError(f"--resume {run_dir}: no {CHECKPOINT} (the run stopped before its first epoch ended)")
    cfg_dict = results.read_json(run_dir / "config.json")
    ckpt = checkpoint.load(run_dir, cfg_dict)  # before prepare: an edited config is refused, never built
    s = prepare(config_from_dict(cfg_dict), model=model, data=data)
    if ckpt.get("supplied") != supplied:  # flatpriv.fit: another model or other data than the run's
        keys = checkpoint.changed_keys(ckpt.get("supplied") or {}, supplied or {})
        raise FlatprivError(f"--resume {run_dir}: the model or data differ from the run's ({', '.join(keys[:6])})")
    s.supplied = supplied
    device = s.data.x_train.device
    gen, epoch, elapsed = checkpoint.restore(s, ckpt, ckpt_path)
    metrics = [m for m in results.read_jsonl(run_dir / "metrics.jsonl") if m.get("epoch", 0) <= epoch]
    if len(metrics) != epoch:
        raise FlatprivError(f"--resume {run_dir}: metrics.jsonl has {len(metrics)} of the {epoch} checkpointed epochs")
    results.write_jsonl(run_dir / "metrics.jsonl", metrics)
    state = checkpoint.to_device(ckpt["pipeline_state"], device)
    last = metrics[-1] if metrics else None  # an interrupt during the final writes: _finish needs it again
    out_summary = _loop(s, run_dir, epoch, state, gen, elapsed, shown, last)
    out_summary.setdefault("run_dir", str(run_dir))
    return out_summary
