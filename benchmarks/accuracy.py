"""Test accuracy of sgd / sam / vasso over seeds, through the public API (each run a real run directory).

Prints one JSON object with per-run numbers and mean ± sd, and a Markdown table on stderr.
Usage: python benchmarks/accuracy.py [--presets default,cnn1d] [--algorithms sgd,sam,vasso] [--seeds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile

from flatpriv.config_io import resolve
from flatpriv.train import train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", default="default,cnn1d")
    ap.add_argument("--algorithms", default="sgd,sam,vasso")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", default=None, help="parent of the run directories (default: a temporary one)")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    a = ap.parse_args()
    out = a.out or tempfile.mkdtemp(prefix="flatpriv-accuracy-")
    rows = []
    for preset in a.presets.split(","):
        for alg in a.algorithms.split(","):
            runs = []
            for seed in range(a.seeds):
                cfg, name = resolve(preset, overrides=[f"algorithm={alg}", f"seed={seed}", *a.overrides])
                s = train(cfg, name=name, out=out, quiet=True)
                runs.append(
                    {
                        k: s.get(k)
                        for k in (
                            "seed",
                            "test_accuracy",
                            "train_accuracy",
                            "wall_seconds",
                            "epsilon",
                            "noise_multiplier",
                            "run_dir",
                        )
                    }
                )
            acc = [r["test_accuracy"] for r in runs]
            rows.append(
                {
                    "preset": preset,
                    "model": cfg.model.name,
                    "algorithm": alg,
                    "epochs": cfg.train.epochs,
                    "test_accuracy_mean": statistics.mean(acc),
                    "test_accuracy_sd": statistics.stdev(acc) if len(acc) > 1 else 0.0,  # one seed: no sd
                    "wall_seconds_mean": statistics.mean(r["wall_seconds"] for r in runs),
                    "runs": runs,
                }
            )
            print(f"{preset} {alg}: {statistics.mean(acc):.4f} ± {rows[-1]['test_accuracy_sd']:.4f}", file=sys.stderr)
    print(
        "| preset | model | algorithm | epochs | ε (from summary.json) | test accuracy (mean ± sd) | wall s / run |",
        file=sys.stderr,
    )
    print("|---|---|---|---|---|---|---|", file=sys.stderr)
    for r in rows:
        eps = [x["epsilon"] for x in r["runs"] if x["epsilon"] is not None]
        eps_text = f"{max(eps):.3f}" if eps else "–"
        print(
            f"| {r['preset']} | {r['model']} | {r['algorithm']} | {r['epochs']} | {eps_text} | "
            f"{100 * r['test_accuracy_mean']:.1f} ± {100 * r['test_accuracy_sd']:.1f} % | "
            f"{r['wall_seconds_mean']:.1f} |",
            file=sys.stderr,
        )
    print(json.dumps({"seeds": a.seeds, "out": out, "rows": rows}))


if __name__ == "__main__":
    main()
