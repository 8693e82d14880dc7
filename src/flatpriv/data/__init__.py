"""Data sets as device-resident tensors with stable example indices and per-example metadata.

What lives here: the offline generators and loaders (:mod:`.datasets`: MNIST-1D, scikit-learn's digits, the
planted long-tail mixture, image sets read from a user's directory) and the readers of those image files
(:mod:`.imagefiles`: IDX and the CIFAR-10 batches, the latter through a restricted unpickler that accepts only
arrays and plain containers); training-time augmentation (:mod:`.augment`: random crop and flip per example,
keyed by a hash of seed, step and example index, augmentation multiplicity, the attacks' fixed query views).

Imports: ``flatpriv.config`` and ``flatpriv.errors`` only; nothing of the training stack.
"""

from .datasets import DATASETS, Dataset, cache_dir, flip_labels, load_data

__all__ = ["DATASETS", "Dataset", "cache_dir", "flip_labels", "load_data"]
