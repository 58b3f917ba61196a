"""Selective scan in pure PyTorch (the ``torch`` backend).

The recurrence of Gu & Dao (2023), per batch row b, channel d and state n::

    h_t = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t
    y_t = <C_t, h_t>

Autograd through a per-step loop stores a [B, D, N] state for every step and every
intermediate op.  Here forward and backward are written by hand instead:

* the discretisation (``exp(delta * A)``, ``delta * B * u``) is vectorised over a
  chunk of time steps, so the Python loop runs one fused ``addcmul`` per step;
* only the state at each chunk boundary is kept for backward; each chunk's states
  are recomputed there (chunked recomputation), so peak memory is a few chunks of
  [T, B, D, N] instead of the whole [L, B, D, N];
* the backward recurrence for dL/dh is again one ``addcmul`` per step, and every
  other gradient is a batched matmul over the chunk.
"""
import math

import torch

# Time steps whose states one backward chunk keeps: about this many floats per buffer.
_CHUNK_ELEMENTS = 1 << 21


def chunk_length(length, batch, d_inner, d_state):
    """Steps per recomputation chunk, so that one [T, B, N, D] buffer holds ~2M floats."""
    per_step = max(1, batch * d_inner * d_state)
    return int(min(length, max(1, math.ceil(_CHUNK_ELEMENTS / per_step))))


def _by_group(t, groups):
    """[G*r, ...] -> [G, r, ...] (a view); unchanged for one group."""
    return t if groups == 1 else t.view(groups, -1, *t.shape[1:])


class _SelectiveScan(torch.autograd.Function):
    """y = scan(u, delta, A, B, C) in time-major layout; see the module docstring.

    The state is kept as [B, N, D] (D contiguous) so that every per-step op is a
    contiguous elementwise op or a batched vector-matrix product.  ``A`` is [D, N],
    or [G, D, N] for a batch of G equal groups of consecutive rows (group g uses A[g]).
    """

    @staticmethod
    def forward(ctx, u, delta, A, B, C):
        # u, delta: [L, Bt, D]; A: [D, N] or [G, D, N]; B, C: [L, Bt, N]
        length, batch, d_inner = u.shape
        groups = A.shape[0] if A.dim() == 3 else 1
        A_t = A.transpose(-1, -2).contiguous()  # [N, D] or [G, N, D]
        A_b = A_t if groups == 1 else A_t[:, None]  # broadcasts against [G, r, N, D]
        d_state = A.shape[-1]
        T = chunk_length(length, batch, d_inner, d_state)
        du = delta * u  # [L, Bt, D]
        y = u.new_empty(length, batch, 1, d_inner)
        boundaries = []
        h = u.new_zeros(batch, d_state, d_inner)  # [Bt, N, D]
        dA = torch.empty_like(h)
        dA_g = _by_group(dA, groups)
        for t in range(length):
            if t % T == 0:
                boundaries.append(h.clone())
            torch.mul(_by_group(delta[t, :, None, :], groups), A_b, out=dA_g).exp_()  # [Bt, N, D]
            h.mul_(dA).addcmul_(B[t, :, :, None], du[t, :, None, :])
            torch.bmm(C[t, :, None, :], h, out=y[t])  # [Bt, 1, D]
        ctx.save_for_backward(u, delta, A_t, B, C, torch.stack(boundaries))
        ctx.chunk = T
        ctx.groups = groups
        return y.squeeze(2)  # [L, Bt, D]

    @staticmethod
    def backward(ctx, dy):
        u, delta, A_t, B, C, boundaries = ctx.saved_tensors
        T, groups = ctx.chunk, ctx.groups
        A_b = A_t if groups == 1 else A_t[:, None]
        length = u.shape[0]
        dy = dy.contiguous()
        du = delta * u  # [L, Bt, D]
        grad_du = torch.empty_like(u)[:, :, None, :]  # [L, Bt, 1, D]
        grad_B = torch.empty_like(B)[:, :, None, :]  # [L, Bt, 1, N]
        grad_C = torch.empty_like(C)[:, :, None, :]  # [L, Bt, 1, N]
        grad_logdecay = torch.empty_like(u)  # [L, Bt, D]: dLoss/d(delta) through exp(delta A)
        grad_A_rows = torch.zeros_like(boundaries[0])  # [Bt, N, D], summed over rows at the end
        dh = torch.zeros_like(boundaries[0])  # dLoss/dh_t, carried backwards
        w = torch.empty_like(dh)
        w_g = _by_group(w, groups)
        dA_buf = dh.new_empty((T,) + dh.shape)
        hs_buf = torch.empty_like(dA_buf)
        for k in reversed(range(boundaries.shape[0])):
            c0 = k * T
            c1 = min(c0 + T, length)
            # recompute this chunk's decays and states from its boundary state
            dA = dA_buf[: c1 - c0]  # [T, Bt, N, D]
            hs = hs_buf[: c1 - c0]  # [T, Bt, N, D]
            prev = boundaries[k]
            for i, t in enumerate(range(c0, c1)):
                torch.mul(_by_group(delta[t, :, None, :], groups), A_b, out=_by_group(dA[i], groups)).exp_()
                torch.mul(prev, dA[i], out=hs[i]).addcmul_(B[t, :, :, None], du[t, :, None, :])
                prev = hs[i]
            for i, t in reversed(list(enumerate(range(c0, c1)))):
                h_prev = hs[i - 1] if i > 0 else boundaries[k]
                dh.addcmul_(C[t, :, :, None], dy[t, :, None, :])  # dh_t = dy_t C_t + dA_{t+1} dh_{t+1}
                torch.bmm(dy[t, :, None, :], hs[i].transpose(1, 2), out=grad_C[t])  # [Bt, 1, N]
                torch.bmm(du[t, :, None, :], dh.transpose(1, 2), out=grad_B[t])  # [Bt, 1, N]
                torch.bmm(B[t, :, None, :], dh, out=grad_du[t])  # [Bt, 1, D]
                dh.mul_(dA[i])  # now dLoss/dh_{t-1} from step t
                torch.mul(dh, h_prev, out=w)  # dLoss/d(delta_t A) elementwise
                grad_A_rows.addcmul_(w, delta[t, :, None, :])
                w_g.mul_(A_b)
                torch.sum(w, dim=1, out=grad_logdecay[t])
        grad_du = grad_du.squeeze(2)
        grad_delta = grad_logdecay + grad_du * u
        grad_u = grad_du * delta
        grad_A = _by_group(grad_A_rows, groups).sum(-3).transpose(-1, -2)  # [D, N] or [G, D, N]
        return grad_u, grad_delta, grad_A, grad_B.squeeze(2), grad_C.squeeze(2)


def selective_scan_torch(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """Selective scan with ``mamba_ssm.selective_scan_fn``'s arguments and layout.

    u, delta, z: [B, D, L]; A: [D, N]; B, C: [B, N, L]; D, delta_bias: [D].
    Returns y: [B, D, L].
    """
    if delta_bias is not None:
        delta = delta + delta_bias[None, :, None]
    if delta_softplus:
        delta = torch.nn.functional.softplus(delta)
    y = scan_time_major(
        u.permute(2, 0, 1), delta.permute(2, 0, 1), A, B.permute(2, 0, 1), C.permute(2, 0, 1)
    ).permute(1, 2, 0)  # [B, D, L]
    if D is not None:
        y = y + u * D[None, :, None]
    if z is not None:
        y = y * torch.nn.functional.silu(z)
    return y


def scan_time_major(u, delta, A, B, C):
    """Core scan in time-major layout: u, delta [L, B, D]; B, C [L, B, N] -> y [L, B, D].

    ``A`` is [D, N] for every row, or [G, D, N]: the batch is then G equal groups of
    consecutive rows, group g scanned with A[g] (two Mamba blocks of one shape, such
    as BiMamba4Rec's two directions, in one loop over time).

    Rows are independent, so a batch whose per-step state [B, N, D] would not stay in
    cache is scanned in slices of rows (~1M state floats each, the same rows of every
    group); the per-step ops then run on cache-resident tensors (about 10x faster at
    B=1024, D=256, N=16).

    The state is accumulated in float32 (float64 for float64 inputs); y comes back in
    u's dtype.
    """
    if A.is_complex():
        raise ValueError("the torch selective scan supports real A only (as Mamba uses)")
    if A.dim() == 3 and A.shape[0] == 1:
        A = A[0]
    length, batch, d_inner = u.shape
    groups = A.shape[0] if A.dim() == 3 else 1
    if batch % groups:
        raise ValueError(f"a batch of {batch} rows cannot form {groups} equal groups, one per A")
    out_dtype = u.dtype
    dtype = torch.promote_types(u.dtype, torch.float32)
    u, delta, A, B, C = (t.to(dtype) for t in (u, delta, A, B, C))
    A = A.contiguous()
    per_group = batch // groups
    rows = max(1, slice_rows(batch, d_inner, A.shape[-1]) // groups)  # per group, per slice

    def rows_of_every_group(t, i):  # [L, G*per_group, k] -> rows i..i+rows of each group, [L, G*r, k]
        if groups == 1:
            return t[:, i : i + rows].contiguous()
        return t.view(length, groups, per_group, -1)[:, :, i : i + rows].reshape(length, -1, t.shape[-1])

    outputs = [
        _SelectiveScan.apply(
            rows_of_every_group(u, i), rows_of_every_group(delta, i), A,
            rows_of_every_group(B, i), rows_of_every_group(C, i),
        )
        for i in range(0, per_group, rows)
    ]
    if groups == 1:
        y = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=1)  # [L, B, D]
    else:
        y = torch.cat([o.view(length, groups, -1, d_inner) for o in outputs], dim=2).view(length, batch, d_inner)
    return y.to(out_dtype)


# Per-step state floats of one batch slice (about 4 MB in float32).
_SLICE_ELEMENTS = 1 << 20


def slice_rows(batch, d_inner, d_state):
    """Batch rows per scan slice so that one step's state holds ~_SLICE_ELEMENTS floats."""
    return int(max(1, min(batch, _SLICE_ELEMENTS // max(1, d_inner * d_state))))
