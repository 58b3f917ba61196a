"""Mamba block and selective-scan backends."""
from recbole_mamba.ssm.backends import BACKENDS, BackendError, cuda_available, resolve_backend
from recbole_mamba.ssm.mamba import Mamba, grouped_torch_forward, mamba_pair
from recbole_mamba.ssm.scan_torch import scan_time_major, selective_scan_torch

__all__ = [
    "BACKENDS",
    "BackendError",
    "Mamba",
    "cuda_available",
    "grouped_torch_forward",
    "mamba_pair",
    "resolve_backend",
    "scan_time_major",
    "selective_scan_torch",
]
