"""The random parts of a DP mechanism: Poisson sampling and Gaussian noise, from their own generator.

Amplification by subsampling assumes the batch is secret and drawn by Poisson sampling: every example joins
independently with probability q, so batch sizes vary and an empty batch is possible (it still releases noise).
The generator is seeded from OS entropy unless the user fixes a seed, which is for reproducible research only.
"""

from __future__ import annotations

import secrets

import torch

Tree = dict[str, torch.Tensor]


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A private ``torch.Generator``; ``seed = -1`` draws the seed from the OS's entropy pool."""
    g = torch.Generator(device=device)
    g.manual_seed(secrets.randbits(63) if seed < 0 else seed)
    return g


def poisson_indices(n: int, sample_rate: float, generator: torch.Generator) -> torch.Tensor:
    """Indices of a Poisson sample: i is included independently with probability q = ``sample_rate``."""
    mask = torch.rand(n, generator=generator, device=generator.device) < sample_rate
    return mask.nonzero().squeeze(1)


def gaussian_like(tree: Tree, std: float, generator: torch.Generator) -> Tree:
    """N(0, std² I) with the shapes of ``tree``, drawn from ``generator`` (on the generator's device)."""
    return {k: torch.randn(v.shape, generator=generator, device=generator.device, dtype=v.dtype) * std
            for k, v in tree.items()}
