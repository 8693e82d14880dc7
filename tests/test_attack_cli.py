"""`flatpriv attack` with RMIA, the LiRA variants, --references and the one-run audit, end to end on tiny pools."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from conftest import TINY

from flatpriv.analyses.attack import ATTACKS
from flatpriv.analyses.references import REFERENCE_ATTACKS
from flatpriv.cli.main import main


def _pool(tmp_path: Path, capsys, extra: list[str], *args: str) -> str:
    argv = [x for o in TINY + extra for x in ("--set", o)]
    assert main(["pool", *argv, *args, "--out", str(tmp_path), "--json"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])["run_dir"]


def test_attack_with_references_and_the_one_run_audit(tmp_path, capsys):
    run = _pool(
        tmp_path,
        capsys,
        ["train.epochs=8", "model.width=128"],
        "--models",
        "8",
        "--keep-mode",
        "bernoulli",
        "--canaries",
        "20",
    )
    out_dir = tmp_path / "a"
    assert main(["attack", run, "--bootstrap", "0", "--references", "1,2,7", "--out", str(out_dir)]) == 0
    printed = capsys.readouterr().out
    assert "rmia_online" in printed and "variants:" in printed and "heuristic" in printed
    s = json.loads((next(out_dir.iterdir()) / "summary.json").read_text())
    d = Path(s["run_dir"])
    assert {r["attack"] for r in s["table"]} == set(ATTACKS) and all(r["variant"] for r in s["table"])
    assert len(s["references"]) == 3 * len(REFERENCE_ATTACKS)
    assert (d / "plots" / "references.png").stat().st_size > 1000
    assert all(r["auc"] is None for r in s["references"] if r["references"] == 1 and "online" in r["attack"])
    full = {r["attack"]: r for r in s["references"] if r["references"] == 7}
    rows = {r["attack"]: r for r in s["table"]}
    for a in REFERENCE_ATTACKS:  # 7 references of 8 models = leave-one-out
        assert full[a]["auc"] == rows[a]["auc"], a
    assert rows["rmia_online"]["auc"] > 0.52 and rows["lira_online_fixed"]["auc"] > 0.52  # ~4 SE above chance
    for r in s["table"]:
        o = r["one_run"]
        assert 0 <= r["eps_one_run_model0"] <= r["eps_one_run_model0_ceiling"]
        assert 0 <= r["eps_one_run_pool"] <= r["eps_one_run_pool_ceiling"]
        assert o["pool"]["audited_models"] == 4 and o["pool"]["reference_models"] == 4
        assert o["canaries_pool"]["m"] == 4 * 20 and o["canaries_per_model"]["model0"]["m"] == 20
        assert "heuristic" in r["epsilon_lower_bound_kind"]
    assert np.load(d / "arrays" / "scores_rmia_offline_pool0.npy").shape == (8, 1347)
    # bad input: one line on stderr, exit code 2, nothing written
    for bad in (
        ["--references", "0"],
        ["--references", "1,8"],
        ["--references", "a,b"],
        ["--rmia-a", "2"],
        ["--rmia-gamma", "0"],
    ):
        assert main(["attack", run, *bad, "--out", str(tmp_path / "bad")]) == 2, bad
        assert capsys.readouterr().err.count("\n") == 1
    assert not (tmp_path / "bad").exists()


def test_exact_masks_get_no_one_run_audit_and_a_reason(tmp_path, capsys):
    run = _pool(tmp_path, capsys, [], "--models", "6")
    assert main(["attack", run, "--bootstrap", "0", "--rmia-a", "auto", "--out", str(tmp_path / "a"), "--json"]) == 0
    s = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert all(r["one_run"] is None and "eps_one_run_pool" not in r for r in s["table"])
    assert "--keep-mode bernoulli" in next(iter(s["audits"]["notes"].values()))
    assert 0 <= json.loads((Path(s["run_dir"]) / "config.json").read_text())["rmia"]["offline_a"] <= 1


def test_one_run_bounds_stay_below_the_accountants_epsilon_on_a_dp_pool(tmp_path, capsys):
    dp = ["algorithm=dpsgd", "privacy.target_epsilon=2", "model.width=64", "train.epochs=2", "optim.lr=0.5"]
    run = _pool(tmp_path, capsys, dp, "--models", "8", "--keep-mode", "bernoulli")
    assert main(["attack", run, "--bootstrap", "0", "--out", str(tmp_path / "a"), "--json"]) == 0
    s = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for r in s["table"]:
        assert r["accountant_epsilon"] is not None and r["delta"] > 0
        o = r["one_run"]
        assert o["per_model"]["max_over_models"] <= r["accountant_epsilon"], r["attack"]
        assert r["eps_one_run_pool"] <= r["accountant_epsilon"], r["attack"]
