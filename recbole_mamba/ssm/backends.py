"""Which selective-scan implementation a Mamba block runs on.

``torch``: :mod:`recbole_mamba.ssm.scan_torch`, everywhere.
``cuda``: the ``mamba_ssm`` selective-scan kernel and ``causal_conv1d``, on CUDA tensors.
``auto``: ``cuda`` when both kernels import and the model sits on a CUDA device,
otherwise ``torch``.

mamba_ssm <= 2.3.2 raises at import when its CUDA extension is missing and newer
releases raise at call time, so the probe imports inside a broad ``except`` and
never at package import.
"""
import functools
import logging

import torch

from recbole_mamba.errors import BackendError

BACKENDS = ("auto", "torch", "cuda")


@functools.lru_cache(maxsize=None)
def cuda_kernels():
    """``(selective_scan_fn, causal_conv1d_fn)`` or ``(None, None, reason)``-style failure.

    Returns a tuple ``(scan_fn, conv_fn, reason)``; the functions are None and
    ``reason`` says why when the kernels are not usable.
    """
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except Exception as error:  # ImportError, OSError from a missing .so, ...
        return None, None, f"mamba_ssm kernels not importable ({type(error).__name__}: {error})"
    try:
        from causal_conv1d import causal_conv1d_fn
    except Exception as error:
        return None, None, f"causal_conv1d not importable ({type(error).__name__}: {error})"
    return selective_scan_fn, causal_conv1d_fn, ""


def cuda_available():
    """True when the CUDA kernels import and a CUDA device exists."""
    return torch.cuda.is_available() and cuda_kernels()[0] is not None


def resolve_backend(requested, device=None):
    """Validate ``requested`` and return the backend a model on ``device`` will use."""
    name = str(requested).lower()
    if name not in BACKENDS:
        raise BackendError(
            f"ssm_backend={requested!r} is not a backend; use one of {', '.join(BACKENDS)}"
        )
    on_cuda = device is not None and torch.device(device).type == "cuda"
    if name == "cuda":
        if not torch.cuda.is_available() or not on_cuda:
            raise BackendError(
                "ssm_backend=cuda needs a CUDA device and mamba-ssm built with its kernels; "
                "use ssm_backend=auto or torch"
            )
        if cuda_kernels()[0] is None:
            raise BackendError(
                f"ssm_backend=cuda needs the CUDA kernels: {cuda_kernels()[2]}; "
                "install them with pip install 'recbole-mamba[cuda]' or use ssm_backend=auto"
            )
        return "cuda"
    if name == "auto":
        return "cuda" if on_cuda and cuda_available() else "torch"
    return "torch"


@functools.lru_cache(maxsize=None)
def log_choice(requested, chosen):
    """Say once per process which backend ``auto`` chose (and why, for torch)."""
    if requested == "auto":
        why = "" if chosen == "cuda" else " (CUDA kernels not in use: CPU device or mamba-ssm kernels missing)"
        logging.getLogger().info(f"recbole_mamba: ssm_backend=auto chose '{chosen}'{why}")
