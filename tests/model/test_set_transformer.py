"""Set-transformer denoiser: permutation equivariance, jet independence, padding, conditioning, overfit."""

from __future__ import annotations

import pytest
import torch

from e2econd.config import ModelConfig
from e2econd.diffusion.schedule import CosineSchedule, q_sample, v_target
from e2econd.model import SetTransformer

CFG = ModelConfig(width=32, blocks=2, heads=4, cond_width=32, fourier_features=8)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: torch uses one thread


def _model(seed: int = 0) -> SetTransformer:
    """A model whose zero-initialised adaLN gates and head are randomised (else its output is exactly 0)."""
    torch.manual_seed(seed)
    m = SetTransformer(CFG)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return m.eval()


def _inputs(lengths, n=None, seed=1):
    g = torch.Generator().manual_seed(seed)
    B = len(lengths)
    N = n or max(lengths)
    x = torch.randn(B, N, 3, generator=g)
    ch = torch.randint(0, 3, (B, N), generator=g)
    t = torch.rand(B, generator=g)
    cond = {
        "pt": torch.randn(B, generator=g),
        "m0": torch.randn(B, generator=g),
        "y": torch.randint(0, 2, (B,), generator=g),
    }
    return x, ch, torch.tensor(lengths), t, cond


def test_permutation_equivariance():
    m = _model()
    x, ch, L, t, cond = _inputs([9, 6, 11])
    v = m(x, ch, L, t, cond)
    xp, chp = x.clone(), ch.clone()
    perms = []
    for b, n in enumerate(L.tolist()):
        p = torch.randperm(n, generator=torch.Generator().manual_seed(b))
        perms.append(p)
        xp[b, :n] = x[b, p]
        chp[b, :n] = ch[b, p]
    vp = m(xp, chp, L, t, cond)
    for b, n in enumerate(L.tolist()):
        torch.testing.assert_close(vp[b, :n], v[b, perms[b]], rtol=1e-5, atol=1e-6)
    assert v.abs().sum() > 0  # the check is not vacuous


def test_jets_are_independent_and_padding_is_inert():
    """Each jet's output equals the model run on that jet alone (oracle: batch of one, no padding)."""
    m = _model()
    x, ch, L, t, cond = _inputs([7, 4, 10, 1], n=12)
    v = m(x, ch, L, t, cond)
    for b, n in enumerate(L.tolist()):
        one = m(
            x[b : b + 1, :n],
            ch[b : b + 1, :n],
            L[b : b + 1],
            t[b : b + 1],
            {k: c[b : b + 1] for k, c in cond.items()},
        )
        torch.testing.assert_close(v[b, :n], one[0], rtol=1e-5, atol=1e-6)
        assert torch.all(v[b, n:] == 0)
    # change jet 2 (hits, channel, padding garbage, conditions): jets 0, 1, 3 are unchanged
    x2, ch2, t2 = x.clone(), ch.clone(), t.clone()
    x2[2] = 100 * torch.randn(12, 3)
    x2[0, 7:] = float("nan")  # garbage in padding rows must never leak
    ch2[2] = (ch2[2] + 1) % 3
    t2[2] = 0.01
    cond2 = {k: c.clone() for k, c in cond.items()}
    cond2["pt"][2] = 5.0
    v2 = m(x2, ch2, L, t2, cond2)
    for b in (0, 1, 3):
        torch.testing.assert_close(v2[b], v[b], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(v2[2], v[2])


def test_same_length_batch_independence():
    m = _model()
    x, ch, L, t, cond = _inputs([8, 8, 8])
    v = m(x, ch, L, t, cond)
    x2 = x.clone()
    x2[1] = torch.randn(8, 3)
    v2 = m(x2, ch, L, t, cond)
    torch.testing.assert_close(v2[0], v[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(v2[2], v[2], rtol=1e-5, atol=1e-6)


def test_packed_equals_padded_and_gradients_stay_in_jet():
    m = _model()
    x, ch, L, t, cond = _inputs([5, 3, 6])
    v = m(x, ch, L, t, cond)
    valid = torch.arange(x.shape[1])[None] < L[:, None]
    cu = torch.tensor([0, 5, 8, 14], dtype=torch.int32)
    vp = m.forward_packed(x[valid], ch[valid], cu, t, cond)
    torch.testing.assert_close(vp, v[valid], rtol=1e-5, atol=1e-6)
    xg = x.clone().requires_grad_(True)
    m(xg, ch, L, t, cond)[0].sum().backward()  # output of jet 0 only
    assert xg.grad[0, :5].abs().sum() > 0
    assert torch.all(xg.grad[1:] == 0) and torch.all(xg.grad[0, 5:] == 0)


def test_conditioning_and_null_tokens():
    m = _model()
    x, ch, L, t, cond = _inputs([6, 6])
    base = m(x, ch, L, t, cond)
    # each condition and t matter
    for key, new in (("pt", cond["pt"] + 1), ("m0", cond["m0"] - 1), ("y", 1 - cond["y"])):
        c2 = dict(cond, **{key: new})
        assert not torch.allclose(m(x, ch, L, t, c2), base), key
    assert not torch.allclose(m(x, ch, L, t * 0.5, cond), base)
    # channel embedding matters
    assert not torch.allclose(m(x, (ch + 1) % 3, L, t, cond), base)
    # dropped jets ignore their conditions; kept jets are unaffected by the other's drop
    drop = torch.tensor([True, False])
    d1 = m(x, ch, L, t, cond, drop_cond=drop)
    c2 = {"pt": cond["pt"] + 3, "m0": cond["m0"] + 3, "y": 1 - cond["y"]}
    d2 = m(x, ch, L, t, c2, drop_cond=drop)
    torch.testing.assert_close(d1[0], d2[0])
    torch.testing.assert_close(d1[1], base[1], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(d1[0], base[0])


def test_fresh_model_predicts_zero():
    """adaLN-Zero init: the untrained network is the zero function (so early training is stable)."""
    m = SetTransformer(CFG)
    x, ch, L, t, cond = _inputs([4, 2])
    assert torch.all(m(x, ch, L, t, cond) == 0)


def test_overfit_tiny_fixed_batch():
    """Fixed jets, t and noise: the v-loss must fall far below its starting value (~1 per feature)."""
    torch.manual_seed(0)
    m = SetTransformer(ModelConfig(width=32, blocks=2, heads=4, cond_width=32, fourier_features=8))
    x0, ch, L, t, cond = _inputs([6, 4], seed=3)
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(4))
    a, s = CosineSchedule().alpha_sigma(t)
    a, s = a[:, None, None], s[:, None, None]
    xt, target = q_sample(x0, eps, a, s), v_target(x0, eps, a, s)
    valid = (torch.arange(x0.shape[1])[None] < L[:, None])[..., None].float()
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    losses = []
    for _ in range(300):
        v = m(xt, ch, L, t, cond)
        loss = ((v - target) ** 2 * valid).sum() / (3 * valid.sum())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[0] > 0.3
    assert losses[-1] < 0.01 * losses[0], (losses[0], losses[-1])
