"""Tests of `fastdropout_nb.uncertainty` (chapter 04c): the logits' covariance against every mask on graphs that are
linear after the first dropout, against Monte Carlo on ReLU nets (tolerance: the stated linearisation error plus
5 standard errors), the Gaussian softmax against Monte Carlo, entropy and mutual information, bad input, and
planted bugs that the checks must catch."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from hypothesis import given, strategies as st
import fastdropout_nb.uncertainty as U
import fastdropout_nb.propagation as P
from fastdropout_nb.uncertainty import (covariance_propagation, softmax_stats, gaussian_cross_entropy, predict_uncertainty,
                                        mc_outputs, entropy, UNSCENTED_BOUND, QMC_BOUND, qmc_points)
from fastdropout_nb.moments import softmax_mean
from fastdropout_nb.nn import fast_dropout_cross_entropy
from fastdropout_nb.testing import enumerated_moments, assert_mc_close

torch.set_num_threads(1)
D = torch.float64

# ---------------------------------------------------------------- linear after the first dropout: every mask
class LinearAfterDropout(nn.Module):
    "dropout → linear → dropout → linear, then a drawn mix of shared-source adds, centring, two heads."
    def __init__(self, n_in, width, K, p1, p2, shared, centre, heads, channel):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(n_in, width).to(D), nn.Linear(width, K).to(D), nn.Linear(K, K).to(D)
        self.p1, self.p2, self.shared, self.centre, self.heads, self.channel = p1, p2, shared, centre, heads, channel
        self.d2 = nn.Dropout2d(p1) if channel else None
    def forward(self, x):
        if self.channel: x = torch.flatten(self.d2(x.reshape(x.shape[0], 2, -1, 1)), 1)
        else: x = F.dropout(x, self.p1, self.training)
        h = self.a(x)
        z = self.b(F.dropout(h, self.p2, self.training))
        if self.shared: z = z + self.c(z)                                   # two paths from one dropped vector
        if self.centre: z = z - z.mean(1, keepdim=True)                     # h - h.mean(1)
        if self.heads: z = z + 0.5 * h[:, :z.shape[1]] - h[:, -z.shape[1]:]  # heads of the first dropped layer
        return z

def _exact_check(net, x, rtol=1e-9):
    "The linearised covariance against every mask: each entry within rtol of the largest."
    mean, cov = covariance_propagation(net)(x)
    em, ec = enumerated_moments(net, x)
    scale = float(ec.abs().max())
    assert float((mean.detach() - em).abs().max()) <= 1e-9 * float(em.abs().max() + 1)
    err = float((cov - ec).abs().max())
    assert err <= rtol * scale, f"covariance off by {err:.3g} of {scale:.3g}"

@st.composite
def linear_graphs(draw):
    n_in, width, K = draw(st.integers(2, 6)), draw(st.integers(2, 5)), draw(st.integers(2, 4))
    width = min(width, 12 - n_in)                                      # <= 12 droppable units
    channel = draw(st.booleans()) and n_in % 2 == 0
    ps = draw(st.tuples(st.floats(0.05, 0.8), st.floats(0.05, 0.8)))
    flags = draw(st.tuples(st.booleans(), st.booleans(), st.booleans()))
    seed = draw(st.integers(0, 10_000))
    torch.manual_seed(seed)
    net = LinearAfterDropout(n_in, max(width, K), K, *ps, *flags, channel).eval()
    x = torch.randn(3, n_in, dtype=D) * draw(st.sampled_from([0.1, 1.0, 30.0]))
    return net, x

@given(linear_graphs())
def test_covariance_exact_against_every_mask(graph):
    _exact_check(*graph)

def test_channel_dropout_before_a_convolution_is_exact():
    class Conv(nn.Module):
        def __init__(self):
            super().__init__(); self.conv, self.lin = nn.Conv2d(3, 2, 2).to(D), nn.Linear(8, 3).to(D)
        def forward(self, x): return self.lin(F.dropout(torch.flatten(self.conv(F.dropout2d(x, 0.3, self.training)), 1), 0.2, self.training))
    torch.manual_seed(0)
    _exact_check(Conv().eval(), torch.randn(2, 3, 3, 3, dtype=D))

def test_no_dropout_gives_zero_covariance():
    net = nn.Sequential(nn.Linear(3, 2)).to(D)
    mean, cov = covariance_propagation(net)(torch.randn(4, 3, dtype=D))
    assert cov.shape == (4, 2, 2) and float(cov.abs().max()) == 0

# ---------------------------------------------------------------- nonlinear nets against Monte Carlo
class ReLUNet(nn.Module):
    "Three dropout layers around two ReLU layers; `zero_bias`: one dropout, one ReLU layer with inputs centred at 0, where the residual matters most."
    def __init__(self, zero_bias=False):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(64 if zero_bias else 8, 16), nn.Linear(16, 16), nn.Linear(16, 4)
        self.zero_bias = zero_bias
        if zero_bias:
            for l in (self.a, self.b): nn.init.zeros_(l.bias)
    def forward(self, x):
        h = F.relu(self.a(F.dropout(x, 0.5 if self.zero_bias else 0.3, self.training)))
        if self.zero_bias: return self.c(h)
        h = F.relu(self.b(F.dropout(h, 0.5, self.training)))
        return self.c(F.dropout(h, 0.5, self.training))

# The linearisation's pooled error Σ|Cov − MC| / Σ sqrt(C_kk C_ll) on these nets (seeds 0-2, 20 000 masks), stated with a
# margin over the measured: two ReLU layers, three dropouts: at most 0.036; one ReLU layer after a dropout on 64 inputs: 0.012.
LIN_POOLED = {False: 0.05, True: 0.025}

def _pooled_error(net, x, n_samples=20_000):
    "Pooled error of the linearised covariance against MC and that error's MC noise (5 standard errors, pooled)."
    _, cov = covariance_propagation(net)(x)
    z = mc_outputs(net, x, n_samples, seed=1)
    d = z - z.mean(0)
    prod = torch.einsum('snk,snl->snkl', d, d)
    C, se = prod.mean(0) * n_samples / (n_samples - 1), prod.std(0) / n_samples ** 0.5
    dg = torch.diagonal(C, dim1=1, dim2=2)
    scale = torch.sqrt(dg[:, :, None] * dg[:, None, :]).sum()
    return float((cov - C).abs().sum() / scale), float(5 * se.sum() / scale / np.sqrt(se.numel()))

def _nonlinear_check(seeds=(0, 1, 2)):
    for zero_bias in (False, True):
        for seed in seeds:
            torch.manual_seed(seed)
            net, x = ReLUNet(zero_bias).to(D).eval(), torch.randn(10, 64 if zero_bias else 8, dtype=D)
            err, noise = _pooled_error(net, x)
            assert err <= LIN_POOLED[zero_bias] + noise, f"seed {seed}, zero_bias {zero_bias}: pooled error {err:.3f} > {LIN_POOLED[zero_bias]} + {noise:.3f}"

def test_relu_nets_against_mc():
    _nonlinear_check()

def test_linearised_diagonal_beats_the_twin_on_the_zoo():
    x = torch.rand(20, 64)
    for name, make in P.zoo_models().items():
        torch.manual_seed(0); net = make().eval()
        mean, cov = covariance_propagation(net)(x)
        _, var = P.moment_propagation(net)(x)
        z = mc_outputs(net, x, 2000, seed=3)
        K = z.shape[-1]; C = torch.eye(K) - 1.0 / K                      # log_softmax nets: compare centred covariances
        mc = torch.einsum('snk,snl->nkl', z - z.mean(0), z - z.mean(0)) / 1999
        diag = lambda S: torch.diagonal(C @ S @ C, dim1=1, dim2=2)
        e_lin = float((diag(cov) - diag(mc)).abs().mean() / diag(mc).mean())
        e_twin = float((diag(torch.diag_embed(var.detach())) - diag(mc)).abs().mean() / diag(mc).mean())
        assert e_lin < 0.5 * e_twin, (name, e_lin, e_twin)

# ---------------------------------------------------------------- Gaussian softmax
@st.composite
def gaussians(draw):
    K = draw(st.sampled_from([2, 3, 5]))
    seed = draw(st.integers(0, 10_000))
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(K, K, generator=g, dtype=D)
    cov = A @ A.T
    cov = cov * draw(st.floats(0.1, 2.0)) ** 2 / torch.linalg.eigvalsh(cov)[-1]     # largest std in [0.1, 2]
    return torch.rand(1, K, generator=g, dtype=D) * 8 - 4, cov[None], seed

@given(gaussians())
def test_softmax_stats_against_mc(gauss):
    mu, cov, seed = gauss
    p, h = softmax_stats(mu, cov)
    S = 40_000
    g = torch.Generator().manual_seed(seed + 1)
    z = mu + torch.randn(S, *mu.shape, generator=g, dtype=D) @ torch.linalg.cholesky(cov[0]).T
    v = float(torch.linalg.eigvalsh(cov[0])[-1])
    pm = z.softmax(-1)
    assert_mc_close(pm.numpy(), p.numpy(), floor=UNSCENTED_BOUND['probs'] * v * v, what='E softmax')
    assert_mc_close(entropy(pm).numpy(), h.numpy(), floor=UNSCENTED_BOUND['entropy'] * v * v, what='E entropy')
    y = torch.zeros(1, dtype=torch.long)
    ce = gaussian_cross_entropy(mu, cov, y, 'none')
    assert_mc_close((torch.logsumexp(z, -1) - mu[:, 0]).numpy(), ce.numpy(), floor=UNSCENTED_BOUND['entropy'] * v * v, what='E cross-entropy')

def _qmc_check(mu, cov, seed=0, S=40_000):
    "softmax_stats(points='qmc') against Monte Carlo of the same Gaussian: QMC_BOUND beyond 5 standard errors."
    p, h = softmax_stats(mu, cov, points='qmc')
    g = torch.Generator().manual_seed(seed + 1)
    z = mu + torch.randn(S, *mu.shape, generator=g, dtype=D) @ torch.linalg.cholesky(cov[0]).T
    pm = z.softmax(-1)
    assert_mc_close(pm.numpy(), p.numpy(), floor=QMC_BOUND['probs'], what='E softmax (qmc)')
    assert_mc_close(entropy(pm).numpy(), h.numpy(), floor=QMC_BOUND['entropy'], what='E entropy (qmc)')

@given(gaussians())
def test_qmc_softmax_stats_against_mc(gauss):
    mu, cov, seed = gauss
    _qmc_check(mu, cov, seed)

def test_qmc_diagonal_path_is_the_full_path():
    g = torch.Generator().manual_seed(5)
    mu, var = torch.randn(7, 4, generator=g, dtype=D), torch.rand(7, 4, generator=g, dtype=D) * 3
    for a, b in zip(softmax_stats(mu, var, 'qmc'), softmax_stats(mu, torch.diag_embed(var), 'qmc')):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-13)
    big = softmax_stats(mu.repeat(20_000, 1), var.repeat(20_000, 1), 'qmc')      # evaluated in chunks
    torch.testing.assert_close(big[0][:7], softmax_stats(mu, var, 'qmc')[0], rtol=1e-12, atol=1e-13)
    pts, w = qmc_points(mu, var, 64)
    torch.testing.assert_close((pts * w[:, None, None]).sum(0), mu, rtol=1e-12, atol=1e-12)    # antithetic: the mean exactly
    with pytest.raises(ValueError, match='n_points'): qmc_points(mu, var, 7)
    with pytest.raises(ValueError, match='points'): softmax_stats(mu, var, 'sobol')

@pytest.mark.parametrize('plant', ['covariance for its factor', 'unit draws not mapped to N(0, 1)'])
def test_qmc_planted_bugs_are_caught(plant, monkeypatch):
    if plant == 'covariance for its factor': monkeypatch.setattr(U, 'covariance_factor', lambda cov, jitter=1e-10: cov)
    else: monkeypatch.setattr(torch.special, 'ndtri', lambda u: u - 0.5)
    g = torch.Generator().manual_seed(11)
    A = torch.randn(4, 4, generator=g, dtype=D); cov = A @ A.T; cov = cov * 4 / torch.linalg.eigvalsh(cov)[-1]
    with pytest.raises(AssertionError): _qmc_check(torch.tensor([[1.0, 0.0, -1.0, 0.5]], dtype=D), cov[None])

def test_diagonal_covariance_is_chapter_01s_transform():
    g = torch.Generator().manual_seed(0)
    mu, var = torch.randn(6, 4, generator=g, dtype=D), torch.rand(6, 4, generator=g, dtype=D) * 3
    y = torch.randint(0, 4, (6,), generator=g)
    for cv in (var, torch.diag_embed(var)):
        torch.testing.assert_close(softmax_stats(mu, cv)[0], softmax_mean(mu, var), rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(gaussian_cross_entropy(mu, cv, y, 'none'), fast_dropout_cross_entropy(mu, var, y, 'none'), rtol=1e-12, atol=1e-14)

def test_singular_covariance_along_ones_is_handled():
    K = 4; Cm = torch.eye(K, dtype=D) - 1.0 / K
    g = torch.Generator().manual_seed(0)
    A = torch.randn(K, K, generator=g, dtype=D) * 0.5
    cov = Cm @ A @ A.T @ Cm                                        # singular along 1, as MC's centred logits
    mu = torch.randn(1, K, generator=g, dtype=D)
    p, h = softmax_stats(mu, cov[None])
    assert torch.isfinite(p).all() and torch.isfinite(h).all()
    w, V = torch.linalg.eigh(cov)
    z = mu + torch.randn(40_000, 1, K, generator=g, dtype=D) @ (V * w.clamp_min(0).sqrt()).T
    v = float(w[-1])
    assert_mc_close(z.softmax(-1).numpy(), p.numpy(), floor=UNSCENTED_BOUND['probs'] * v * v, what='E softmax, singular covariance')

def test_zero_variance_gives_softmax_and_zero_mutual_information():
    mu = torch.randn(3, 5, dtype=D)
    for cv in (torch.zeros(3, 5, dtype=D), torch.zeros(3, 5, 5, dtype=D)):
        p, h = softmax_stats(mu, cv)
        torch.testing.assert_close(p, mu.softmax(-1)); torch.testing.assert_close(h, entropy(mu.softmax(-1)))
        assert float((entropy(p) - h).abs().max()) < 1e-12

@given(gaussians())
def test_mutual_information_is_non_negative(gauss):
    mu, cov, _ = gauss
    p, h = softmax_stats(mu, cov)
    assert float((entropy(p) - h).min()) >= -1e-12

# ---------------------------------------------------------------- predict_uncertainty
def test_predict_uncertainty_methods():
    torch.manual_seed(0)
    net, x = P.zoo_models()['mnist_example']().eval(), torch.rand(6, 64)
    student = nn.Sequential(nn.Linear(64, 10))
    for method in U.METHODS:
        u = predict_uncertainty(net, x, method, n_samples=50, student=student)
        assert u['probs'].shape == (6, 10) and torch.allclose(u['probs'].sum(-1), torch.ones(6))
        assert u['entropy'].shape == u['expected_entropy'].shape == u['mutual_info'].shape == (6,)
        assert (u['mutual_info'] >= 0).all() and u['logit_var'].shape == (6, 10)
        if method in ('standard', 'distilled'): assert float(u['mutual_info'].abs().max()) == 0 and float(u['logit_var'].abs().max()) == 0
        if method in ('mc', 'moments_cov'):
            c = u['logit_cov']; assert c.shape == (6, 10, 10) and torch.allclose(c, c.transpose(1, 2))
            assert float(torch.linalg.eigvalsh(c).min()) > -1e-5 * float(c.abs().max())

def test_mc_outputs_average_matches_mc_average():
    torch.manual_seed(0)
    net, x = P.zoo_models()['batchnorm_mlp']().eval(), torch.rand(5, 64)
    z = mc_outputs(net, x, 3000, seed=0)
    mean, se2, _ = P.mc_average(net, x, 3000, seed=7)
    zc = z - z.mean(-1, keepdim=True)
    assert float(((zc.mean(0) - mean).abs() / (2 * se2).sqrt()).max()) < 6          # two independent MC means

# ---------------------------------------------------------------- bad input
def test_bad_input_names_the_argument():
    mu = torch.zeros(2, 3, dtype=D)
    for bad, word in [((mu, torch.zeros(2, 4, dtype=D)), 'cov_or_var'), ((mu, -torch.ones(2, 3, dtype=D)), 'cov_or_var'),
                      ((mu, torch.randn(2, 3, 3, dtype=D)), 'cov_or_var'), ((mu * float('nan'), torch.zeros(2, 3, dtype=D)), 'mean'),
                      ((mu, -torch.eye(3, dtype=D).expand(2, 3, 3) + 0.5), 'cov_or_var'), ((mu, torch.tensor([[1.0, 2, 0], [2, 1, 0], [0, 0, 1]], dtype=D).expand(2, 3, 3)), 'semi-definite'), (([0.0, 1.0], torch.zeros(2)), 'mean')]:
        with pytest.raises(ValueError, match=word): softmax_stats(*bad)
    with pytest.raises(ValueError, match='target'): gaussian_cross_entropy(mu, torch.zeros(2, 3, dtype=D), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match='output'): covariance_propagation(nn.Linear(2, 2), output='probs')
    net = P.zoo_models()['residual_mlp']().eval()
    with pytest.raises(ValueError, match='method'): predict_uncertainty(net, torch.rand(2, 64), 'bald')
    with pytest.raises(ValueError, match='student'): predict_uncertainty(net, torch.rand(2, 64), 'distilled')
    with pytest.raises(ValueError, match='n_samples'): mc_outputs(net, torch.rand(2, 64), 0)
    with pytest.raises(ValueError, match='x'): predict_uncertainty(net, [1.0, 2.0], 'moments')

# ---------------------------------------------------------------- planted bugs: each must make a check fail
def _two_dropouts():
    torch.manual_seed(3)
    return LinearAfterDropout(4, 5, 3, 0.3, 0.5, True, False, True, False).eval(), torch.randn(3, 4, dtype=D)

PLANTS = {
    'dropout source without the v_h term': ('dropout_noise_var', lambda m, v, p: m * m * p / (1 - p), 'exact'),
    'std instead of variance': ('dropout_noise_var', lambda m, v, p: ((m * m + v) * p / (1 - p)).sqrt(), 'exact'),
    'diagonal-only einsum': ('source_covariance', None, 'exact'),
    'residual variance ignored': ('linearised_var', lambda run, a, k: run(*a, **k).var.detach(), 'nonlinear'),
}

@pytest.mark.parametrize('plant', list(PLANTS) + ['slope f(m)/m instead of E f\''])
def test_planted_bugs_are_caught(plant, monkeypatch):
    if plant in PLANTS:
        name, fn, check = PLANTS[plant]
        if name == 'source_covariance':
            orig = U.source_covariance
            fn = lambda J, s: torch.diag_embed(torch.diagonal(orig(J, s), dim1=1, dim2=2))
        monkeypatch.setattr(U, name, fn)
    else:                                   # the ReLU rule's mean keeps its value but moves with slope relu(m)/m
        from dataclasses import replace
        from fastdropout_nb.moments import REGISTRY
        entry = REGISTRY['relu_moments.mean']
        rule = entry.activation.bind()
        def bad_relu(m, v):
            mean, var = rule(m, v)
            return mean.detach() + (F.relu(m) / m).detach() * (m - m.detach()), var
        monkeypatch.setitem(REGISTRY, entry.name, replace(entry, activation=replace(entry.activation, rule=bad_relu)))
        check = 'nonlinear'
    with pytest.raises(AssertionError):
        if check == 'exact': _exact_check(*_two_dropouts())
        else: _nonlinear_check()

def test_covariance_is_finite_on_every_zoo_net():
    "Channel dropout on a noise-free input leaves max pooling a zero inner variance: its linearisation must stay finite."
    from fastdropout_nb.propagation import max_pool_rule
    from fastdropout_nb.uncertainty import linearised_var
    m = torch.tensor([[[[-1.1785, 0.5240], [-4.2366, -0.8370]]]])
    lin = linearised_var(lambda t: max_pool_rule(t, 2, 2), (P.Moments(m, torch.zeros_like(m)),), {})
    assert torch.equal(lin, torch.zeros_like(lin))
    torch.manual_seed(0)
    for name, make in P.zoo_models().items():
        mean, cov = covariance_propagation(make().eval())(torch.rand(5, 64))
        assert bool(torch.isfinite(mean).all() and torch.isfinite(cov).all()), name

def test_mc_outputs_sample_dropout_inside_attention():
    "A net whose only dropout is inside nn.MultiheadAttention: MC samples it (chapter 05's switching), the moments propagate it (chapter 04b)."
    class Attn(nn.Module):
        def __init__(self):
            super().__init__(); self.att, self.out = nn.MultiheadAttention(8, 2, dropout=0.3, batch_first=True), nn.Linear(8, 3)
        def forward(self, x):
            h = x.reshape(x.shape[0], 4, 8)
            return self.out(self.att(h, h, h, need_weights=False)[0].mean(1))
    torch.manual_seed(0)
    net, x = Attn().eval(), torch.randn(5, 32)
    u = predict_uncertainty(net, x, 'mc', n_samples=50)
    assert float(u['mutual_info'].max()) > 0 and float(u['logit_var'].max()) > 0
    with torch.no_grad(): assert float(P.moment_propagation(net)(x)[1].min()) > 0        # its variance, not 0
