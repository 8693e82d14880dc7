"""Differential-privacy accounting (dp-accounting based; numpy/scipy/dp_accounting only, never torch)."""

from .accounting import (
    ACCOUNTANTS,
    NEIGHBOURING,
    Ledger,
    Release,
    accountant_description,
    calibrate_noise,
    epsilon,
    epsilon_from_ledger,
)

__all__ = [
    "ACCOUNTANTS",
    "NEIGHBOURING",
    "Ledger",
    "Release",
    "accountant_description",
    "calibrate_noise",
    "epsilon",
    "epsilon_from_ledger",
]
