"""Smoke tests of benchmarks/propagation_uncertainty.py: its Monte Carlo reference draws the masks `mc_average` draws,
its covariance error subtracts the MC noise and still sees a 10 % error, its extra nets are propagated."""
import importlib.util, math
from pathlib import Path
import pytest
import torch

pytest.importorskip('fastdropout_nb.uncertainty')
_spec = importlib.util.spec_from_file_location('propagation_uncertainty', Path(__file__).parents[1] / 'benchmarks' / 'propagation_uncertainty.py')
pu = importlib.util.module_from_spec(_spec); _spec.loader.exec_module(pu)
from fastdropout_nb.propagation import moment_propagation
from fastdropout_nb.uncertainty import mc_outputs, predict_uncertainty
from fastdropout_nb.testing import assert_mc_close

torch.set_num_threads(1)

def _gaussian_logits(n, N=40, K=4, seed=0):
    "Centred Gaussian 'MC logits' with a known centred covariance."
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(N, K, K, generator=g, dtype=torch.float64)
    z = torch.einsum('nij,snj->sni', A, torch.randn(n, N, K, generator=g, dtype=torch.float64))
    C = pu.centring(K, z)
    return z @ C, C @ (A @ A.transpose(1, 2)) @ C

def test_mc_stats_agree_with_predict_uncertainty():
    torch.manual_seed(0); net = pu.TwoHeads().eval()
    x = torch.rand(30, 64)
    u, mc = predict_uncertainty(net, x, 'mc', n_samples=50, seed=4), pu.mc_stats(mc_outputs(net, x, 50, seed=4))
    for k in ('probs', 'entropy', 'mutual_info'): torch.testing.assert_close(mc[k].float(), u[k], atol=1e-5, rtol=1e-4)
    C = pu.centring(10, mc['cov'])
    torch.testing.assert_close(mc['cov'].float(), (C @ u['logit_cov'].double() @ C).float(), atol=1e-5, rtol=1e-4)

@pytest.fixture(scope='module')
def gaussian_mc():
    "8000 examples, 200 Gaussian draws each: the per-example MC noise, averaged, is sharp enough to see a 10 % error in it."
    z, truth = _gaussian_logits(200, N=8000)
    return pu.mc_stats(z), truth

def _check_noise(mc, truth, part):
    "E‖Σ̂ − Σ‖² (the diagonal's for part='diag') is what `mc_stats` estimates: their difference averages to 0 within 5 SE."
    f = (lambda t: t) if part == 'full' else (lambda t: t.diagonal(dim1=-2, dim2=-1))
    err2 = ((f(mc['cov']) - f(truth)) ** 2).flatten(1).sum(1)
    noise2 = mc['noise2'] if part == 'full' else mc['noise2_diag']
    assert_mc_close(((err2 - noise2) / (f(truth) ** 2).flatten(1).sum(1)).numpy(), 0.0, what=f'MC noise ({part})')

@pytest.mark.parametrize('part', ['full', 'diag'])
def test_mc_noise_is_the_expected_squared_error(gaussian_mc, part):
    _check_noise(*gaussian_mc, part)

@pytest.mark.parametrize('bug', ['ten_percent', 'no_division_by_n'])
def test_mc_noise_check_catches_planted_bugs(gaussian_mc, bug):
    mc, truth = gaussian_mc
    scale = 1.1 if bug == 'ten_percent' else 200.0
    planted = dict(mc, noise2=scale * mc['noise2'], noise2_diag=scale * mc['noise2_diag'])
    with pytest.raises(AssertionError): _check_noise(planted, truth, 'full')

@pytest.mark.parametrize('part', ['full', 'diag'])
def test_cov_error_is_zero_for_the_truth_and_sees_ten_percent(gaussian_mc, part):
    "pooled² = Σ(err² − noise²) / Σ(ref² − noise²): 0 for the truth, 0.01 for 1.1 × the truth, each within 5 SE of that sum."
    mc, truth = gaussian_mc
    f = (lambda t: t) if part == 'full' else (lambda t: t.diagonal(dim1=-2, dim2=-1))
    noise2 = mc['noise2'] if part == 'full' else mc['noise2_diag']
    denom = float(((f(mc['cov']) ** 2).flatten(1).sum(1) - noise2).sum())
    for scale, target in ((1.0, 0.0), (1.1, 0.01)):
        err2 = ((f(scale * truth) - f(mc['cov'])) ** 2).flatten(1).sum(1) - noise2
        se = float(err2.std()) * math.sqrt(len(err2)) / denom
        assert abs(pu.cov_errors(scale * truth, mc)[part]['pooled'] ** 2 - target) <= 5 * se, (scale, se)

def test_cov_error_ignores_a_common_shift():
    z, truth = _gaussian_logits(100)
    mc = pu.mc_stats(z)
    C = pu.centring(4, truth)
    shifted = truth + 3.0 * torch.ones(4, 4, dtype=truth.dtype)    # a common shift of the logits: invisible to softmax
    assert abs(pu.cov_errors(C @ shifted @ C, mc)['full']['pooled'] - pu.cov_errors(truth, mc)['full']['pooled']) < 1e-9

def test_auroc_and_ood_sets():
    assert pu.auroc(torch.zeros(5), torch.ones(5)) == 1.0 and pu.auroc(torch.ones(5), torch.zeros(5)) == 0.0
    X = torch.rand(3, 64)
    o = pu.ood_sets(X)
    torch.testing.assert_close(o['rotated'].view(3, 8, 8).rot90(-1, dims=(1, 2)).reshape(3, 64), X)
    assert torch.equal(o['shuffled'].sort(1).values, X.sort(1).values) and not torch.equal(o['shuffled'], X)

@pytest.mark.parametrize('name', ['elu_mlp', 'residual_conv_gap', 'channel_drop_conv', 'two_heads', 'centred_mlp'])
def test_extra_nets_propagate(name):
    torch.manual_seed(0); net = pu.all_models()[name]().eval()
    mean, var = moment_propagation(net)(torch.rand(5, 64))
    assert mean.shape == var.shape == (5, 10) and bool((var > 0).all())

@pytest.mark.parametrize('plant', [None, 'ten_percent'])
def test_node_diagnosis_sees_a_wrong_dropout_variance(monkeypatch, plant):
    "At the dropout node the twin is exact (independent gates): var_ratio 1 within 5 Gaussian SE of the pooled variance (N examples); 10 % off is seen."
    from fastdropout_nb import propagation
    if plant:
        rule = propagation.dropout_rule
        monkeypatch.setattr(propagation, 'dropout_rule', lambda x, p: (lambda m: propagation.Moments(m.mean, 1.1 * m.var))(rule(x, p)))
    torch.manual_seed(0); net = pu.TwoHeads().eval()
    x, n = torch.rand(100, 64), 300
    row = next(r for r in pu.node_diagnosis(net, x, n) if r['node'] == 'drop')
    ok = abs(row['var_ratio'] - 1) <= 5 * math.sqrt(2 / (n - 1)) / math.sqrt(len(x))
    assert ok != bool(plant), row
