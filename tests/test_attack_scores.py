"""The vectorised per-class leave-one-out calibration equals K separate calibrations."""

from __future__ import annotations

from functools import partial

import numpy as np

from flatpriv.attacks.lira import leave_one_out
from flatpriv.attacks.scores import per_class_calibrate, per_class_leave_one_out


def test_per_class_leave_one_out_equals_the_generic_loop():
    rng = np.random.default_rng(0)
    k, n = 7, 300
    keep = rng.random((k, n)) < 0.5
    labels = rng.integers(0, 4, n)
    labels[:3] = 4  # a tiny class: fewer reference scores than min_count for some targets
    stat = rng.normal(size=(k, n)) + keep + labels
    fast, members = per_class_leave_one_out(keep, stat, labels, min_count=3)
    slow, _ = leave_one_out(keep, stat, partial(per_class_calibrate, labels=labels, min_count=3))
    np.testing.assert_allclose(fast, slow, rtol=1e-9, atol=1e-9)
    assert (members == keep).all()
