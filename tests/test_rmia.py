"""RMIA (attacks/rmia.py) and LiRA as its reference code scores it (attacks/lira_variants.py), each against a
direct transcription of its formula on random arrays."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import norm

from flatpriv.attacks import lira, lira_variants, metrics, rmia
from flatpriv.errors import FlatprivError
from flatpriv.privacy import one_run


def _probs(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.beta(2.0, 2.0, shape)


def _brute_rmia(px, pz, ref_px, ref_keep, ref_pz, online, gamma, a):
    """The paper's definition as written: P(x), P(z), the N × |Z| matrix of LR(x, z), the fraction above γ."""
    n = px.size
    big_px = np.empty(n)
    for i in range(n):
        ins, outs = ref_px[ref_keep[:, i], i], ref_px[~ref_keep[:, i], i]
        if online:
            big_px[i] = 0.5 * (ins.mean() + outs.mean()) if ins.size and outs.size else np.nan
        else:
            big_px[i] = 0.5 * ((1 + a) * outs.mean() + (1 - a)) if outs.size else np.nan
    big_pz = ref_pz.mean(axis=0)
    lr = (px / big_px)[:, None] / (pz / big_pz)[None, :]  # N × |Z|
    return np.where(np.isnan(big_px), np.nan, (lr > gamma).mean(axis=1))


@pytest.mark.parametrize("online,gamma,a", [(True, 2.0, 0.3), (False, 2.0, 0.3), (True, 1.0, 0.0), (False, 1.5, 1.0)])
def test_rmia_equals_the_brute_force_matrix(online: bool, gamma: float, a: float):
    rng = np.random.default_rng(0)
    k, n, nz = 7, 300, 211
    keep = rng.random((k, n)) < 0.5
    keep[:, 0] = True  # no OUT reference for example 0 (NaN for every target)
    px, pz = _probs(rng, (k, n)), _probs(rng, (k, nz))
    loo = rmia.RMIA(online=online, gamma=gamma, offline_a=a).leave_one_out(keep, px, pz)
    for t in range(k):
        o = np.arange(k) != t
        want = _brute_rmia(px[t], pz[t], px[o], keep[o], pz[o], online, gamma, a)
        got = rmia.rmia_scores(px[t], pz[t], px[o], keep[o], pz[o], online, gamma, a)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        np.testing.assert_allclose(got, want, atol=1e-12)
        np.testing.assert_allclose(loo[t], want, atol=1e-12)
    assert np.isnan(loo[:, 0]).all() and np.isfinite(loo[:, 1:]).sum() > 0.9 * loo[:, 1:].size


def test_rmia_finds_members_and_the_signal_has_a_temperature():
    rng = np.random.default_rng(1)
    k, n, nz, c = 16, 800, 400, 5
    keep = rng.random((k, n)) < 0.5
    base = rng.normal(size=(n, c))
    logits = base[None] + rng.normal(0, 0.5, (k, n, c))
    labels = rng.integers(0, c, n)
    logits[np.arange(k)[:, None], np.arange(n)[None], labels[None]] += 1.5 * keep  # members more confident
    test_logits = rng.normal(size=(1, nz, c)) + rng.normal(0, 0.5, (k, nz, c))
    test_labels = rng.integers(0, c, nz)
    px, pz = rmia.rmia_signal(logits, labels), rmia.rmia_signal(test_logits, test_labels)
    for online in (True, False):
        s = rmia.RMIA(online=online).leave_one_out(keep, px, pz)
        assert metrics.auc(s, keep) > 0.75, online
    hot = rmia.rmia_signal(logits, labels, temperature=2.0)
    z = logits / 2.0
    want = np.exp(z[..., :] - z.max(-1, keepdims=True))
    want = (want / want.sum(-1, keepdims=True))[np.arange(k)[:, None], np.arange(n)[None], labels[None]]
    np.testing.assert_allclose(hot, want, rtol=1e-12)
    a = rmia.choose_offline_a(keep, px, pz)
    assert 0 <= a <= 1
    with pytest.raises(FlatprivError):
        rmia.RMIA(gamma=0.0)
    with pytest.raises(FlatprivError):
        rmia.rmia_signal(logits, labels, temperature=0.0)
    with pytest.raises(FlatprivError):
        rmia.RMIA().leave_one_out(keep, px, pz[:, :0])


def _naive_medians(phi, keep):
    mu_in = np.array([np.median(phi[keep[:, i], i]) for i in range(phi.shape[1])])
    mu_out = np.array([np.median(phi[~keep[:, i], i]) for i in range(phi.shape[1])])
    return mu_in, mu_out


def test_lira_variants_equal_a_direct_transcription():
    """Each variant, per target with the other models as shadows, against its formula written out with
    np.median, np.std and scipy.stats.norm; the vectorised leave-one-out path must agree."""
    rng = np.random.default_rng(2)
    k, n = 9, 120
    keep = rng.random((k, n)).argsort(axis=0) < rng.integers(4, 6, n)  # 4 or 5 of 9 models IN: >= 3 per side
    phi = rng.normal(0, 2, n) + keep + rng.normal(size=(k, n))
    variants = {
        "ref_fixed": lira_variants.LiRARefFixed(),
        "two_sided": lira_variants.LiRATwoSided(),
        "two_sided_fixed": lira_variants.LiRATwoSided(fixed_variance=True),
        "paper_fixed": lira.LiRA(online=True, fixed_variance=True),
        "paper_offline": lira.LiRA(online=False, fixed_variance=False),
    }
    loo = {name: v.leave_one_out(keep, phi) for name, v in variants.items()}
    for t in range(k):
        o = np.arange(k) != t
        sh, kp, x = phi[o], keep[o], phi[t]
        mu_in, mu_out = _naive_medians(sh, kp)
        ins = [sh[kp[:, i], i] for i in range(n)]
        outs = [sh[~kp[:, i], i] for i in range(n)]
        # reference code, fixed variance: one std of all IN values, for both sides
        s = np.std(np.concatenate(ins))
        want = {"ref_fixed": norm.logpdf(x, mu_in, s) - norm.logpdf(x, mu_out, s)}
        # reference code, offline: -log N(phi; mu_out, std_out), per example (np.std) or of all OUT values
        want["two_sided"] = -norm.logpdf(x, mu_out, np.array([np.std(v) for v in outs]))
        want["two_sided_fixed"] = -norm.logpdf(x, mu_out, np.std(np.concatenate(outs)))
        # the paper, fixed variance: pooled within-example std per side
        pooled = [
            np.sqrt(sum(((v - v.mean()) ** 2).sum() for v in side) / sum(v.size - 1 for v in side))
            for side in (ins, outs)
        ]
        want["paper_fixed"] = norm.logpdf(x, mu_in, pooled[0]) - norm.logpdf(x, mu_out, pooled[1])
        # the paper, offline: one-sided, log Phi((phi - mu_out) / sigma_out), ddof 1
        want["paper_offline"] = norm.logcdf((x - mu_out) / np.array([np.std(v, ddof=1) for v in outs]))
        for name, v in variants.items():
            np.testing.assert_allclose(v(x, sh, kp), want[name], rtol=1e-9, atol=1e-9, err_msg=name)
            np.testing.assert_allclose(loo[name][t], want[name], rtol=1e-8, atol=1e-8, err_msg=name)
    # the two-sided statistic is not the one-sided one: far below mu_out it calls "member", the paper's does not
    assert metrics.auc(loo["two_sided"], keep) != pytest.approx(metrics.auc(loo["paper_offline"], keep), abs=1e-6)


def test_new_array_modules_never_import_torch_or_training_code():
    allowed = set(sys.stdlib_module_names) | {"numpy", "scipy", "sklearn"}
    relative = {(1, "lira"), (1, "metrics"), (1, "scores"), (2, "errors")}
    for module in (rmia, lira_variants, one_run):
        path = Path(module.__file__)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                roots = {node.module.split(".")[0]}
            elif isinstance(node, ast.ImportFrom):
                assert (node.level, node.module) in relative, f"{path}: {(node.level, node.module)}"
                continue
            else:
                continue
            assert roots <= allowed, f"{path.name} imports {roots - allowed}"
