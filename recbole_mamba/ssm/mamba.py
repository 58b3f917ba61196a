"""The Mamba block (Gu & Dao 2023) with ``mamba_ssm.Mamba``'s parameters.

in_proj -> causal depthwise conv1d -> SiLU -> x_proj (dt, B, C) -> dt_proj + softplus
-> selective scan with A = -exp(A_log) and the D skip -> SiLU(z) gate -> out_proj.

Constructor arguments, parameter shapes, initialisation and state_dict keys
(``in_proj``, ``conv1d``, ``x_proj``, ``dt_proj``, ``A_log``, ``D``, ``out_proj``)
follow ``mamba_ssm.modules.mamba_simple.Mamba``, so a checkpoint trained on a GPU
with the CUDA kernels loads on a CPU and gives the same numbers.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from recbole_mamba.ssm.backends import check_backend_name, cuda_kernels, resolve_backend
from recbole_mamba.ssm.scan_torch import scan_time_major


class _CausalDepthwiseConv(torch.autograd.Function):
    """out_t = bias + sum_k weight[:, k] * x_{t - (K-1) + k} along ``time_dim`` (zeros before
    the start), with forward and backward written as K in-place multiply-adds on shifted
    slices: no padded copy of x, and no zero-padded gradient per tap in backward."""

    @staticmethod
    def forward(ctx, x, weight, bias, time_dim):
        length, taps = x.shape[time_dim], weight.shape[1]
        per_tap = weight.t().contiguous()  # [K, D]: each tap's weights contiguous
        out = x.new_zeros(x.shape, dtype=torch.promote_types(x.dtype, weight.dtype))  # as x * weight would be
        for k in range(taps):  # tap 0 reaches furthest back; the same order as a padded conv
            shift = taps - 1 - k
            if shift < length:
                out.narrow(time_dim, shift, length - shift).addcmul_(x.narrow(time_dim, 0, length - shift), per_tap[k])
        if bias is not None:
            out += bias
        ctx.save_for_backward(x, per_tap)
        ctx.time_dim, ctx.has_bias = time_dim, bias is not None
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, per_tap = ctx.saved_tensors  # per_tap: [K, D], the forward's
        time_dim, length, taps = ctx.time_dim, x.shape[ctx.time_dim], per_tap.shape[0]
        grad_out = grad_out.contiguous()
        grad_x = torch.zeros_like(x)
        grad_per_tap = torch.zeros_like(per_tap)
        rows = list(range(x.dim() - 1))  # every dim but the channels
        for k in range(taps):
            shift = taps - 1 - k
            if shift < length:
                g = grad_out.narrow(time_dim, shift, length - shift)
                x_k = x.narrow(time_dim, 0, length - shift)
                grad_x.narrow(time_dim, 0, length - shift).addcmul_(g, per_tap[k])
                grad_per_tap[k] = (g * x_k).sum(rows)
        grad_bias = grad_out.sum(rows) if ctx.has_bias else None
        return grad_x, grad_per_tap.t(), grad_bias, None


def causal_depthwise_conv(x, weight, bias=None, time_dim=1):
    """Depthwise causal convolution of x (time along ``time_dim``, channels last) with
    weight [D, K] and bias [D] or None: ``F.conv1d`` with ``groups=D``, left padding K - 1
    and the first L outputs, without moving the channels first."""
    return _CausalDepthwiseConv.apply(x, weight, bias, time_dim)


class Mamba(nn.Module):
    """One Mamba mixer: [B, L, d_model] -> [B, L, d_model].

    ``backend`` is ``auto`` (CUDA kernels on CUDA tensors when importable, else the
    torch scan), ``torch`` or ``cuda``; it can be changed later with :meth:`set_backend`.
    """

    def __init__(
        self,
        d_model,
        d_state=16,
        d_conv=4,
        expand=2,
        dt_rank="auto",
        dt_min=0.001,
        dt_max=0.1,
        dt_init="random",
        dt_scale=1.0,
        dt_init_floor=1e-4,
        conv_bias=True,
        bias=False,
        use_fast_path=True,
        layer_idx=None,
        device=None,
        dtype=None,
        backend="auto",
    ):
        factory = {"device": device, "dtype": dtype}
        super().__init__()
        self.d_model = d_model
        self.d_state = d_state
        self.d_conv = d_conv
        self.expand = expand
        self.d_inner = int(expand * d_model)
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else dt_rank
        self.use_fast_path = use_fast_path
        self.layer_idx = layer_idx
        check_backend_name(backend)  # the device is known at forward
        self.backend = backend

        self.in_proj = nn.Linear(d_model, self.d_inner * 2, bias=bias, **factory)
        self.conv1d = nn.Conv1d(
            self.d_inner,
            self.d_inner,
            kernel_size=d_conv,
            groups=self.d_inner,
            padding=d_conv - 1,
            bias=conv_bias,
            **factory,
        )
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False, **factory)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True, **factory)

        # dt_proj: weights keep the variance of dt at init; the bias is softplus^-1 of a
        # step size drawn log-uniformly in [dt_min, dt_max] (Mamba's S4D-style init).
        dt_init_std = self.dt_rank**-0.5 * dt_scale
        if dt_init == "constant":
            nn.init.constant_(self.dt_proj.weight, dt_init_std)
        elif dt_init == "random":
            nn.init.uniform_(self.dt_proj.weight, -dt_init_std, dt_init_std)
        else:
            raise ValueError(f"dt_init={dt_init!r} is not 'random' or 'constant'")
        dt = torch.exp(
            torch.rand(self.d_inner, **factory) * (math.log(dt_max) - math.log(dt_min))
            + math.log(dt_min)
        ).clamp(min=dt_init_floor)
        inv_softplus_dt = dt + torch.log(-torch.expm1(-dt))
        with torch.no_grad():
            self.dt_proj.bias.copy_(inv_softplus_dt)
        self.dt_proj.bias._no_reinit = True

        # S4D-real init: A_n = -n for n = 1..d_state in every channel.
        A = torch.arange(1, d_state + 1, dtype=torch.float32, device=device).repeat(self.d_inner, 1)
        self.A_log = nn.Parameter(torch.log(A))  # [d_inner, d_state]
        self.A_log._no_weight_decay = True
        self.D = nn.Parameter(torch.ones(self.d_inner, device=device))  # [d_inner]
        self.D._no_weight_decay = True
        # built last, as upstream does: the same seed then draws the same init
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias, **factory)

    def set_backend(self, backend):
        check_backend_name(backend)
        self.backend = backend

    def forward(self, hidden_states, lengths=None):
        """[B, L, d_model] -> [B, L, d_model].  ``lengths`` ([B], optional) marks each row's
        valid prefix (RecBole's right padding): the torch scan then skips the padding, and
        the outputs on padding are unspecified; the valid positions are the same either way
        (the block is causal).  The kernels compute every position."""
        if self.runs_on_cuda_kernels(hidden_states):
            return self._forward_cuda(hidden_states)
        if self.runs_on_triton(hidden_states):
            return self._forward_triton(hidden_states)
        return self._forward_torch(hidden_states, lengths)

    def runs_on_cuda_kernels(self, hidden_states):
        """True when ``forward`` on these inputs takes the mamba-ssm kernels."""
        return resolve_backend(self.backend, hidden_states.device) == "cuda"

    def runs_on_triton(self, hidden_states):
        """True when ``forward`` on these inputs takes the Triton scan."""
        return resolve_backend(self.backend, hidden_states.device) == "triton"

    def runs_own_kernel(self, hidden_states):
        """True when ``forward`` on these inputs takes a kernel that loops over time
        itself (mamba-ssm's or triton's), so grouping two blocks' scans saves nothing."""
        return self.runs_on_cuda_kernels(hidden_states) or self.runs_on_triton(hidden_states)

    def _forward_triton(self, hidden_states):
        """The Triton scan with delta_bias, softplus, the D skip and the SiLU(z) gate fused
        in; the causal conv is :meth:`_causal_conv` (no ``causal_conv1d`` needed)."""
        from recbole_mamba.ssm.scan_triton import selective_scan_triton

        xz = self.in_proj(hidden_states)  # [B, L, 2 d_inner]
        x, z = xz.chunk(2, dim=-1)
        x = F.silu(self._causal_conv(x))  # [B, L, d_inner]
        dt, B, C = self._split_x_proj(x)
        delta = dt @ self.dt_proj.weight.t()  # [B, L, d_inner]; bias and softplus in the kernel
        y = selective_scan_triton(
            x.transpose(1, 2), delta.transpose(1, 2), -torch.exp(self.A_log.float()),
            B.transpose(1, 2), C.transpose(1, 2), self.D, z=z.transpose(1, 2),
            delta_bias=self.dt_proj.bias, delta_softplus=True,
        )  # [B, d_inner, L]
        return self.out_proj(y.transpose(1, 2))  # [B, L, d_model]

    def _split_x_proj(self, x):
        x_dbl = self.x_proj(x)  # [..., dt_rank + 2N]
        return torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)

    def _forward_torch(self, hidden_states, lengths=None):
        return grouped_torch_forward([self], [hidden_states], lengths)[0]  # [B, L, d_model]

    def _before_scan(self, hidden_states, time_dim=1):
        """in_proj, causal conv, SiLU, x_proj, dt_proj: (x, z, delta, B, C), each laid out
        as ``hidden_states`` ([B, L, *], or [L, B, *] with ``time_dim=0``)."""
        xz = self.in_proj(hidden_states)  # [..., 2 d_inner]
        x, z = xz.chunk(2, dim=-1)  # [..., d_inner] each
        x = F.silu(self._causal_conv(x, time_dim))  # [..., d_inner]
        dt, B, C = self._split_x_proj(x)  # [..., R], [..., N], [..., N]
        delta = F.softplus(self.dt_proj(dt))  # [..., d_inner]
        return x, z, delta, B, C

    def _after_scan(self, y, x, z):
        """D skip, SiLU(z) gate, out_proj: y [..., d_inner] -> [..., d_model]."""
        y = y + x * self.D
        y = y * F.silu(z)
        return self.out_proj(y)

    def _causal_conv(self, x, time_dim=1):
        """``conv1d`` (depthwise, causal) on [B, L, D] (or [L, B, D] with ``time_dim=0``):
        the same weights and result as ``self.conv1d(x.transpose(1, 2))[..., :L]``, as
        :func:`causal_depthwise_conv` (no channels-first copies)."""
        return causal_depthwise_conv(x, self.conv1d.weight[:, 0, :], self.conv1d.bias, time_dim)

    def allocate_state(self, batch, device=None, dtype=None):
        """Zero recurrent state for :meth:`step`: (conv_state, ssm_state).

        conv_state [batch, d_inner, d_conv] holds the last d_conv conv inputs (newest
        last); ssm_state [batch, d_inner, d_state] is the selective-scan state h.
        A zero state is what ``forward`` starts from (the conv's left zero padding).
        """
        device = self.A_log.device if device is None else device
        conv_dtype = self.conv1d.weight.dtype if dtype is None else dtype
        ssm_dtype = self.dt_proj.weight.dtype if dtype is None else dtype
        conv_state = torch.zeros(batch, self.d_inner, self.d_conv, device=device, dtype=conv_dtype)
        ssm_state = torch.zeros(batch, self.d_inner, self.d_state, device=device, dtype=ssm_dtype)
        return conv_state, ssm_state

    def step(self, x_t, conv_state, ssm_state):
        """The recurrent form: one new position in O(1) of the history length.

        x_t [B, d_model] is the input at the next position; returns
        (y_t [B, d_model], conv_state, ssm_state) with the states advanced by one step
        (new tensors; the ones passed in are left as they were).  Running ``step`` over
        positions 0..t from :meth:`allocate_state` gives ``forward``'s output at t.
        """
        xz = self.in_proj(x_t)  # [B, 2 d_inner]
        x, z = xz.chunk(2, dim=-1)  # [B, d_inner] each
        newest = x.unsqueeze(-1).to(conv_state.dtype)  # [B, d_inner, 1]
        conv_state = torch.cat([conv_state[:, :, 1:], newest], dim=-1)  # [B, d_inner, d_conv]
        weight = self.conv1d.weight[:, 0, :]  # [d_inner, d_conv]; tap d_conv-1 meets the newest input
        x = (conv_state * weight).sum(-1)  # [B, d_inner]
        if self.conv1d.bias is not None:
            x = x + self.conv1d.bias
        x = F.silu(x)
        dt, B, C = self._split_x_proj(x)  # [B, R], [B, N], [B, N]
        delta = F.softplus(self.dt_proj(dt)).float()  # [B, d_inner]
        A = -torch.exp(self.A_log.float())  # [d_inner, N]
        decay = torch.exp(delta.unsqueeze(-1) * A)  # [B, d_inner, N]
        drive = (delta * x.float()).unsqueeze(-1) * B.float().unsqueeze(1)  # [B, d_inner, N]
        h = ssm_state.float() * decay + drive  # [B, d_inner, N]
        y = torch.bmm(h, C.float().unsqueeze(-1)).squeeze(-1).to(x.dtype)  # [B, d_inner]
        y = y + x * self.D
        y = y * F.silu(z)
        return self.out_proj(y), conv_state, h.to(ssm_state.dtype)  # [B, d_model]

    def _forward_cuda(self, hidden_states):
        selective_scan_fn, causal_conv1d_fn, _ = cuda_kernels()
        batch, length, _ = hidden_states.shape
        xz = self.in_proj(hidden_states).transpose(1, 2)  # [B, 2 d_inner, L]
        x, z = xz.chunk(2, dim=1)  # [B, d_inner, L] each
        x = causal_conv1d_fn(
            x.contiguous(),
            self.conv1d.weight.squeeze(1),  # [d_inner, d_conv]
            self.conv1d.bias,
            activation="silu",
        )  # [B, d_inner, L]
        dt, B, C = self._split_x_proj(x.transpose(1, 2).reshape(batch * length, self.d_inner))
        delta = (dt @ self.dt_proj.weight.t()).view(batch, length, self.d_inner)  # bias in kernel
        y = selective_scan_fn(
            x,
            delta.transpose(1, 2).contiguous(),  # [B, d_inner, L]
            -torch.exp(self.A_log.float()),
            B.view(batch, length, self.d_state).transpose(1, 2).contiguous(),  # [B, N, L]
            C.view(batch, length, self.d_state).transpose(1, 2).contiguous(),  # [B, N, L]
            self.D.float(),
            z=z.contiguous(),
            delta_bias=self.dt_proj.bias.float(),
            delta_softplus=True,
        )  # [B, d_inner, L]
        return self.out_proj(y.transpose(1, 2))  # [B, L, d_model]


def grouped_torch_forward(blocks, inputs, lengths=None):
    """The torch-backend forward of G Mamba blocks of one shape, block g on inputs[g]
    ([B, L, d_model] each, one shape), with one selective scan for all of them: their
    G x B rows go through one loop over time, A chosen per group.  Returns the G
    outputs.  One block is exactly that block's forward; ``lengths`` ([B], one block
    only) lets its scan skip the padding (see :meth:`Mamba.forward`)."""
    first = blocks[0]
    shapes = {(b.d_model, b.d_state, b.d_inner) for b in blocks}
    if len(shapes) > 1 or len({x.shape for x in inputs}) > 1:
        raise ValueError("grouped_torch_forward needs Mamba blocks of one shape and inputs of one shape")
    # projections stay per block (a per-block Linear is as fast as any batched form);
    # only the scan, the part that loops over time, is shared.  Everything between the
    # two small [*, d_model] transposes runs time-major, the scan's layout, so no
    # [*, d_inner] tensor is ever transposed (those strided copies were ~1/8 of a CPU
    # training step of MDAF)
    pre = [block._before_scan(x.transpose(0, 1).contiguous(), time_dim=0)
           for block, x in zip(blocks, inputs)]  # (x, z, delta, B, C) per block, [L, B, k] each

    def time_major(i):  # i-th pre-scan tensor of every block -> [L, G*B, k]
        parts = [p[i] for p in pre]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    if len(blocks) == 1:
        A = -torch.exp(first.A_log.float())  # [d_inner, N]
    else:
        A = -torch.exp(torch.stack([b.A_log.float() for b in blocks]))  # [G, d_inner, N]
    if len(blocks) > 1:
        lengths = None  # the grouped scan computes every position
    y = scan_time_major(time_major(0), time_major(2), A, time_major(3), time_major(4), lengths)  # [L, G*B, d_inner]
    y = y.chunk(len(blocks), dim=1)  # G x [L, B, d_inner]
    return [block._after_scan(y_g, p[0], p[1]).transpose(0, 1).contiguous()  # [B, L, d_model]
            for block, y_g, p in zip(blocks, y, pre)]


def mamba_pair(first, second, x_first, x_second, grouped=None, lengths=None):
    """``(first(x_first), second(x_second))`` for two Mamba blocks of one shape.

    One block used twice runs once on both inputs.  Two blocks on the torch backend
    share one selective scan (:func:`grouped_torch_forward`) when ``grouped``; by
    default that is on CUDA tensors, where the scan's loop over time is bound by kernel
    launches and one loop instead of two saves half of them.  On a CPU the per-step
    work dominates and the grouped scan's extra copies made it no faster
    (``bench/results/padding.json``), so the blocks run one after the other.  Same
    numbers either way.  On the CUDA or Triton kernels, which loop over time inside one
    launch, each block runs on its own.  ``lengths`` ([B], both inputs right-padded to the
    same valid prefix) lets the blocks that run on their own skip the padding.
    """
    if first is second:
        both = None if lengths is None else torch.cat([lengths, lengths])
        y = first(torch.cat([x_first, x_second]), both)  # [2B, L, d]
        return y[: x_first.shape[0]], y[x_first.shape[0] :]
    if first.runs_own_kernel(x_first) or second.runs_own_kernel(x_second):
        return first(x_first), second(x_second)
    if grouped is None:
        grouped = x_first.is_cuda
    if not grouped:
        return first(x_first, lengths), second(x_second, lengths)
    return tuple(grouped_torch_forward([first, second], [x_first, x_second]))
