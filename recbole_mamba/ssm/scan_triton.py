"""Selective scan as Triton kernels (the ``triton`` backend).

Same arguments, layout and numbers as :func:`recbole_mamba.ssm.scan_torch.selective_scan_torch`
(and ``mamba_ssm.selective_scan_fn``): u, delta, z [B, D, L]; A [D, N] (or [G, D, N]: the
batch is G equal groups of consecutive rows, group g scanned with A[g]); B, C [B, N, L];
D, delta_bias [D].  Triton compiles them on the fly with the triton that Linux CUDA torch
wheels ship, so nothing is built at install time; with ``TRITON_INTERPRET=1`` the same
kernels run on a CPU under Triton's interpreter (how the tests check them).

* One program per (batch row, block of ``BLOCK_D`` channels); the state [BLOCK_D, N] stays
  in registers and a loop over time runs inside the kernel.  delta_bias, softplus, the D
  skip and the SiLU(z) gate are fused in.  State and arithmetic are fp32 whatever the input
  dtype (fp16 / bf16 / fp32); outputs and gradients come back in the inputs' dtypes.
* Forward keeps only the state at the start of every ``chunk`` steps.  Backward walks the
  chunks from the last: it recomputes that chunk's states from its start state into a
  scratch buffer, then runs the adjoint recurrence backwards through it.  Memory beyond
  the inputs: O(B·D·N·L/chunk) for the chunk-start states plus O(B·D·N·chunk) of scratch.
* Gradients of B and C (shared by all channels) are summed per channel block in the
  kernel and over blocks in torch; those of A, D and delta_bias per batch row, then over
  rows (per group for a grouped A).
"""
import math

import torch

try:  # triton is optional: CUDA torch wheels ship it; on a CPU, pip install triton
    import triton
    import triton.language as tl
except Exception as error:  # ImportError, or a triton that fails to initialise
    triton = tl = None
    IMPORT_ERROR = f"{type(error).__name__}: {error}"
else:
    IMPORT_ERROR = ""

DEFAULT_CHUNK = 32
_INTERPRET = __import__("os").environ.get("TRITON_INTERPRET", "0") == "1"


def available():
    """``(True, "")`` when triton imports, else ``(False, reason)``."""
    return (triton is not None), (f"triton not importable ({IMPORT_ERROR})" if triton is None else "")


def interpreting():
    """True when these kernels were made for Triton's CPU interpreter: triton reads
    ``TRITON_INTERPRET`` when a kernel is decorated, i.e. when this module is imported."""
    return _INTERPRET


if triton is not None:

    @triton.jit
    def _softplus(x):
        # log(1 + e^x), as torch.nn.functional.softplus (threshold 20)
        return tl.where(x > 20.0, x, tl.log(1.0 + tl.exp(tl.minimum(x, 20.0))))

    @triton.jit
    def _scan_fwd_kernel(
        u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, out_ptr, states_ptr,
        n_channels, n_state, length, rows_per_group, n_chunks,
        CHUNK: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
        HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    ):
        b = tl.program_id(0)
        d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
        n = tl.arange(0, BLOCK_N)
        mask_d = d < n_channels
        mask_n = n < n_state
        mask_dn = mask_d[:, None] & mask_n[None, :]
        group = b // rows_per_group
        A = tl.load(A_ptr + group * n_channels * n_state + d[:, None] * n_state + n[None, :], mask=mask_dn,
                    other=0.0).to(tl.float32)
        if HAS_D:
            D = tl.load(D_ptr + d, mask=mask_d, other=0.0).to(tl.float32)
        if HAS_BIAS:
            bias = tl.load(bias_ptr + d, mask=mask_d, other=0.0).to(tl.float32)
        row = b * n_channels * length + d * length  # [BLOCK_D] offsets of (b, d, 0)
        row_bc = b * n_state * length + n * length  # [BLOCK_N] offsets of (b, n, 0)
        state_row = (b * n_chunks * n_channels + d[:, None]) * n_state + n[None, :]
        h = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)
        for t in range(0, length):
            if t % CHUNK == 0:
                tl.store(states_ptr + state_row + (t // CHUNK) * n_channels * n_state, h, mask=mask_dn)
            u = tl.load(u_ptr + row + t, mask=mask_d, other=0.0).to(tl.float32)
            dt = tl.load(delta_ptr + row + t, mask=mask_d, other=0.0).to(tl.float32)
            if HAS_BIAS:
                dt = dt + bias
            if SOFTPLUS:
                dt = _softplus(dt)
            Bt = tl.load(B_ptr + row_bc + t, mask=mask_n, other=0.0).to(tl.float32)
            Ct = tl.load(C_ptr + row_bc + t, mask=mask_n, other=0.0).to(tl.float32)
            h = tl.exp(dt[:, None] * A) * h + (dt * u)[:, None] * Bt[None, :]
            y = tl.sum(h * Ct[None, :], axis=1)
            if HAS_D:
                y = y + D * u
            if HAS_Z:
                z = tl.load(z_ptr + row + t, mask=mask_d, other=0.0).to(tl.float32)
                y = y * z * tl.sigmoid(z)
            tl.store(out_ptr + row + t, y.to(out_ptr.dtype.element_ty), mask=mask_d)

    @triton.jit
    def _scan_bwd_kernel(
        u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, states_ptr, scratch_ptr, dout_ptr,
        du_ptr, ddelta_ptr, dz_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dbias_ptr,
        n_channels, n_state, length, rows_per_group, n_chunks, n_dblocks,
        CHUNK: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
        HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    ):
        b = tl.program_id(0)
        pid_d = tl.program_id(1)
        d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
        n = tl.arange(0, BLOCK_N)
        mask_d = d < n_channels
        mask_n = n < n_state
        mask_dn = mask_d[:, None] & mask_n[None, :]
        group = b // rows_per_group
        A = tl.load(A_ptr + group * n_channels * n_state + d[:, None] * n_state + n[None, :], mask=mask_dn,
                    other=0.0).to(tl.float32)
        if HAS_D:
            D = tl.load(D_ptr + d, mask=mask_d, other=0.0).to(tl.float32)
        if HAS_BIAS:
            bias = tl.load(bias_ptr + d, mask=mask_d, other=0.0).to(tl.float32)
        row = b * n_channels * length + d * length
        row_bc = b * n_state * length + n * length
        # dB, dC partials: [B, n_dblocks, N, L]
        row_part = (b * n_dblocks + pid_d) * n_state * length + n * length
        state_row = (b * n_chunks * n_channels + d[:, None]) * n_state + n[None, :]
        # scratch: [B, n_dblocks, CHUNK + 1, BLOCK_D, BLOCK_N]; slot 0 is the chunk's start state
        tile = tl.arange(0, BLOCK_D)[:, None] * BLOCK_N + tl.arange(0, BLOCK_N)[None, :]
        scratch = scratch_ptr + (b * n_dblocks + pid_d) * (CHUNK + 1) * BLOCK_D * BLOCK_N + tile

        g = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)  # dLoss/dh_t from the steps after t
        dA_acc = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)
        dD_acc = tl.zeros((BLOCK_D,), dtype=tl.float32)
        dbias_acc = tl.zeros((BLOCK_D,), dtype=tl.float32)
        for k in range(0, n_chunks):
            c = n_chunks - 1 - k
            t0 = c * CHUNK
            steps = tl.minimum(length - t0, CHUNK)
            h = tl.load(states_ptr + state_row + c * n_channels * n_state, mask=mask_dn, other=0.0)
            tl.store(scratch, h)
            for i in range(0, steps):  # this chunk's states, recomputed
                t = t0 + i
                u = tl.load(u_ptr + row + t, mask=mask_d, other=0.0).to(tl.float32)
                dt = tl.load(delta_ptr + row + t, mask=mask_d, other=0.0).to(tl.float32)
                if HAS_BIAS:
                    dt = dt + bias
                if SOFTPLUS:
                    dt = _softplus(dt)
                Bt = tl.load(B_ptr + row_bc + t, mask=mask_n, other=0.0).to(tl.float32)
                h = tl.exp(dt[:, None] * A) * h + (dt * u)[:, None] * Bt[None, :]
                tl.store(scratch + (i + 1) * BLOCK_D * BLOCK_N, h)
            for j in range(0, steps):  # the adjoint recurrence, backwards through the chunk
                i = steps - 1 - j
                t = t0 + i
                u = tl.load(u_ptr + row + t, mask=mask_d, other=0.0).to(tl.float32)
                raw = tl.load(delta_ptr + row + t, mask=mask_d, other=0.0).to(tl.float32)
                if HAS_BIAS:
                    raw = raw + bias
                dt = raw
                if SOFTPLUS:
                    dt = _softplus(raw)
                Bt = tl.load(B_ptr + row_bc + t, mask=mask_n, other=0.0).to(tl.float32)
                Ct = tl.load(C_ptr + row_bc + t, mask=mask_n, other=0.0).to(tl.float32)
                h = tl.load(scratch + (i + 1) * BLOCK_D * BLOCK_N)
                h_prev = tl.load(scratch + i * BLOCK_D * BLOCK_N)
                dy = tl.load(dout_ptr + row + t, mask=mask_d, other=0.0).to(tl.float32)
                if HAS_Z:
                    z = tl.load(z_ptr + row + t, mask=mask_d, other=0.0).to(tl.float32)
                    y = tl.sum(h * Ct[None, :], axis=1)
                    if HAS_D:
                        y = y + D * u
                    sig = tl.sigmoid(z)
                    tl.store(dz_ptr + row + t, (dy * y * sig * (1.0 + z * (1.0 - sig))).to(dz_ptr.dtype.element_ty),
                             mask=mask_d)
                    dy = dy * z * sig
                du = tl.zeros((BLOCK_D,), dtype=tl.float32)
                if HAS_D:
                    dD_acc += dy * u
                    du = dy * D
                g = g + dy[:, None] * Ct[None, :]  # dLoss/dh_t, all of it
                tl.store(dC_ptr + row_part + t, tl.sum(tl.where(mask_dn, dy[:, None] * h, 0.0), axis=0), mask=mask_n)
                decay = tl.exp(dt[:, None] * A)
                gB = tl.where(mask_dn, g * Bt[None, :], 0.0)
                du += dt * tl.sum(gB, axis=1)
                tl.store(dB_ptr + row_part + t, tl.sum(tl.where(mask_dn, g * (dt * u)[:, None], 0.0), axis=0),
                         mask=mask_n)
                g_decay = tl.where(mask_dn, g * decay * h_prev, 0.0)
                ddt = tl.sum(g_decay * A, axis=1) + u * tl.sum(gB, axis=1)
                dA_acc += g_decay * dt[:, None]
                if SOFTPLUS:
                    ddt = ddt * tl.sigmoid(raw)
                dbias_acc += ddt
                tl.store(du_ptr + row + t, du.to(du_ptr.dtype.element_ty), mask=mask_d)
                tl.store(ddelta_ptr + row + t, ddt.to(ddelta_ptr.dtype.element_ty), mask=mask_d)
                g = g * decay  # carried to h_{t-1}
        tl.store(dA_ptr + (b * n_channels + d[:, None]) * n_state + n[None, :], dA_acc, mask=mask_dn)
        if HAS_D:
            tl.store(dD_ptr + b * n_channels + d, dD_acc, mask=mask_d)
        if HAS_BIAS:
            tl.store(dbias_ptr + b * n_channels + d, dbias_acc, mask=mask_d)


def _blocks(d_inner, d_state):
    block_n = max(2, triton.next_power_of_2(d_state))
    block_d = max(2, min(triton.next_power_of_2(d_inner), max(4, 2048 // block_n)))
    return block_d, block_n


class _TritonScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, chunk):
        batch, d_inner, length = u.shape
        d_state = A.shape[-1]
        groups = A.shape[0] if A.dim() == 3 else 1
        ctx.a_dtype, ctx.a_dim = A.dtype, A.dim()
        u, delta, B, C = (t.contiguous() for t in (u, delta, B, C))
        A = A.contiguous().float()
        z = z.contiguous() if z is not None else None
        block_d, block_n = _blocks(d_inner, d_state)
        n_chunks = max(1, math.ceil(length / chunk))
        out = torch.empty_like(u)
        states = torch.empty(batch, n_chunks, d_inner, d_state, device=u.device, dtype=torch.float32)
        dummy = u.new_empty(1)
        grid = (batch, triton.cdiv(d_inner, block_d))
        _scan_fwd_kernel[grid](
            u, delta, A, B, C, D if D is not None else dummy, z if z is not None else dummy,
            delta_bias if delta_bias is not None else dummy, out, states,
            d_inner, d_state, length, batch // groups, n_chunks,
            CHUNK=chunk, BLOCK_D=block_d, BLOCK_N=block_n, HAS_D=D is not None, HAS_Z=z is not None,
            HAS_BIAS=delta_bias is not None, SOFTPLUS=bool(delta_softplus),
        )
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, states)
        ctx.settings = (bool(delta_softplus), chunk, groups, block_d, block_n, n_chunks)
        return out

    @staticmethod
    def backward(ctx, dout):
        u, delta, A, B, C, D, z, delta_bias, states = ctx.saved_tensors
        softplus, chunk, groups, block_d, block_n, n_chunks = ctx.settings
        batch, d_inner, length = u.shape
        d_state = A.shape[-1]
        n_dblocks = triton.cdiv(d_inner, block_d)
        dout = dout.contiguous()
        f32 = {"device": u.device, "dtype": torch.float32}
        du, ddelta = torch.empty_like(u), torch.empty_like(delta)
        dz = torch.empty_like(z) if z is not None else None
        dA_rows = torch.empty(batch, d_inner, d_state, **f32)
        dB_part = torch.empty(batch, n_dblocks, d_state, length, **f32)
        dC_part = torch.empty(batch, n_dblocks, d_state, length, **f32)
        dD_rows = torch.empty(batch, d_inner, **f32) if D is not None else None
        dbias_rows = torch.empty(batch, d_inner, **f32) if delta_bias is not None else None
        scratch = torch.empty(batch, n_dblocks, chunk + 1, block_d, block_n, **f32)
        dummy = u.new_empty(1)
        f32_dummy = torch.empty(1, **f32)
        _scan_bwd_kernel[(batch, n_dblocks)](
            u, delta, A, B, C, D if D is not None else dummy, z if z is not None else dummy,
            delta_bias if delta_bias is not None else dummy, states, scratch, dout,
            du, ddelta, dz if dz is not None else dummy, dA_rows, dB_part, dC_part,
            dD_rows if dD_rows is not None else f32_dummy, dbias_rows if dbias_rows is not None else f32_dummy,
            d_inner, d_state, length, batch // groups, n_chunks, n_dblocks,
            CHUNK=chunk, BLOCK_D=block_d, BLOCK_N=block_n, HAS_D=D is not None, HAS_Z=z is not None,
            HAS_BIAS=delta_bias is not None, SOFTPLUS=softplus,
        )
        dA = dA_rows.view(groups, batch // groups, d_inner, d_state).sum(1)
        dA = (dA[0] if ctx.a_dim == 2 else dA).to(ctx.a_dtype)
        dB = dB_part.sum(1).to(B.dtype)
        dC = dC_part.sum(1).to(C.dtype)
        dD = dD_rows.sum(0).to(D.dtype) if D is not None else None
        dbias = dbias_rows.sum(0).to(delta_bias.dtype) if delta_bias is not None else None
        return du, ddelta, dA, dB, dC, dD, dz, dbias, None, None


def selective_scan_triton(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                          chunk=DEFAULT_CHUNK):
    """Selective scan with ``selective_scan_torch``'s arguments and layout, on Triton kernels.

    u, delta, z: [B, D, L]; A: [D, N] or [G, D, N]; B, C: [B, N, L]; D, delta_bias: [D].
    Returns y: [B, D, L] in u's dtype.  ``chunk``: steps between the states kept for backward.
    """
    if triton is None:
        from recbole_mamba.errors import BackendError

        raise BackendError(f"ssm_backend=triton needs triton: {IMPORT_ERROR}; install it with pip install triton")
    groups = A.shape[0] if A.dim() == 3 else 1
    if u.shape[0] % groups:
        raise ValueError(f"a grouped A of {groups} groups needs a batch divisible by {groups}, got {u.shape[0]}")
    if D is not None:
        D = D.float()
    if delta_bias is not None:
        delta_bias = delta_bias.float()
    return _TritonScan.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus, int(chunk))
