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


def standard_normal(like: Tree, generator: torch.Generator) -> Tree:
    """z ~ N(0, I) with the shapes and dtypes of ``like``, leaf by leaf in the tree's order, from ``generator``
    (on the generator's device). The one noise draw of flatpriv: single runs and pools (model k's draw from its
    own generator, outside any vmap) both come through here, so a pool member draws what its single run draws."""
    return {
        k: torch.randn(v.shape, generator=generator, device=generator.device, dtype=v.dtype) for k, v in like.items()
    }


def gaussian_like(tree: Tree, std: float, generator: torch.Generator) -> Tree:
    """N(0, std² I) with the shapes of ``tree``: std · :func:`standard_normal`."""
    return {k: z * std for k, z in standard_normal(tree, generator).items()}
