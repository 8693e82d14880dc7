"""Paper 3's models (Sander, Sylvestre & Durmus, AISTATS 2024, arXiv 2402.08344): tensors in, tensors out.

What lives here: the diagonal linear network β = w₊² − w₋² trained by GD, SGD and Noisy-SGD, all seeds and noise
levels as one float64 tensor computation (:mod:`.diagonal`, science.md §5.1), and linear least squares under SGD
and Noisy-SGD with the exact stationary covariance of flatpriv's discretisation (:mod:`.least_squares`, §5.2).

Imports: ``flatpriv.errors`` only (and torch, numpy, scipy). Nothing here imports the training stack.
"""

from .diagonal import DLNRun, Problem, alpha_infinity, gd_limit, sparse_problem, step_size, train_dln
from .least_squares import LSProblem, exact_covariance, first_order_covariance, ls_problem, simulate_ls

__all__ = [
    "DLNRun",
    "LSProblem",
    "Problem",
    "alpha_infinity",
    "exact_covariance",
    "first_order_covariance",
    "gd_limit",
    "ls_problem",
    "simulate_ls",
    "sparse_problem",
    "step_size",
    "train_dln",
]
