"""The user's data as resident tensors, and what a run records of the user's model and data.

:func:`as_tensors` reads a pair ``(x, y)`` (tensors or numpy arrays), a ``TensorDataset`` of two tensors, or any
map-style ``torch.utils.data.Dataset`` whose items are ``(x, y)`` pairs (read once, in order, through a
``DataLoader`` with the default collation; then training never touches the Dataset again: batches are index
gathers, as for flatpriv's own data). Labels must be integer class indices. :func:`describe` is what
provenance.json and every checkpoint record of them (class, parameter shapes, data shapes and a SHA-256 of the
data), so that a resume with another model or other data is refused.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

from ..config import MAX_EXAMPLES, USER
from ..data import Dataset
from ..errors import FlatprivError

Data = Any  # (x, y) tensors or arrays | TensorDataset | a map-style torch Dataset of (x, y) items
_READ_BATCH = 512


def _first_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:160]}"


def _read(data: Any, what: str) -> tuple[Any, Any]:
    if isinstance(data, (tuple, list)):
        if len(data) != 2:
            raise FlatprivError(f"{what}: a pair (x, y) is expected, got a {type(data).__name__} of {len(data)}")
        return data[0], data[1]
    if isinstance(data, TensorDataset):
        if len(data.tensors) != 2:
            raise FlatprivError(f"{what}: a TensorDataset of two tensors (x, y) is expected, got {len(data.tensors)}")
        return data.tensors
    if isinstance(data, IterableDataset) or not (hasattr(data, "__getitem__") and hasattr(data, "__len__")):
        raise FlatprivError(
            f"{what}: expected (x, y) tensors or a map-style torch Dataset (len, indexing), got {type(data).__name__}"
        )
    xs, ys = [], []
    try:
        for batch in DataLoader(data, batch_size=_READ_BATCH, shuffle=False, num_workers=0):
            if not isinstance(batch, (tuple, list)) or len(batch) != 2:
                raise FlatprivError(f"{what}: each item must be a pair (x, y); got {type(batch).__name__}")
            xs.append(torch.as_tensor(batch[0]))
            ys.append(torch.as_tensor(batch[1]))
    except FlatprivError:
        raise
    except Exception as e:  # whatever the user's __getitem__ or collation raised, as one line
        raise FlatprivError(f"{what}: reading the Dataset failed ({_first_line(e)})") from e
    if not xs:
        raise FlatprivError(f"{what}: the Dataset is empty")
    return torch.cat(xs), torch.cat(ys)


def as_tensors(data: Data, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``data`` as (x [N, ...], y [N] int64), detached; refused in one line if it is not that."""
    raw_x, raw_y = _read(data, what)
    try:
        x, y = torch.as_tensor(raw_x).detach(), torch.as_tensor(raw_y).detach()
    except (TypeError, ValueError, RuntimeError) as e:
        raise FlatprivError(f"{what}: x and y must be tensors or arrays ({_first_line(e)})") from e
    if x.dim() < 1 or y.dim() != 1 or len(x) != len(y):
        raise FlatprivError(
            f"{what}: need x of shape [N, ...] and y of shape [N]; got {list(x.shape)}, {list(y.shape)}"
        )
    if y.dtype == torch.bool or y.is_floating_point() or y.is_complex():
        raise FlatprivError(f"{what}: labels y must be integer class indices, got dtype {y.dtype}")
    if len(y) > MAX_EXAMPLES:
        raise FlatprivError(f"{what}: {len(y)} examples, more than {MAX_EXAMPLES:.0e} held in memory")
    if len(y) and int(y.min()) < 0:
        raise FlatprivError(f"{what}: labels must be >= 0, found {int(y.min())}")
    return x, y.long()


def user_dataset(train_data: Data, test_data: Data | None) -> Dataset:
    """A :class:`flatpriv.data.Dataset` named "user" from the given data; no test data gives an empty test set."""
    x, y = as_tensors(train_data, "train_data")
    if len(y) == 0:
        raise FlatprivError("train_data: no examples")
    if test_data is None:
        xt, yt = x[:0], y[:0]
    else:
        xt, yt = as_tensors(test_data, "test_data")
        if xt.shape[1:] != x.shape[1:] or xt.dtype != x.dtype:
            raise FlatprivError(
                f"test_data: examples of shape {list(xt.shape[1:])} ({xt.dtype}) but train_data's are "
                f"{list(x.shape[1:])} ({x.dtype})"
            )
    classes = int(max(int(y.max()), int(yt.max()) if len(yt) else 0)) + 1
    return Dataset(
        name=USER,
        x_train=x,
        y_train=y,
        x_test=xt,
        y_test=yt,
        num_classes=classes,
        input_shape=tuple(x.shape[1:]),
        train_index=torch.arange(len(y), dtype=torch.int64),
        test_index=torch.arange(len(yt), dtype=torch.int64),
    )


def _digest(*tensors: torch.Tensor) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def describe(model: nn.Module, data: Dataset) -> dict[str, Any]:
    """What a run records of a user-supplied model and data (provenance.json's ``user_supplied``, the checkpoint)."""
    cls = type(model)

    def split(x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        return {
            "x": list(x.shape),
            "x_dtype": str(x.dtype).removeprefix("torch."),
            "y": list(y.shape),
            "sha256": _digest(x, y),
        }

    return {
        "model": {
            "class": f"{cls.__module__}.{cls.__qualname__}",
            "num_parameters": sum(p.numel() for p in model.parameters()),
            "parameters": {name: list(p.shape) for name, p in model.named_parameters()},
        },
        "data": {
            "train": split(data.x_train, data.y_train),
            "test": split(data.x_test, data.y_test),
            "num_classes": data.num_classes,
        },
    }
