"""The torch selective scan and the Mamba block against the paper's equations."""
import math

import pytest
import torch
import torch.nn.functional as F

import recbole_mamba.ssm.scan_torch as scan_torch
from recbole_mamba.ssm import Mamba, scan_time_major, selective_scan_torch
from recbole_mamba.ssm.mamba import causal_depthwise_conv


def sequential_scan(u, delta, A, B, C):
    """Independent reference: the recurrence written element by element in time."""
    length, batch, d_inner = u.shape
    h = torch.zeros(batch, d_inner, A.shape[1], dtype=u.dtype)
    ys = []
    for t in range(length):
        decay = torch.exp(delta[t].unsqueeze(-1) * A)  # [B, D, N]
        h = decay * h + (delta[t] * u[t]).unsqueeze(-1) * B[t].unsqueeze(1)
        ys.append((h * C[t].unsqueeze(1)).sum(-1))
    return torch.stack(ys)  # [L, B, D]


def random_scan_inputs(length, batch, d_inner, d_state, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(length, batch, d_inner, generator=g, dtype=dtype)
    delta = F.softplus(torch.randn(length, batch, d_inner, generator=g, dtype=dtype))
    A = -torch.exp(torch.randn(d_inner, d_state, generator=g, dtype=dtype))
    B = torch.randn(length, batch, d_state, generator=g, dtype=dtype)
    C = torch.randn(length, batch, d_state, generator=g, dtype=dtype)
    return [t.requires_grad_() for t in (u, delta, A, B, C)]


@pytest.mark.parametrize("chunk_elements", [1, 64, 1 << 21])
@pytest.mark.parametrize("length", [1, 7, 33])
def test_scan_matches_sequential_reference(monkeypatch, chunk_elements, length):
    # small chunk budgets force many recomputation chunks, including a ragged last one
    monkeypatch.setattr(scan_torch, "_CHUNK_ELEMENTS", chunk_elements)
    inputs = random_scan_inputs(length, 3, 5, 4)
    y = scan_time_major(*inputs)
    y_ref = sequential_scan(*inputs)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    grad_out = torch.randn_like(y)
    grads = torch.autograd.grad(y, inputs, grad_out)
    grads_ref = torch.autograd.grad(y_ref, inputs, grad_out)
    for name, g, g_ref in zip("u delta A B C".split(), grads, grads_ref):
        torch.testing.assert_close(g, g_ref, rtol=1e-9, atol=1e-9, msg=f"grad {name}")


def test_scan_float32_agrees_with_float64():
    inputs = random_scan_inputs(50, 4, 16, 8)
    y64 = scan_time_major(*inputs)
    y32 = scan_time_major(*[t.detach().float() for t in inputs])
    assert y32.dtype == torch.float32
    torch.testing.assert_close(y32.double(), y64, rtol=1e-4, atol=1e-4)


def test_gradcheck_small():
    inputs = random_scan_inputs(5, 2, 3, 2)
    assert torch.autograd.gradcheck(scan_time_major, inputs)


def _mamba_ssm_reference():
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_ref
    except Exception as error:  # mamba_ssm <= 2.3.2 fails at import without CUDA
        pytest.skip(f"mamba_ssm's selective_scan_ref not importable here: {type(error).__name__}")
    return selective_scan_ref


def test_matches_mamba_ssm_selective_scan_ref():
    selective_scan_ref = _mamba_ssm_reference()
    g = torch.Generator().manual_seed(1)
    batch, d_inner, d_state, length = 2, 6, 4, 19
    u = torch.randn(batch, d_inner, length, generator=g, requires_grad=True)
    delta = torch.randn(batch, d_inner, length, generator=g, requires_grad=True)
    A = (-torch.rand(d_inner, d_state, generator=g) - 0.1).requires_grad_()
    B = torch.randn(batch, d_state, length, generator=g, requires_grad=True)
    C = torch.randn(batch, d_state, length, generator=g, requires_grad=True)
    D = torch.randn(d_inner, generator=g, requires_grad=True)
    z = torch.randn(batch, d_inner, length, generator=g, requires_grad=True)
    bias = torch.randn(d_inner, generator=g, requires_grad=True)
    args = (u, delta, A, B, C, D, z, bias, True)
    ours = selective_scan_torch(*args)
    ref = selective_scan_ref(*args)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    grad_out = torch.randn_like(ref)
    params = (u, delta, A, B, C, D, z, bias)
    for g_ours, g_ref in zip(torch.autograd.grad(ours, params, grad_out), torch.autograd.grad(ref, params, grad_out)):
        torch.testing.assert_close(g_ours, g_ref, rtol=1e-4, atol=1e-4)


def test_selective_scan_torch_full_interface():
    """D skip, z gate, delta bias and softplus around the core scan, as in mamba_ssm."""
    g = torch.Generator().manual_seed(2)
    batch, d_inner, d_state, length = 2, 4, 3, 9
    u = torch.randn(batch, d_inner, length, generator=g, dtype=torch.float64)
    delta = torch.randn(batch, d_inner, length, generator=g, dtype=torch.float64)
    A = -torch.rand(d_inner, d_state, generator=g, dtype=torch.float64)
    B = torch.randn(batch, d_state, length, generator=g, dtype=torch.float64)
    C = torch.randn(batch, d_state, length, generator=g, dtype=torch.float64)
    D = torch.randn(d_inner, generator=g, dtype=torch.float64)
    z = torch.randn(batch, d_inner, length, generator=g, dtype=torch.float64)
    bias = torch.randn(d_inner, generator=g, dtype=torch.float64)
    y = selective_scan_torch(u, delta, A, B, C, D, z, bias, delta_softplus=True)
    dt = F.softplus(delta + bias[None, :, None])
    core = sequential_scan(u.permute(2, 0, 1), dt.permute(2, 0, 1), A, B.permute(2, 0, 1), C.permute(2, 0, 1))
    expected = (core.permute(1, 2, 0) + u * D[None, :, None]) * F.silu(z)
    torch.testing.assert_close(y, expected)


def mamba_by_the_equations(block, x):
    """Gu & Dao (2023), Algorithm 2, written out with ``block``'s own parameters."""
    batch, length, _ = x.shape
    xz = x @ block.in_proj.weight.t()
    xs, z = xz[..., : block.d_inner], xz[..., block.d_inner :]
    conv = F.conv1d(xs.transpose(1, 2), block.conv1d.weight, block.conv1d.bias,
                    padding=block.d_conv - 1, groups=block.d_inner)[..., :length]
    xs = F.silu(conv).transpose(1, 2)  # [B, L, D]
    x_dbl = xs @ block.x_proj.weight.t()
    dt_low = x_dbl[..., : block.dt_rank]
    Bm = x_dbl[..., block.dt_rank : block.dt_rank + block.d_state]
    Cm = x_dbl[..., block.dt_rank + block.d_state :]
    delta = torch.log1p(torch.exp(dt_low @ block.dt_proj.weight.t() + block.dt_proj.bias))
    A = -torch.exp(block.A_log)
    y = torch.zeros(batch, length, block.d_inner, dtype=x.dtype)
    for b in range(batch):
        h = torch.zeros(block.d_inner, block.d_state, dtype=x.dtype)
        for t in range(length):
            A_bar = torch.exp(delta[b, t, :, None] * A)
            B_bar = delta[b, t, :, None] * Bm[b, t][None, :]
            h = A_bar * h + B_bar * xs[b, t, :, None]
            y[b, t] = h @ Cm[b, t] + block.D * xs[b, t]
    y = y * F.silu(z)
    return y @ block.out_proj.weight.t()


def test_mamba_block_matches_paper_equations_float64():
    torch.manual_seed(0)
    block = Mamba(d_model=8, d_state=4, d_conv=4, expand=2, backend="torch").double()
    x = torch.randn(2, 13, 8, dtype=torch.float64, requires_grad=True)
    y = block(x)
    y_ref = mamba_by_the_equations(block, x)
    assert (y - y_ref).abs().max().item() < 1e-6
    grad_out = torch.randn_like(y)
    (gx,) = torch.autograd.grad(y, x, grad_out)
    (gx_ref,) = torch.autograd.grad(y_ref, x, grad_out)
    assert (gx - gx_ref).abs().max().item() < 1e-6


@pytest.mark.parametrize("length", [1, 3, 4, 9])
@pytest.mark.parametrize("time_dim", [0, 1])
def test_causal_depthwise_conv_is_the_padded_conv1d(length, time_dim):
    """The shifted multiply-add conv (either layout) against F.conv1d on channels-first
    input, forward and the gradients of x, weight and bias, in float64; lengths shorter
    than the kernel too."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(3, length, 6, generator=g, dtype=torch.float64, requires_grad=True)  # [B, L, D]
    weight = torch.randn(6, 4, generator=g, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(6, generator=g, dtype=torch.float64, requires_grad=True)
    expected = F.conv1d(x.transpose(1, 2), weight[:, None, :], bias, padding=3, groups=6)[..., :length].transpose(1, 2)
    laid_out = x if time_dim == 1 else x.transpose(0, 1)
    out = causal_depthwise_conv(laid_out, weight, bias, time_dim)
    out = out if time_dim == 1 else out.transpose(0, 1)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    grad = torch.randn(expected.shape, generator=g, dtype=torch.float64)
    for mine, theirs in zip(torch.autograd.grad(out, (x, weight, bias), grad),
                            torch.autograd.grad(expected, (x, weight, bias), grad)):
        torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(lambda *t: causal_depthwise_conv(*t, time_dim),
                                    (laid_out.detach().requires_grad_(), weight, bias))


def test_mamba_block_is_causal():
    torch.manual_seed(0)
    block = Mamba(d_model=8, d_state=4, backend="torch")
    x = torch.randn(1, 10, 8)
    x2 = x.clone()
    x2[:, 6:] = torch.randn(1, 4, 8)
    torch.testing.assert_close(block(x)[:, :6], block(x2)[:, :6])


def test_mamba_parameters_and_state_dict_match_mamba_ssm():
    block = Mamba(d_model=64, d_state=32, d_conv=4, expand=2)
    shapes = {k: tuple(v.shape) for k, v in block.state_dict().items()}
    assert shapes == {
        "A_log": (128, 32),
        "D": (128,),
        "in_proj.weight": (256, 64),
        "conv1d.weight": (128, 1, 4),
        "conv1d.bias": (128,),
        "x_proj.weight": (4 + 2 * 32, 128),
        "dt_proj.weight": (128, 4),
        "dt_proj.bias": (128,),
        "out_proj.weight": (64, 128),
    }
    assert sum(p.numel() for p in block.parameters()) == 38_784
    # Mamba's own init: A = -(1..N) per channel, D = 1, softplus(dt bias) in [dt_min, dt_max]
    torch.testing.assert_close(-torch.exp(block.A_log[0]), -torch.arange(1, 33, dtype=torch.float32))
    assert torch.all(block.D == 1)
    dt = F.softplus(block.dt_proj.bias)
    assert dt.min() >= 1e-3 * (1 - 1e-4) and dt.max() <= 0.1 * (1 + 1e-4)


def test_chunk_length_bounds_memory():
    assert scan_torch.chunk_length(200, 64, 128, 32) * 64 * 128 * 32 <= 2 * scan_torch._CHUNK_ELEMENTS
    assert scan_torch.chunk_length(5, 1, 1, 1) == 5
    assert scan_torch.chunk_length(200, 4096, 512, 64) == 1
    assert math.isfinite(scan_torch.chunk_length(1, 1, 1, 1))


@pytest.mark.parametrize("slice_elements,chunk_elements", [(1 << 20, 1 << 21), (40, 1), (40, 64)])
def test_scan_with_lengths_skips_only_the_padding(monkeypatch, slice_elements, chunk_elements):
    # several slices of length-sorted rows, ragged chunks, empty and full rows
    monkeypatch.setattr(scan_torch, "_SLICE_ELEMENTS", slice_elements)
    monkeypatch.setattr(scan_torch, "_CHUNK_ELEMENTS", chunk_elements)
    length, batch = 11, 9
    inputs = random_scan_inputs(length, batch, 5, 4, seed=3)
    lengths = torch.tensor([11, 0, 3, 11, 1, 7, 4, 10, 2])
    valid = (torch.arange(length)[:, None] < lengths[None, :]).unsqueeze(-1)  # [L, B, 1]
    grad_out = torch.randn(length, batch, 5, dtype=torch.float64)
    y = scan_time_major(*inputs, lengths=lengths)
    assert torch.all(y[~valid.expand_as(y)] == 0)
    grads = torch.autograd.grad(y, inputs, grad_out)
    # the reference: each row scanned on its valid prefix only, by the sequential recurrence
    u, delta, A, B, C = inputs
    y_ref = torch.zeros_like(y)
    for b, n in enumerate(lengths.tolist()):
        if n:
            y_ref[:n, b : b + 1] = sequential_scan(u[:n, b : b + 1], delta[:n, b : b + 1], A, B[:n, b : b + 1],
                                                   C[:n, b : b + 1])
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    grads_ref = torch.autograd.grad(y_ref, inputs, grad_out)
    for name, g, g_ref in zip("u delta A B C".split(), grads, grads_ref):
        torch.testing.assert_close(g, g_ref, rtol=1e-9, atol=1e-9, msg=f"grad {name}")
    # and without lengths, the valid positions are the same numbers
    torch.testing.assert_close(scan_time_major(*inputs) * valid, y, rtol=1e-12, atol=1e-12)


def test_scan_lengths_need_one_per_row():
    inputs = random_scan_inputs(4, 3, 2, 2)
    y = scan_time_major(*inputs, lengths=torch.zeros(3, dtype=torch.long))  # nothing to compute
    assert torch.all(y == 0)
    assert all(torch.all(g == 0) for g in torch.autograd.grad(y.sum(), inputs))
    with pytest.raises(ValueError, match=r"lengths must be \[3\]"):
        scan_time_major(*inputs, lengths=torch.tensor([4, 4]))


def test_mamba_block_with_lengths_keeps_the_valid_positions():
    torch.manual_seed(0)
    block = Mamba(d_model=8, d_state=4, backend="torch").double()
    x = torch.randn(4, 9, 8, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([9, 2, 5, 1])
    valid = (torch.arange(9)[None, :] < lengths[:, None]).unsqueeze(-1)  # [B, L, 1]
    grad_out = torch.randn(4, 9, 8, dtype=torch.float64) * valid
    y_full, y_skip = block(x), block(x, lengths)
    torch.testing.assert_close(y_skip * valid, y_full * valid, rtol=1e-12, atol=1e-12)
    assert torch.isfinite(y_skip).all()
    for g_full, g_skip in zip(torch.autograd.grad(y_full, [x, *block.parameters()], grad_out),
                              torch.autograd.grad(y_skip, [x, *block.parameters()], grad_out)):
        torch.testing.assert_close(g_skip, g_full, rtol=1e-10, atol=1e-10)
