"""TowerTransformer: tokens of a jet attend only to each other (a jet's output does not depend on the
other jets of the packed batch), the output permutes with the tokens, the summary conditions it, and
the hit model's call convention (guided_network) drives it."""

from __future__ import annotations

import pytest
import torch

from e2econd.config import ModelConfig
from e2econd.diffusion.denoiser import guided_network
from e2econd.model.tower_transformer import TowerTransformer

pytestmark = pytest.mark.usefixtures("one_thread")
F, S = 12, 5


def _model():
    torch.manual_seed(0)
    m = TowerTransformer(ModelConfig(family="towers", width=16, blocks=2, heads=2, cond_width=16), F, S)
    for p in m.parameters():  # adaLN-Zero starts at 0: give every weight a value so the test can fail
        torch.nn.init.normal_(p, std=0.3)
    return m.eval()


def _cond(B, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "pt": torch.randn(B, generator=g),
        "m0": torch.randn(B, generator=g),
        "y": torch.randint(0, 2, (B,), generator=g),
        "summary": torch.randn(B, S, generator=g),
    }


def _run(m, x, lengths, cond, t):
    cu = torch.zeros(len(lengths) + 1, dtype=torch.int32)
    cu[1:] = torch.cumsum(torch.tensor(lengths), 0)
    with torch.no_grad():
        return m.forward_packed(x, torch.zeros(x.shape[0], dtype=torch.long), cu, t, cond)


def test_jets_are_independent_and_permutation_equivariant():
    m = _model()
    lengths = [7, 3, 11]
    x = torch.randn(sum(lengths), F, generator=torch.Generator().manual_seed(1))
    cond, t = _cond(3), torch.tensor([0.2, 0.5, 0.9])
    v = _run(m, x, lengths, cond, t)
    for j, (a, n) in enumerate(zip([0, 7, 10], lengths)):
        alone = _run(m, x[a : a + n], [n], {k: c[j : j + 1] for k, c in cond.items()}, t[j : j + 1])
        torch.testing.assert_close(v[a : a + n], alone, rtol=1e-5, atol=1e-5)
    perm = torch.randperm(11, generator=torch.Generator().manual_seed(2))
    x2 = x.clone()
    x2[10:] = x[10:][perm]
    v2 = _run(m, x2, lengths, cond, t)
    torch.testing.assert_close(v2[10:], v[10:][perm], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(v2[:10], v[:10], rtol=0, atol=0)


def test_summary_and_time_condition_the_output():
    m = _model()
    x = torch.randn(9, F, generator=torch.Generator().manual_seed(3))
    cond, t = _cond(1), torch.tensor([0.4])
    base = _run(m, x, [9], cond, t)
    other = dict(cond, summary=cond["summary"] + 1.0)
    assert (base - _run(m, x, [9], other, t)).abs().max() > 1e-3
    assert (base - _run(m, x, [9], cond, torch.tensor([0.8]))).abs().max() > 1e-3


def test_guided_network_drives_it_like_the_hit_model():
    m = _model()
    x = torch.randn(10, F, generator=torch.Generator().manual_seed(4))
    cu = torch.tensor([0, 4, 10], dtype=torch.int32)
    ch = torch.zeros(10, dtype=torch.long)
    cond = _cond(2)
    net1 = guided_network(m, ch, cu, 6, cond, 2, guidance=1.0)
    with torch.no_grad():
        direct = m.forward_packed(x, ch, cu, torch.full((2,), 0.3), cond)
        torch.testing.assert_close(net1(x, 0.3), direct)
        w = 2.0
        uncond = m.forward_packed(x, ch, cu, torch.full((2,), 0.3), cond, torch.ones(2, dtype=torch.bool))
        torch.testing.assert_close(
            guided_network(m, ch, cu, 6, cond, 2, guidance=w)(x, 0.3),
            uncond + w * (direct - uncond),
            rtol=1e-5,
            atol=1e-5,
        )
