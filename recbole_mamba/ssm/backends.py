"""Which selective-scan implementation a Mamba block runs on.

``torch``: :mod:`recbole_mamba.ssm.scan_torch`, everywhere.
``cuda``: the ``mamba_ssm`` selective-scan kernel and ``causal_conv1d``, on CUDA tensors.
``triton``: :mod:`recbole_mamba.ssm.scan_triton`, compiled on the fly by triton (shipped
with Linux CUDA torch wheels), on CUDA tensors; on a CPU only under ``TRITON_INTERPRET=1``.
``auto``: on a CUDA device, ``cuda`` when both mamba-ssm kernels import *and run* (one tiny
call each, on the model's device), else ``triton`` when its kernel runs, else ``torch``;
``torch`` on a CPU.  The choice is logged once.

mamba_ssm <= 2.3.2 raises at import when its CUDA extension is missing and newer
releases import fine but raise at call time, so the probe imports inside a broad
``except``, never at package import, and ``auto`` trusts only a call that worked.
"""
import functools
import logging

import torch

from recbole_mamba.errors import BackendError

BACKENDS = ("auto", "torch", "cuda", "triton")


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


@functools.lru_cache(maxsize=None)
def probe_kernels(device="cuda"):
    """``(True, "")`` when one tiny call of each kernel runs on ``device``, else
    ``(False, reason)``.  Cached: the probe runs once per device."""
    scan_fn, conv_fn, reason = cuda_kernels()
    if scan_fn is None:
        return False, reason
    try:
        batch, d_inner, d_state, length, width = 1, 4, 2, 3, 4
        x = torch.randn(batch, d_inner, length, device=device)
        conv_fn(x, torch.randn(d_inner, width, device=device), torch.zeros(d_inner, device=device), activation="silu")
        scan_fn(
            x, torch.rand(batch, d_inner, length, device=device), -torch.rand(d_inner, d_state, device=device),
            torch.randn(batch, d_state, length, device=device), torch.randn(batch, d_state, length, device=device),
            torch.ones(d_inner, device=device), z=torch.randn(batch, d_inner, length, device=device),
            delta_bias=torch.zeros(d_inner, device=device), delta_softplus=True,
        )
    except Exception as error:  # a build that imports but cannot run (wrong arch, ABI, ...)
        return False, f"the kernels import but a test call failed ({type(error).__name__}: {error})"
    return True, ""


@functools.lru_cache(maxsize=None)
def probe_triton(device="cuda"):
    """``(True, "")`` when a tiny forward and backward of the Triton scan run on ``device``,
    else ``(False, reason)``.  Cached per device."""
    from recbole_mamba.ssm import scan_triton

    importable, reason = scan_triton.available()
    if not importable:
        return False, reason
    try:
        batch, d_inner, d_state, length = 1, 4, 2, 3
        u = torch.randn(batch, d_inner, length, device=device, requires_grad=True)
        y = scan_triton.selective_scan_triton(
            u, torch.rand(batch, d_inner, length, device=device), -torch.rand(d_inner, d_state, device=device),
            torch.randn(batch, d_state, length, device=device), torch.randn(batch, d_state, length, device=device),
            torch.ones(d_inner, device=device), z=torch.randn(batch, d_inner, length, device=device),
            delta_bias=torch.zeros(d_inner, device=device), delta_softplus=True)
        y.sum().backward()
    except Exception as error:  # no driver for this GPU, a compile failure, ...
        return False, f"the triton scan failed a test call ({type(error).__name__}: {error})"
    return True, ""


def cuda_available(device="cuda"):
    """True when a CUDA device exists and the CUDA kernels import and run on it."""
    return torch.cuda.is_available() and probe_kernels(str(device))[0]


def check_backend_name(requested):
    """A BackendError unless ``requested`` names a backend (the device is checked later)."""
    if str(requested).lower() not in BACKENDS:
        raise BackendError(f"ssm_backend={requested!r} is not a backend; use one of {', '.join(BACKENDS)}")


def resolve_backend(requested, device=None):
    """Validate ``requested`` and return the backend a model on ``device`` will use."""
    check_backend_name(requested)
    name = str(requested).lower()
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
    if name == "triton":
        from recbole_mamba.ssm import scan_triton

        importable, reason = scan_triton.available()
        if not importable:
            raise BackendError(f"ssm_backend='triton' needs triton, which is {reason.replace('triton ', '', 1)}; "
                               "install it with pip install triton (Linux CUDA torch wheels ship it) or use ssm_backend=auto")
        if device is not None and not on_cuda and not scan_triton.interpreting():
            raise BackendError("ssm_backend='triton' runs on a CUDA device (on a CPU only under TRITON_INTERPRET=1, "
                               "for tests); use ssm_backend=auto or torch")
        return "triton"
    if name == "auto":
        if not on_cuda:
            return "torch"
        if not torch.cuda.is_available():
            _log_fallback("no CUDA device")
            return "torch"
        working, reason = probe_kernels(str(torch.device(device)))
        if working:
            return "cuda"
        triton_working, triton_reason = probe_triton(str(torch.device(device)))
        if triton_working:
            _log_fallback(f"{reason}", chosen="triton")
            return "triton"
        _log_fallback(f"{reason}; {triton_reason}")
        return "torch"
    return "torch"


@functools.lru_cache(maxsize=None)
def _log_fallback(reason, chosen="torch"):
    """Say once per reason why ``auto`` runs the triton or torch scan on a CUDA device."""
    logging.getLogger().warning(f"recbole_mamba: ssm_backend=auto uses '{chosen}' on this CUDA device: {reason}")


@functools.lru_cache(maxsize=None)
def log_choice(requested, chosen):
    """Say once per process which backend ``auto`` chose (and why, for torch)."""
    if requested == "auto":
        why = "" if chosen != "torch" else " (no GPU kernels in use: CPU device, or neither mamba-ssm nor triton runs)"
        logging.getLogger().info(f"recbole_mamba: ssm_backend=auto chose '{chosen}'{why}")
