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


def _scan_forward(u, delta, A_t, B, C, groups, active):
    """Forward of one slice of rows: u, delta [L, Bt, D]; A_t [N, D] or [G, N, D]; B, C
    [L, Bt, N] (contiguous) -> (y [L, Bt, D], states at the chunk boundaries, chunk length).

    ``active[t]`` is how many leading rows step t computes (rows sorted by length, longest
    first; one group only), or None for every row at every step; steps after
    ``len(active)`` and rows past ``active[t]`` are skipped and give y = 0.

    The state is kept as [Bt, N, D] (D contiguous) so that every per-step op is a
    contiguous elementwise op or a batched vector-matrix product."""
    length, batch, d_inner = u.shape
    skips = active is not None  # only then are some positions left at y = 0
    active = [batch] * length if active is None else active
    A_b = A_t if groups == 1 else A_t[:, None]  # broadcasts against [G, r, N, D]
    d_state = A_t.shape[-2]
    T = chunk_length(len(active), batch, d_inner, d_state)
    du = delta * u  # [L, Bt, D]
    y = (u.new_zeros if skips else u.new_empty)(length, batch, 1, d_inner)
    boundaries = u.new_empty(-(-len(active) // T), batch, d_state, d_inner)  # written in place, not stacked
    h = u.new_zeros(batch, d_state, d_inner)  # [Bt, N, D]
    dA = torch.empty_like(h)
    for t, n in enumerate(active):
        if t % T == 0:
            boundaries[t // T].copy_(h)
        torch.mul(_by_group(delta[t, :n, None, :], groups), A_b, out=_by_group(dA[:n], groups)).exp_()  # [n, N, D]
        h[:n].mul_(dA[:n]).addcmul_(B[t, :n, :, None], du[t, :n, None, :])
        torch.bmm(C[t, :n, None, :], h[:n], out=y[t, :n])  # [n, 1, D]
    return y.squeeze(2), boundaries, T


def _scan_backward(u, delta, A_t, B, C, boundaries, T, groups, dy, active):
    """Gradients of one slice (see :func:`_scan_forward`) from dy [L, Bt, D]: (du, ddelta,
    dA_t summed over the slice's rows as [Bt, N, D] rows, dB, dC).  Skipped positions get
    zero gradients (their y is the constant 0)."""
    A_b = A_t if groups == 1 else A_t[:, None]
    length = u.shape[0]
    active = [u.shape[1]] * length if active is None else active
    steps = len(active)
    skips = steps < length or active[-1] < u.shape[1]
    new = torch.zeros_like if skips else torch.empty_like
    du = delta * u  # [L, Bt, D]
    grad_du = new(u)[:, :, None, :]  # [L, Bt, 1, D]
    grad_B = new(B)[:, :, None, :]  # [L, Bt, 1, N]
    grad_C = new(C)[:, :, None, :]  # [L, Bt, 1, N]
    grad_logdecay = new(u)  # [L, Bt, D]: dLoss/d(delta) through exp(delta A)
    grad_A_rows = torch.zeros_like(boundaries[0])  # [Bt, N, D], summed over rows at the end
    dh = torch.zeros_like(boundaries[0])  # dLoss/dh_t, carried backwards
    w = torch.empty_like(dh)
    dA_buf = dh.new_empty((T,) + dh.shape)
    hs_buf = torch.empty_like(dA_buf)
    for k in reversed(range(boundaries.shape[0])):
        c0 = k * T
        c1 = min(c0 + T, steps)
        # recompute this chunk's decays and states from its boundary state (first n rows)
        dA = dA_buf[: c1 - c0]  # [T, Bt, N, D]
        hs = hs_buf[: c1 - c0]  # [T, Bt, N, D]
        prev = boundaries[k]
        for i, t in enumerate(range(c0, c1)):
            n = active[t]
            torch.mul(_by_group(delta[t, :n, None, :], groups), A_b, out=_by_group(dA[i, :n], groups)).exp_()
            torch.mul(prev[:n], dA[i, :n], out=hs[i, :n]).addcmul_(B[t, :n, :, None], du[t, :n, None, :])
            prev = hs[i]
        # rows past n have dh = 0 at step t: nothing after it reads them
        for i, t in reversed(list(enumerate(range(c0, c1)))):
            n = active[t]
            h_prev = (hs[i - 1] if i > 0 else boundaries[k])[:n]
            dh_n, w_n = dh[:n], w[:n]
            dh_n.addcmul_(C[t, :n, :, None], dy[t, :n, None, :])  # dh_t = dy_t C_t + dA_{t+1} dh_{t+1}
            torch.bmm(dy[t, :n, None, :], hs[i, :n].transpose(1, 2), out=grad_C[t, :n])  # [n, 1, N]
            torch.bmm(du[t, :n, None, :], dh_n.transpose(1, 2), out=grad_B[t, :n])  # [n, 1, N]
            torch.bmm(B[t, :n, None, :], dh_n, out=grad_du[t, :n])  # [n, 1, D]
            dh_n.mul_(dA[i, :n])  # now dLoss/dh_{t-1} from step t
            torch.mul(dh_n, h_prev, out=w_n)  # dLoss/d(delta_t A) elementwise
            grad_A_rows[:n].addcmul_(w_n, delta[t, :n, None, :])
            _by_group(w_n, groups).mul_(A_b)
            torch.sum(w_n, dim=1, out=grad_logdecay[t, :n])
    grad_du = grad_du.squeeze(2)
    grad_delta = grad_logdecay + grad_du * u
    grad_u = grad_du * delta
    return grad_u, grad_delta, grad_A_rows, grad_B.squeeze(2), grad_C.squeeze(2)


class _SelectiveScan(torch.autograd.Function):
    """y = scan(u, delta, A, B, C) in time-major layout; see the module docstring.

    u, delta: [L, Bt, D]; A: [D, N], or [G, D, N] for a batch of G equal groups of
    consecutive rows (group g uses A[g]); B, C: [L, Bt, N].  The rows are scanned in
    slices of ``rows`` rows per group (the same rows of every group), each slice a
    contiguous copy; the slicing happens here rather than in autograd, so that backward
    writes each slice's gradients in place instead of summing zero-padded copies.

    With ``lengths`` ([Bt] valid steps per row, one group only) the rows are taken
    longest first, and each step computes only the rows still inside their length: a
    slice stops at its longest row, and y is 0 from each row's length on.
    """

    @staticmethod
    def forward(ctx, u, delta, A, B, C, rows, lengths):
        length, batch, d_inner = u.shape
        groups = A.shape[0] if A.dim() == 3 else 1
        A_t = A.transpose(-1, -2).contiguous()  # [N, D] or [G, N, D]
        plan = _slice_plan(batch // groups, rows, length, lengths)
        y = (u.new_zeros if lengths is not None else u.new_empty)(length, batch, d_inner)
        slices = []
        for index, active in plan:
            y_i, boundaries, T = _scan_forward(
                *(_rows_of_every_group(t, index, groups) for t in (u, delta)), A_t,
                *(_rows_of_every_group(t, index, groups) for t in (B, C)), groups, active,
            )
            _put_rows_of_every_group(y, index, y_i, groups)
            slices.append((boundaries, T))
        ctx.save_for_backward(u, delta, A_t, B, C)
        ctx.slices = slices  # internal tensors, never seen by the caller
        ctx.plan, ctx.groups, ctx.skips = plan, groups, lengths is not None
        return y

    @staticmethod
    def backward(ctx, dy):
        u, delta, A_t, B, C = ctx.saved_tensors
        groups = ctx.groups
        dy = dy.contiguous()
        new = torch.zeros_like if ctx.skips else torch.empty_like  # rows of no slice get 0
        grads = [new(t) for t in (u, delta)] + [None] + [new(t) for t in (B, C)]
        grad_A_rows = None
        for (index, active), (boundaries, T) in zip(ctx.plan, ctx.slices):
            parts = _scan_backward(
                *(_rows_of_every_group(t, index, groups) for t in (u, delta)), A_t,
                *(_rows_of_every_group(t, index, groups) for t in (B, C)),
                boundaries, T, groups, _rows_of_every_group(dy, index, groups), active,
            )
            for grad, part in zip(grads, parts):
                if grad is not None:
                    _put_rows_of_every_group(grad, index, part, groups)
            summed = _by_group(parts[2], groups).sum(-3)  # [N, D] or [G, N, D]
            grad_A_rows = summed if grad_A_rows is None else grad_A_rows.add_(summed)
        if grad_A_rows is None:  # every row empty: nothing was computed
            grad_A_rows = torch.zeros_like(A_t)
        grad_u, grad_delta, _, grad_B, grad_C = grads
        return grad_u, grad_delta, grad_A_rows.transpose(-1, -2), grad_B, grad_C, None, None


def _slice_plan(per_group, rows, length, lengths):
    """[(rows of the slice, active rows per step or None)]: a ``slice`` of consecutive rows
    (of every group) without lengths; with lengths, a tensor of row indices, longest first,
    and the count of rows inside their length at each step up to the slice's longest."""
    if lengths is None:
        return [(slice(i, i + rows), None) for i in range(0, per_group, rows)]
    order = torch.argsort(lengths, descending=True, stable=True)
    sorted_lengths = lengths[order].clamp(0, length).tolist()
    plan = []
    for i in range(0, per_group, rows):
        chunk = sorted_lengths[i : i + rows]  # descending
        active, n = [], len(chunk)
        for t in range(chunk[0]):
            while chunk[n - 1] <= t:  # the shortest rows still counted have ended
                n -= 1
            active.append(n)
        if active:  # a slice of empty rows computes nothing (y stays 0)
            plan.append((order[i : i + rows], active))
    return plan


def _rows_of_every_group(t, index, groups):
    """[L, G*per_group, k] -> the rows ``index`` (a slice, or a tensor of row indices with one
    group) of each group, as one contiguous [L, G*r, k]."""
    if not isinstance(index, slice):
        return t.index_select(1, index)
    if groups == 1:
        return t[:, index].contiguous()
    length = t.shape[0]
    return t.view(length, groups, t.shape[1] // groups, -1)[:, :, index].reshape(length, -1, t.shape[-1])


def _put_rows_of_every_group(out, index, part, groups):
    """The inverse of :func:`_rows_of_every_group`: write part [L, G*r, k] into out's rows."""
    if not isinstance(index, slice):
        out.index_copy_(1, index, part)
    elif groups == 1:
        out[:, index] = part
    else:
        length = out.shape[0]
        view = out.view(length, groups, out.shape[1] // groups, -1)
        view[:, :, index] = part.view(length, groups, -1, part.shape[-1])


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


def scan_time_major(u, delta, A, B, C, lengths=None):
    """Core scan in time-major layout: u, delta [L, B, D]; B, C [L, B, N] -> y [L, B, D].

    ``lengths`` ([B] valid steps per right-padded row, one A only): steps at or after a
    row's length are not computed (y is 0 there, and they get no gradient).  Being causal,
    the scan gives every valid step the same y as without lengths; a batch whose rows
    are mostly shorter than L costs about mean(length) / L of the full scan.

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
    if lengths is not None and (groups > 1 or lengths.shape != (batch,)):
        raise ValueError(f"lengths must be [{batch}] (one per row) and A one [D, N]; got lengths "
                         f"{tuple(lengths.shape)} with {groups} group(s)")
    rows = max(1, slice_rows(batch, d_inner, A.shape[-1]) // groups)  # per group, per slice
    y = _SelectiveScan.apply(u, delta, A, B, C, rows, lengths)  # [L, B, D]
    return y.to(out_dtype)


# Per-step state floats of one batch slice (about 4 MB in float32).
_SLICE_ELEMENTS = 1 << 20


def slice_rows(batch, d_inner, d_state):
    """Batch rows per scan slice so that one step's state holds ~_SLICE_ELEMENTS floats."""
    return int(max(1, min(batch, _SLICE_ELEMENTS // max(1, d_inner * d_state))))
