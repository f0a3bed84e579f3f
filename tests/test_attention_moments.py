"Moment rules for attention and LayerNorm (chapter 04b, § Attention): each against Monte Carlo or mask enumeration, on its mean and its variance, with planted bugs."
import itertools, math
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from hypothesis import given, strategies as st
import fastdropout_nb.propagation as P
from fastdropout_nb.propagation import (Moments, layer_norm_rule, matmul_rule, softmax_rule, attention_rule, mha_rule,
                                        moment_propagation, softmax_mean)
from fastdropout_nb.testing import assert_mc_close

D = torch.float64
LN_BOUND, SOFTMAX_BOUND = (0.25, 0.6), 0.05      # chapter 04b § Attention measures 0.18 ρ, 0.52 ρ² (80 inputs) and 0.022 v² (60 rows); 300 inputs gave 0.23 ρ, 0.53 ρ², 0.042 v²


def ln_problem(seed, d, rho):
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(d, dtype=D, generator=g) * 1.5
    return m, rho * m.var() * 2 * torch.rand(d, dtype=D, generator=g)


def ln_check(rule, seed, d, rho, n=20_000):
    "LayerNorm's rule against Monte Carlo of F.layer_norm: |Δmean| ≤ 0.25 ρ, |Δvar| ≤ 0.6 ρ² (plus 5 standard errors)."
    m, v = ln_problem(seed, d, rho)
    y = F.layer_norm(m + v.sqrt() * torch.randn(n, d, dtype=D, generator=torch.Generator().manual_seed(seed + 1)), (d,))
    r = rule(Moments(m, v), (d,))
    assert_mc_close(y, r.mean, floor=LN_BOUND[0] * rho, what='LayerNorm mean')
    assert_mc_close((y - y.mean(0)) ** 2, r.var, k=6.0, floor=LN_BOUND[1] * rho ** 2, what='LayerNorm var')


def test_layer_norm_rule_without_noise_is_layer_norm():
    torch.manual_seed(0)
    x, w, b = torch.randn(3, 5, 16, dtype=D), torch.randn(16, dtype=D), torch.randn(16, dtype=D)
    r = layer_norm_rule(Moments(x, torch.zeros_like(x)), (16,), w, b, 1e-5)
    assert torch.allclose(r.mean, F.layer_norm(x, (16,), w, b, 1e-5), atol=1e-12) and float(r.var.abs().max()) == 0
    m, v = ln_problem(0, 16, 0.1)
    plain, affine = layer_norm_rule(Moments(m, v), (16,)), layer_norm_rule(Moments(m, v), (16,), w, b)
    assert torch.allclose(affine.mean, plain.mean * w + b, atol=1e-14) and torch.allclose(affine.var, plain.var * w * w, atol=1e-14)


@given(seed=st.integers(0, 10_000), d=st.sampled_from([8, 16, 32, 64]), rho=st.floats(1e-3, 0.3))
def test_layer_norm_rule_against_monte_carlo(seed, d, rho):
    ln_check(layer_norm_rule, seed, d, rho)


@pytest.mark.parametrize('bug', ['normaliser without the variances', 'variance without the normaliser term', 'std for var'])
def test_layer_norm_planted_bugs_are_caught(bug):
    def planted(x, shape):
        r = layer_norm_rule(x, shape)
        if bug == 'normaliser without the variances': return layer_norm_rule(Moments(x.mean, x.var * 0), shape).__class__(
            layer_norm_rule(Moments(x.mean, x.var * 0), shape).mean, r.var)
        if bug == 'std for var': return Moments(r.mean, r.var.sqrt())
        c = x.mean - x.mean.mean(-1, keepdim=True); s2 = (c * c).mean(-1, keepdim=True) + x.var.mean(-1, keepdim=True)
        return Moments(r.mean, x.var / s2)                       # the normaliser held fixed
    with pytest.raises(AssertionError): ln_check(planted, 3, 16, 0.3, n=100_000)


def _gauss(g, shape, scale=1.0, noise=0.5):
    return torch.randn(shape, dtype=D, generator=g) * scale, (noise * torch.rand(shape, dtype=D, generator=g)) ** 2


def matmul_check(rule, seed, t, s, d, n=20_000):
    "a @ b of independent Gaussian factors (a (t, d), b (d, s)) against Monte Carlo: exact, 5 standard errors."
    g = torch.Generator().manual_seed(seed)
    (ma, va), (mb, vb) = _gauss(g, (t, d)), _gauss(g, (d, s))
    a = ma + va.sqrt() * torch.randn(n, t, d, dtype=D, generator=g)
    b = mb + vb.sqrt() * torch.randn(n, d, s, dtype=D, generator=g)
    y, r = a @ b, rule(Moments(ma, va), Moments(mb, vb))
    assert_mc_close(y, r.mean, what='product mean'); assert_mc_close((y - y.mean(0)) ** 2, r.var, k=6.0, what='product var')


@given(seed=st.integers(0, 10_000), t=st.integers(1, 4), s=st.integers(1, 4), d=st.integers(1, 6))
def test_product_of_noisy_factors_against_monte_carlo(seed, t, s, d):
    matmul_check(matmul_rule, seed, t, s, d)


@pytest.mark.parametrize('bug', ['product of variances dropped', 'std for var'])
def test_product_planted_bugs_are_caught(bug):
    def planted(a, b):
        (ma, va), (mb, vb) = a, b
        if bug == 'std for var': return Moments(ma @ mb, (va @ (mb * mb + vb) + (ma * ma) @ vb).sqrt())
        return Moments(ma @ mb, va @ (mb * mb) + (ma * ma) @ vb)
    with pytest.raises(AssertionError): matmul_check(planted, 1, 3, 3, 4)


def softmax_check(rule, seed, k, std, n=20_000):
    "Softmax of independent Gaussian scores: mean = softmax_mean(unscented) (1e-12); var against Monte Carlo, |Δ| ≤ 0.05 v² + 5 SE."
    g = torch.Generator().manual_seed(seed)
    m, v = 3 * torch.randn(k, dtype=D, generator=g), (std * torch.rand(k, dtype=D, generator=g)) ** 2
    y, r = (m + v.sqrt() * torch.randn(n, k, dtype=D, generator=g)).softmax(-1), rule(Moments(m, v))
    assert torch.allclose(r.mean, softmax_mean(m, v, method='unscented'), atol=1e-12)
    assert_mc_close((y - y.mean(0)) ** 2, r.var, k=6.0, floor=SOFTMAX_BOUND * float(v.max()) ** 2, what='softmax var')


@given(seed=st.integers(0, 10_000), k=st.integers(2, 10), std=st.floats(0.1, 1.0))
def test_softmax_rule_against_monte_carlo(seed, k, std):
    softmax_check(softmax_rule, seed, k, std)


def test_softmax_planted_bug_is_caught():
    "The second moment taken for the variance (mean² not subtracted) fails."
    planted = lambda x: Moments(softmax_rule(x).mean, softmax_rule(x).var + softmax_rule(x).mean ** 2)
    with pytest.raises(AssertionError): softmax_check(planted, 0, 4, 1.0)


def _enumerated_attention(q, k, v, p, proj):
    "Mean and variance of proj(dropout(softmax(q kᵀ/√d)) @ v) over every mask of the weights (noise-free q, k, v; one example)."
    a = (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).softmax(-1)
    outs, probs = [], []
    for bits in itertools.product([0.0, 1.0], repeat=a.numel()):
        g = torch.tensor(bits, dtype=D).reshape(a.shape)
        outs.append(proj((a * g / (1 - p)) @ v)); probs.append(float(((1 - p) ** g * p ** (1 - g)).prod()))
    outs, probs = torch.stack(outs), torch.tensor(probs, dtype=D)[:, None, None, None]
    mean = (probs * outs).sum(0)
    return mean, (probs * (outs - mean) ** 2).sum(0)


def test_attention_weights_dropout_is_exact_through_a_linear_map():
    "Noise-free q, k, v (1 example, 2 heads, 2 × 2 weights each): mean and variance through a head-mixing linear map against all 256 masks."
    torch.manual_seed(0)
    q, k, v, W, p = torch.randn(1, 2, 2, 3, dtype=D), torch.randn(1, 2, 2, 3, dtype=D), torch.randn(1, 2, 2, 3, dtype=D), torch.randn(4, 6, dtype=D), 0.3
    proj = lambda o: F.linear(o.transpose(1, 2).flatten(2), W)
    mean, var = _enumerated_attention(q, k, v, p, proj)
    out = P._map_traced(attention_rule(q, k, v, p), proj)
    assert torch.allclose(out.mean, mean[0] if mean.dim() > out.mean.dim() else mean, atol=1e-12)
    assert torch.allclose(out.var, var, atol=1e-12)
    flat = F.linear(attention_rule(q, k, v, p).var.transpose(1, 2).flatten(2), W * W)    # the weights' entries shared by a token's features ignored
    assert not torch.allclose(flat, var, rtol=0.05)


def test_attention_with_noisy_values_against_monte_carlo():
    "Noise-free q, k; Gaussian v with independent entries; dropout on the weights: exact (w independent of v), 5 standard errors."
    g = torch.Generator().manual_seed(2)
    q, k = torch.randn(1, 2, 3, 4, dtype=D, generator=g), torch.randn(1, 2, 3, 4, dtype=D, generator=g)
    mv, vv = _gauss(g, (1, 2, 3, 4)); W, p, n = torch.randn(3, 8, dtype=D, generator=g), 0.4, 200_000
    a = (q @ k.transpose(-2, -1) / 2.0).softmax(-1)
    gates = (torch.rand(n, 2, 3, 3, dtype=D, generator=g) > p).to(D) / (1 - p)
    vs = mv + vv.sqrt() * torch.randn(n, 2, 3, 4, dtype=D, generator=g)
    proj = lambda o: F.linear(o.transpose(1, 2).flatten(2), W)
    y = proj((a * gates) @ vs)
    out = P._map_traced(attention_rule(q, k, Moments(mv, vv), p), proj)
    assert_mc_close(y, out.mean[0], what='attention mean'); assert_mc_close((y - y.mean(0)) ** 2, out.var[0], k=6.0, what='attention var')


class HandAttention(nn.Module):
    "softmax(q kᵀ/√d) → nn.Dropout on the weights → @ v → a head on the first token, then a dropout and a second head."
    def __init__(self, d=4):
        super().__init__(); self.q, self.k, self.v, self.drop, self.head, self.out = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d), nn.Dropout(0.3), nn.Linear(d, 3), nn.Linear(3, 2)
    def forward(self, x):
        w = self.drop((self.q(x) @ self.k(x).transpose(-2, -1) / 2.0).softmax(-1))
        return self.out(F.dropout(self.head((w @ self.v(x))[:, 0]), 0.2, self.training))

class Sdpa(nn.Module):
    "A GPT-style attention on the noise-free input: scaled_dot_product_attention(dropout_p = p in training), proj, token mean."
    def __init__(self, causal=True, p=0.3):
        super().__init__(); self.qkv, self.proj, self.fc, self.p, self.causal = nn.Linear(4, 12), nn.Linear(4, 4), nn.Linear(4, 2), p, causal
    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, 2, 2).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, dropout_p=self.p if self.training else 0.0, is_causal=self.causal)
        return self.fc(self.proj(a.transpose(1, 2).reshape(b, t, d)).mean(1))

class Mha(nn.Module):
    def __init__(self): super().__init__(); self.att, self.fc = nn.MultiheadAttention(4, 2, dropout=0.3, batch_first=True), nn.Linear(4, 2)
    def forward(self, x): return self.fc(self.att(x, x, x)[0].mean(1))


def train_mode_samples(net, x, n):
    "The net's outputs in training mode (every dropout sampling), n times: (n, N, K)."
    net.train()
    with torch.no_grad(): return net(x.repeat(n, *[1] * (x.dim() - 1))).reshape(n, len(x), -1)


@pytest.mark.parametrize('make', [HandAttention, Sdpa, lambda: Sdpa(False), Mha], ids=['hand', 'sdpa_causal', 'sdpa', 'mha'])
def test_attention_dropout_on_noise_free_input_is_exact(make):
    "Dropout on the weights of attention over a noise-free input, then linear maps: mean and variance exact (Monte Carlo, 5 SE)."
    torch.manual_seed(0)
    net, x = make().double(), torch.randn(3, 4, 4, dtype=D)
    with torch.no_grad(): mean, var = moment_propagation(net.eval())(x)
    torch.manual_seed(1)
    y = train_mode_samples(net, x, 20_000)
    assert_mc_close(y, mean, what='mean'); assert_mc_close((y - y.mean(0)) ** 2, var, k=6.0, what='var')


def test_products_of_noisy_tensors_outside_attention_are_refused():
    class Outer(nn.Module):
        def __init__(self): super().__init__(); self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)
        def forward(self, x):
            x = F.dropout(x, 0.2, self.training)
            return (self.a(x)[:, :, None] @ self.b(x)[:, None, :]).flatten(1)
    with pytest.raises(ValueError, match="node 'matmul'.*product of two noisy tensors has no rule outside attention"):
        moment_propagation(Outer())


@pytest.mark.parametrize('layer', [nn.TransformerDecoderLayer(4, 2, 8, batch_first=True), nn.LSTM(4, 4, 2, dropout=0.3, batch_first=True)],
                         ids=['decoder', 'lstm'])
def test_other_layers_dropping_inside_are_refused(layer):
    class Net(nn.Module):
        def __init__(self): super().__init__(); self.layer, self.fc = layer, nn.Linear(4, 2)
        def forward(self, x):
            h = self.layer(x, x) if isinstance(self.layer, nn.TransformerDecoderLayer) else self.layer(x)[0]
            return self.fc(h.mean(1))
    with pytest.raises(ValueError, match="drops inside itself"): moment_propagation(Net())
