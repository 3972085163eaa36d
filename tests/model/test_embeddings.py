"""Embeddings: Fourier features in closed form, null tokens replace dropped conditions."""

from __future__ import annotations

import math

import pytest
import torch

from e2econd.model import ConditionEmbedding, FourierFeatures, TimeEmbedding

pytestmark = pytest.mark.usefixtures("one_thread")


def test_fourier_closed_form():
    f = FourierFeatures(4, max_freq=8.0, period=2.0)
    x = torch.tensor([0.0, 0.25, 1.0])
    out = f(x)
    assert out.shape == (3, 8)
    freqs = torch.exp(torch.linspace(math.log(0.5), math.log(8.0), 4))
    torch.testing.assert_close(out[:, :4], torch.sin(2 * math.pi * x[:, None] * freqs))
    torch.testing.assert_close(out[:, 4:], torch.cos(2 * math.pi * x[:, None] * freqs))


def test_time_embedding_distinguishes_times():
    torch.manual_seed(0)
    e = TimeEmbedding(16, 8)
    out = e(torch.tensor([0.0, 0.001, 0.5, 1.0]))
    assert out.shape == (4, 16)
    assert (out[0] - out[1]).abs().max() > 0


def test_null_tokens():
    torch.manual_seed(0)
    e = ConditionEmbedding(16, n_classes=2)
    pt, m0, y = torch.tensor([0.1, -1.0]), torch.tensor([0.3, 2.0]), torch.tensor([0, 1])
    kept = e(pt, m0, y)
    dropped = e(pt, m0, y, drop=torch.tensor([True, True]))
    null = e.null_pt + e.null_m0 + e.y.weight[2]
    torch.testing.assert_close(dropped, null.expand(2, -1))
    assert not torch.allclose(kept[0], kept[1])
    mixed = e(pt, m0, y, drop=torch.tensor([False, True]))
    torch.testing.assert_close(mixed[0], kept[0])
    torch.testing.assert_close(mixed[1], null)
