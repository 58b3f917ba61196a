"""Padding-aware helpers: reversal of the valid prefix and masked pooling."""
import torch

from recbole_mamba.model.layers import masked_mean, masked_softmax_pool, reverse_valid_prefix, valid_mask


def test_reverse_valid_prefix_every_length():
    max_len = 6
    lengths = torch.arange(1, max_len + 1)  # one row per length 1..L
    seq = torch.zeros(max_len, max_len, dtype=torch.long)
    for row, n in enumerate(lengths.tolist()):
        seq[row, :n] = torch.arange(1, n + 1)  # items 1..n, then 0 padding
    reversed_seq = reverse_valid_prefix(seq, lengths)
    for row, n in enumerate(lengths.tolist()):
        assert reversed_seq[row, :n].tolist() == list(range(n, 0, -1))
        assert reversed_seq[row, n:].tolist() == [0] * (max_len - n)  # padding stays right
    assert torch.equal(reverse_valid_prefix(reversed_seq, lengths), seq)  # involution


def test_reverse_valid_prefix_on_hidden_states():
    torch.manual_seed(0)
    x = torch.randn(3, 5, 4)
    lengths = torch.tensor([5, 2, 3])
    y = reverse_valid_prefix(x, lengths)
    assert torch.equal(y[1, 0], x[1, 1]) and torch.equal(y[1, 1], x[1, 0])
    assert torch.equal(y[1, 2:], x[1, 2:])
    assert torch.equal(y[0], x[0].flip(0))
    assert torch.equal(reverse_valid_prefix(y, lengths), x)


def test_masked_pooling_ignores_padding():
    torch.manual_seed(0)
    h = torch.randn(2, 5, 3)
    lengths = torch.tensor([2, 5])
    mask = valid_mask(lengths, 5)
    scores = torch.randn(2, 5)
    pooled = masked_softmax_pool(h, scores, mask)
    mean = masked_mean(h, mask)
    h2, scores2 = h.clone(), scores.clone()
    h2[0, 2:] = 1e3 * torch.randn(3, 3)  # garbage on row 0's padding
    scores2[0, 2:] = 50.0
    torch.testing.assert_close(masked_softmax_pool(h2, scores2, mask), pooled)
    torch.testing.assert_close(masked_mean(h2, mask), mean)
    torch.testing.assert_close(mean[0], h[0, :2].mean(0))
    weights = torch.softmax(scores[0, :2], dim=0)
    torch.testing.assert_close(pooled[0], weights @ h[0, :2])


def test_valid_mask():
    assert valid_mask(torch.tensor([1, 3]), 4).tolist() == [
        [True, False, False, False],
        [True, True, True, False],
    ]
