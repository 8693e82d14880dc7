"""The random parts of a DP mechanism: Poisson sampling and Gaussian noise, from their own source.

Amplification by subsampling assumes the batch is secret and drawn by Poisson sampling: every example joins
independently with probability q, so batch sizes vary and an empty batch is possible (it still releases noise).

Two sources. The default is a ``torch.Generator`` (Philox on CUDA, Mersenne Twister on CPU) seeded from OS
entropy unless the user fixes a seed, which is for reproducible research only: fast and repeatable, but not
cryptographically secure (its output is predictable from enough of its output). ``privacy.secure_rng = true``
gives a :class:`SecureSource` instead: every draw is fresh bits from the OS's cryptographically secure
generator (``os.urandom``), so it has no seed and no state, and a run using it cannot be repeated.
"""

from __future__ import annotations

import os
import secrets

import numpy as np
import torch

Tree = dict[str, torch.Tensor]
_U53 = 2.0**-53


def _os_bytes(n: int) -> bytes:
    """``n`` bytes from the OS's cryptographically secure generator (one name, so a test can count the bytes)."""
    return os.urandom(n)


class SecureSource:
    """Uniforms and normals from ``os.urandom``, with the parts of ``torch.Generator``'s interface flatpriv uses
    (``device``, ``get_state``, ``set_state``) so that it goes wherever a generator goes.

    A uniform is u = (b >> 11) · 2⁻⁵³ for 64 random bits b: the 2⁵³ doubles k·2⁻⁵³ of [0, 1), each with
    probability 2⁻⁵³. Normals come from the Box–Muller transform in float64, z₁ = r cos 2πu₂, z₂ = r sin 2πu₂
    with r = √(−2 ln u₁) and u₁ ∈ (0, 1], which is exact for exact uniforms; with 53-bit uniforms |z| ≤
    √(106 ln 2) ≈ 8.57, a tail of probability 1e-17 per draw. The draws are then rounded to the tensor's dtype.
    Secure means unpredictable: the floating-point representation of the noise is not hardened (see the README).
    """

    secure = True

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)

    def get_state(self) -> torch.Tensor:
        """Empty: there is nothing to save (a resumed run goes on with fresh draws)."""
        return torch.empty(0, dtype=torch.uint8)

    def set_state(self, state: torch.Tensor) -> None:
        """Nothing to restore: every draw comes fresh from the OS."""

    def uniform(self, n: int) -> np.ndarray:
        """``n`` independent uniforms on [0, 1) with 53 random bits each (float64)."""
        bits = np.frombuffer(_os_bytes(8 * n), dtype=np.uint64)
        return (bits >> np.uint64(11)).astype(np.float64) * _U53

    def normal(self, n: int) -> np.ndarray:
        """``n`` independent N(0, 1) draws (float64), two per pair of uniforms (Box–Muller)."""
        pairs = (n + 1) // 2
        u = self.uniform(2 * pairs).reshape(2, pairs)
        r = np.sqrt(-2.0 * np.log1p(-u[0]))  # 1 − u₁ ∈ (0, 1]: the log is finite
        theta = 2.0 * np.pi * u[1]
        return np.concatenate([r * np.cos(theta), r * np.sin(theta)])[:n]


Source = torch.Generator | SecureSource


def make_generator(seed: int, device: torch.device | str = "cpu", secure: bool = False) -> Source:
    """A private ``torch.Generator``; ``seed = -1`` draws the seed from the OS's entropy pool. With ``secure``,
    a :class:`SecureSource` on ``device`` (it has no seed: ``seed`` must be -1)."""
    if secure:
        assert seed < 0, "a secure source cannot be seeded"
        return SecureSource(device)
    g = torch.Generator(device=device)
    g.manual_seed(secrets.randbits(63) if seed < 0 else seed)
    return g


def uniform(n: int, generator: Source) -> torch.Tensor:
    """``n`` uniforms on [0, 1) on the source's device: float32 from a generator, float64 from a secure source."""
    if isinstance(generator, SecureSource):
        return torch.from_numpy(generator.uniform(n)).to(generator.device)
    return torch.rand(n, generator=generator, device=generator.device)


def poisson_indices(n: int, sample_rate: float, generator: Source) -> torch.Tensor:
    """Indices of a Poisson sample: i is included independently with probability q = ``sample_rate``."""
    return (uniform(n, generator) < sample_rate).nonzero().squeeze(1)


def standard_normal(like: Tree, generator: Source) -> Tree:
    """z ~ N(0, I) with the shapes and dtypes of ``like``, leaf by leaf in the tree's order, from ``generator``
    (on the generator's device). The one noise draw of flatpriv: single runs and pools (model k's draw from its
    own generator, outside any vmap) both come through here, so a pool member draws what its single run draws."""
    if isinstance(generator, SecureSource):
        return {
            k: torch.from_numpy(generator.normal(v.numel())).reshape(v.shape).to(generator.device, v.dtype)
            for k, v in like.items()
        }
    return {
        k: torch.randn(v.shape, generator=generator, device=generator.device, dtype=v.dtype) for k, v in like.items()
    }


def gaussian_like(tree: Tree, std: float, generator: Source) -> Tree:
    """N(0, std² I) with the shapes of ``tree``: std · :func:`standard_normal`."""
    return {k: z * std for k, z in standard_normal(tree, generator).items()}


def noise_source(secure: bool, noise_seed: int) -> str:
    """What a run's summary says of where its noise and Poisson samples came from."""
    if secure:
        return "os.urandom (cryptographically secure; not repeatable, not even with the same seeds)"
    if noise_seed >= 0:
        return f"torch.Generator seeded with privacy.noise_seed = {noise_seed} (reproducible; research only)"
    return "torch.Generator seeded from OS entropy (not cryptographically secure)"
