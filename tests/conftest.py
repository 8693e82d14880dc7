from __future__ import annotations

import pytest
import torch

# Two cores: more intra-op threads than that only thrash when pytest runs beside other work.
torch.set_num_threads(min(2, torch.get_num_threads()))

TINY = ["data.name=digits", "model.width=32", "model.depth=1", "train.epochs=2", "train.batch_size=64"]


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Generated data sets go to a per-session cache, never the user's."""
    monkeypatch.setenv("FLATPRIV_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
