"""Model zoo: MLP, 1-D CNN, 2-D CNN and a small ResNet, all safe for per-example gradients.

Every model avoids BatchNorm (GroupNorm or nothing instead), in-place operations and buffers, so that
``torch.func.functional_call``, ``torch.func.vmap`` over single examples and ``torch.func.stack_module_state``
over several models all work. Parameters get PyTorch's default initialisation: call ``torch.manual_seed``
before :func:`build_model` to fix them.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from .config import ModelConfig
from .errors import FlatprivError

MODELS: tuple[str, ...] = ("mlp", "cnn1d", "cnn2d", "resnet")
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}
NORMS: tuple[str, ...] = ("group", "none")
MAX_CHANNELS = 2**16  # the widest layer
MAX_PARAMETERS = 10**9


def _act(name: str) -> nn.Module:
    return ACTIVATIONS[name]()


def _norm(cfg: ModelConfig, channels: int) -> nn.Module:
    """GroupNorm with gcd(cfg.groups, channels) groups, or Identity when ``cfg.norm == "none"``."""
    if cfg.norm == "none":
        return nn.Identity()
    return nn.GroupNorm(math.gcd(cfg.groups, channels), channels)


def _halve(size: int) -> int:
    """Spatial size after a 3x3 stride-2 padding-1 conv (equals AvgPool2d(2) for even sizes)."""
    return (size + 1) // 2


class MLP(nn.Module):
    """Flatten → ``depth`` × (Linear(width) → act) → Linear head."""

    def __init__(self, cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten(start_dim=1)]
        features = math.prod(input_shape)
        for _ in range(cfg.depth):
            layers += [nn.Linear(features, cfg.width), _act(cfg.activation)]
            features = cfg.width
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class CNN1d(nn.Module):
    """``depth`` × (Conv1d(k5, s2, p2, width) → norm → act) → flatten → Linear head.

    Takes [B, L] (a channel dim is added) or [B, C, L].
    """

    def __init__(self, cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        channels, length = (1, input_shape[0]) if len(input_shape) == 1 else input_shape
        layers: list[nn.Module] = []
        for _ in range(cfg.depth):
            layers += [
                nn.Conv1d(channels, cfg.width, kernel_size=5, stride=2, padding=2),
                _norm(cfg, cfg.width),
                _act(cfg.activation),
            ]
            channels, length = cfg.width, (length - 1) // 2 + 1
        layers.append(nn.Flatten(start_dim=1))
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels * length, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            x = x.unsqueeze(1)
        return self.head(self.features(x))


class CNN2d(nn.Module):
    """``depth`` × (Conv2d(3x3, width·2^i) → norm → act → [AvgPool2d(2)]) → Linear(128) → act → head.

    Pooling is skipped in a block where it would take the spatial size below 2.
    """

    def __init__(self, cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        channels, height, width = input_shape
        layers: list[nn.Module] = []
        for i in range(cfg.depth):
            out = cfg.width * 2**i
            layers += [nn.Conv2d(channels, out, 3, padding=1), _norm(cfg, out), _act(cfg.activation)]
            if min(height, width) // 2 >= 2:
                layers.append(nn.AvgPool2d(2))
                height, width = height // 2, width // 2
            channels = out
        layers.append(nn.Flatten(start_dim=1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Linear(channels * height * width, 128), _act(cfg.activation), nn.Linear(128, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class BasicBlock(nn.Module):
    """conv3x3(stride) → norm → act → conv3x3 → norm, + shortcut (1x1 conv + norm on shape change) → act."""

    def __init__(self, cfg: ModelConfig, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1)
        self.norm1 = _norm(cfg, out_channels)
        self.act1 = _act(cfg.activation)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.norm2 = _norm(cfg, out_channels)
        self.act2 = _act(cfg.activation)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride), _norm(cfg, out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        out = out + self.shortcut(x)  # not in-place: keeps vmap / per-example gradients working
        return self.act2(out)


class ResNet(nn.Module):
    """Stem conv3x3(width) → norm → act → ``depth`` stages of one BasicBlock (width·2^i) → GAP → Linear head.

    Stage i > 0 has stride 2 unless that would take the spatial size below 2.
    """

    def __init__(self, cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        channels, height, width = input_shape
        self.stem = nn.Sequential(
            nn.Conv2d(channels, cfg.width, 3, padding=1), _norm(cfg, cfg.width), _act(cfg.activation)
        )
        channels = cfg.width
        blocks: list[nn.Module] = []
        for i in range(cfg.depth):
            out = cfg.width * 2**i
            stride = 2 if i > 0 and min(_halve(height), _halve(width)) >= 2 else 1
            if stride == 2:
                height, width = _halve(height), _halve(width)
            blocks.append(BasicBlock(cfg, channels, out, stride))
            channels = out
        self.stages = nn.Sequential(*blocks)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(start_dim=1))
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.stages(self.stem(x))))


def _check(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> None:
    """Raise FlatprivError (one line) for an unknown name or a model that does not fit the data."""
    if cfg.name not in MODELS:
        raise FlatprivError(f"unknown model.name={cfg.name!r}; valid: {', '.join(MODELS)}")
    if cfg.activation not in ACTIVATIONS:
        raise FlatprivError(f"unknown model.activation={cfg.activation!r}; valid: {', '.join(ACTIVATIONS)}")
    if cfg.norm not in NORMS:
        raise FlatprivError(f"unknown model.norm={cfg.norm!r}; valid: {', '.join(NORMS)}")
    if cfg.width < 1 or cfg.depth < 0 or cfg.groups < 1:
        raise FlatprivError(
            f"model.width={cfg.width}, model.depth={cfg.depth}, model.groups={cfg.groups}: "
            "need width >= 1, depth >= 0, groups >= 1"
        )
    if num_classes < 1:
        raise FlatprivError(f"num_classes={num_classes} must be >= 1")
    shape = tuple(input_shape)
    if not shape or any(int(s) < 1 for s in shape):
        raise FlatprivError(f"the data gives input shape {shape}; need a non-empty shape of positive sizes")
    if cfg.name == "cnn1d" and len(shape) not in (1, 2):
        raise FlatprivError(
            f"model.name=cnn1d needs sequence inputs [L] or [C, L]; the data gives shape {shape}; "
            "use mlp, cnn2d or resnet"
        )
    if cfg.name in ("cnn2d", "resnet") and len(shape) != 3:
        raise FlatprivError(
            f"model.name={cfg.name} needs image inputs [C, H, W]; the data gives shape {shape}; use mlp or cnn1d"
        )


def build_model(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int, checked: bool = False) -> nn.Module:
    """Build the model named by ``cfg.name`` for per-example inputs of ``input_shape`` (no batch dim).

    ``checked``: the same arguments were already checked (a pool's models after its first), so the size check,
    which builds the model once more on the meta device, is skipped."""
    if not checked:
        _check(cfg, input_shape, num_classes)
    shape = tuple(int(s) for s in input_shape)
    cls = {"mlp": MLP, "cnn1d": CNN1d, "cnn2d": CNN2d, "resnet": ResNet}[cfg.name]
    if not checked:
        _check_size(cfg, lambda: cls(cfg, shape, int(num_classes)))
    return cls(cfg, shape, int(num_classes))


def _check_size(cfg: ModelConfig, build: Callable[[], nn.Module]) -> None:
    """Refuse a model too large to hold (width and depth are each bounded, their product is not): the widest
    layer first (cnn2d and resnet double their channels per block), then the parameter count of the model built
    on the meta device, which allocates nothing and leaves the random state alone."""
    widest = cfg.width * 2 ** max(cfg.depth - 1, 0) if cfg.name in ("cnn2d", "resnet") else cfg.width
    if widest > MAX_CHANNELS:
        raise FlatprivError(
            f"model.width={cfg.width}, model.depth={cfg.depth}: {cfg.name} doubles its channels per block, to "
            f"{widest} > {MAX_CHANNELS}: lower model.width or model.depth"
        )
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        n = count_parameters(build())
    if n > MAX_PARAMETERS:
        raise FlatprivError(
            f"model.width={cfg.width}, model.depth={cfg.depth}: {n:.3g} parameters, more than "
            f"{MAX_PARAMETERS:.0e} (4 GB as float32, before gradients and optimizer state): lower them"
        )


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """The model's outputs on ``x`` in evaluation mode, ``batch_size`` rows at a time (training mode restored),
    without autograd: no graph is kept for the whole data set."""
    model.eval()
    with torch.no_grad():
        out = torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
    model.train()
    return out


def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int
) -> tuple[float, float] | tuple[None, None]:
    """(mean cross-entropy, accuracy) of ``model`` on (x, y); (None, None) for an empty split (fit without test
    data)."""
    if len(y) == 0:
        return None, None
    logits = predict(model, x, batch_size)
    return nn.functional.cross_entropy(logits, y).item(), (logits.argmax(1) == y).float().mean().item()


def resolve_device(name: str) -> torch.device:
    """``train.device`` as a torch.device: cpu or cuda[:N], refused when no CUDA device is here."""
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise FlatprivError(f"train.device = '{name}': no CUDA device is available here; use cpu")
    if not (name == "cpu" or name.startswith("cuda")):
        raise FlatprivError(f"train.device = '{name}': must be cpu or cuda[:N]")
    return torch.device(name)


def synchronize(device: torch.device) -> None:
    """Wait for ``device``'s queued kernels (a no-op on the CPU), so a wall-clock reading covers them."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def count_parameters(model: nn.Module) -> int:
    """Number of scalar parameters (all of them, trainable or not)."""
    return sum(p.numel() for p in model.parameters())
