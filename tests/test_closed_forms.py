"""Heavier sweeps for `fastdropout_nb.moments` (chapter 01_closed_forms).

The Hypothesis tests of every registered expectation (Monte Carlo, quadrature, exact identities, edges,
bad input) are generated from the registry in tests/test_registry.py. These add deterministic sweeps:
the approximations within their registered bounds on a wide grid (std to 1e4), ReLU exact across r,
Gauss-Hermite exactness, the sigma points, softmax shapes and seeds, torch/NumPy agreement, gradcheck,
float32. Ground truth: adaptive quadrature (`gauss_quad`, `relu_truth`).
"""
import numpy as np
import pytest
import torch
from scipy.special import expit, log_expit, softmax as np_softmax

from fastdropout_nb.moments import (gauss_hermite_expect, logsigmoid_mean, relu_moments, sigmoid_mean,
                                    sigmoid_var, softmax_mean, squared_error_mean, tanh_moments,
                                    unscented_points)
from fastdropout_nb.moments import REGISTRY
from fastdropout_nb.testing import gauss_quad, gaussian_raw_moment, relu_truth

# tiny centred integrals make quad warn; their accuracy is what the tests check
pytestmark = pytest.mark.filterwarnings('ignore::scipy.integrate.IntegrationWarning')

# The stated bounds live in the registry (nbs/01_closed_forms.ipynb); these sweeps read them from there.
B = {n: e.bound for n, e in REGISTRY.items()}


# ----------------------------------------------------------------------------------------------
# ground truths

def centred_var(f, mu, var):
    m = gauss_quad(f, mu, var)
    return m, gauss_quad(lambda y: (f(y) - m) ** 2, mu, var)


def wide_grid():
    """(mu, var) pairs: std log-spaced from 1e-3 to 1e4 (var to 1e8), mu = r * max(std, 1), plus var = 0."""
    pairs = [(m, 0.0) for m in (-1e4, -3.0, -0.5, 0.0, 0.5, 3.0, 1e4)]
    for std in np.logspace(-3, 4, 22):
        for r in np.linspace(-5, 5, 21):
            pairs.append((r * max(std, 1.0), std * std))
    return pairs


WIDE = wide_grid()


# ----------------------------------------------------------------------------------------------
# approximations within their stated bounds, on a wide deterministic grid and on Hypothesis draws

def test_sigmoid_family_bounds_on_wide_grid():
    for mu, var in WIDE:
        tm, tv = centred_var(expit, mu, var)
        assert abs(sigmoid_mean(mu, var) - tm) <= B['sigmoid_mean'](var), (mu, var)
        for method, name in [('derivative', 'sigmoid_var'), ('paper', 'sigmoid_var(paper)')]:
            assert abs(sigmoid_var(mu, var, method=method) - tv) <= B[name](var), (mu, var, method)
        tl = gauss_quad(log_expit, mu, var)
        assert abs(logsigmoid_mean(mu, var) - tl) <= B['logsigmoid_mean'](var) + 1e-10 * (1 + abs(tl)), (mu, var)


def test_tanh_bounds_on_wide_grid():
    for mu, var in WIDE[::2]:
        tm, tv = centred_var(np.tanh, mu, var)
        for method, name in [('derivative', 'tanh_moments.var'), ('paper', 'tanh_moments.var(paper)')]:
            m, v = tanh_moments(mu, var, method=method)
            assert abs(m - tm) <= B['tanh_moments.mean'](var), (mu, var)
            assert abs(v - tv) <= B[name](var), (mu, var, method)


# ----------------------------------------------------------------------------------------------
# exact formulas

@pytest.mark.parametrize('var', [1e-12, 1.0, 1e8])
def test_relu_exact_across_r(var):
    s = np.sqrt(var)
    for r in np.r_[np.linspace(-39, 39, 79), [-5.0001, -4.9999, 1e-9, -1e-9]]:
        mu = r * s
        (tm, tv), (m, v) = relu_truth(mu, var), relu_moments(mu, var)
        assert abs(m - tm) <= 1e-10 * abs(tm) + 1e-300, (mu, var)
        assert abs(v - tv) <= 1e-10 * abs(tv) + 1e-300, (mu, var)


def test_relu_naive_variance_would_fail():
    """The textbook E[X^2] - E[X]^2 loses the variance at large r; ours keeps it."""
    from scipy.special import ndtr
    mu, var = 1e4, 1e-6
    tm, tv = relu_truth(mu, var)
    assert abs(relu_moments(mu, var)[1] - tv) <= 1e-10 * tv
    s = np.sqrt(var)
    r = mu / s
    pdf = np.exp(-r * r / 2) / np.sqrt(2 * np.pi)
    m = mu * ndtr(r) + s * pdf
    naive = (mu ** 2 + var) * ndtr(r) + mu * s * pdf - m * m
    assert abs(naive - tv) > 1e-6 * tv


@pytest.mark.parametrize('n', [1, 2, 4, 7, 12])
def test_gauss_hermite_exact_for_polynomials(n):
    rng = np.random.default_rng(n)
    for _ in range(5):
        mu, var = rng.normal(0, 1), rng.uniform(0, 3)
        for k in range(2 * n):
            truth = gaussian_raw_moment(k, mu, var)
            got = gauss_hermite_expect(lambda y: y ** k, mu, var, n=n)
            assert abs(got - truth) <= 1e-11 * max(abs(truth), gaussian_raw_moment(k, abs(mu), var)), (n, k)
    # and not beyond: degree 2n is generally not integrated exactly
    assert abs(gauss_hermite_expect(lambda y: y ** (2 * n), 0.0, 1.0, n=n) - gaussian_raw_moment(2 * n, 0.0, 1.0)) > 1e-6


def test_gauss_hermite_broadcasts_and_keeps_torch():
    mu = torch.zeros(3, 1, dtype=torch.float64, requires_grad=True)
    var = torch.ones(1, 4, dtype=torch.float64)
    out = gauss_hermite_expect(torch.sigmoid, mu, var)
    assert out.shape == (3, 4) and out.requires_grad
    assert np.allclose(out.detach().numpy(), 0.5)


# ----------------------------------------------------------------------------------------------
# softmax

@pytest.mark.parametrize('K', [1, 2, 3, 4, 7, 10])
@pytest.mark.parametrize('kappa', [None, 0.0, 1.0, 2.5])
def test_sigma_points_reproduce_mean_and_full_covariance(K, kappa):
    rng = np.random.default_rng(K)
    mu, var = rng.normal(size=(2, K)), rng.uniform(0, 10, size=(2, K))
    P, w = unscented_points(mu, var, kappa)
    assert P.shape == (2 * K + 1, 2, K) and np.isclose(w.sum(), 1)
    mean = np.einsum('j,j...k->...k', w, P)
    D = P - mean
    cov = np.einsum('j,j...k,j...l->...kl', w, D, D)
    assert np.allclose(mean, mu, atol=1e-12)
    assert np.allclose(cov, np.eye(K) * var[..., None, :], atol=1e-12)
    if kappa is None or kappa >= 0:
        assert np.all(w >= 0)


def test_softmax_batched_shapes_and_var_zero():
    rng = np.random.default_rng(2)
    mu = rng.normal(0, 3, (5, 6))
    for method in ('unscented', 'pairwise', 'sample'):
        p = softmax_mean(mu, rng.uniform(0, 4, (1, 6)), method)
        assert p.shape == (5, 6) and np.allclose(p.sum(-1), 1)
        assert np.allclose(softmax_mean(mu, 0.0, method), np_softmax(mu, axis=-1), rtol=1e-12)


def test_softmax_sample_seeded_and_generator():
    mu, var = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64), torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    a, b = softmax_mean(mu, var, 'sample', seed=3), softmax_mean(mu, var, 'sample', seed=3)
    assert torch.equal(a, b)
    g = torch.Generator().manual_seed(3)
    c, d = softmax_mean(mu, var, 'sample', generator=g), softmax_mean(mu, var, 'sample', generator=g)
    assert not torch.equal(c, d)


# ----------------------------------------------------------------------------------------------
# every function: var = 0 limits, gradients, torch/numpy, dtype (values and gradients at the edges, and bad
# input, are generated for every registry entry in tests/test_registry.py)

FUNCTIONS = {n: e.fn for n, e in REGISTRY.items() if e.domain.dims != (2, 2)}   # the pair's max takes K = 2 only
FUNCTIONS.update({
    'squared_error_mean(moving target)': lambda m, v: squared_error_mean(m, v, 0.5 * m - 2.0),
    'gauss_hermite_expect': lambda m, v: gauss_hermite_expect(torch.sigmoid if torch.is_tensor(m) else expit, m, v),
    'softmax_sample': lambda m, v: softmax_mean(m, v, 'sample', n_samples=32),
})


def as_tuple(x):
    return x if isinstance(x, tuple) else (x,)


def test_deterministic_limits_exact():
    mu = np.array([-1e4, -37.0, -1.0, -1e-8, 0.0, 1e-8, 2.0, 1e4])
    assert np.array_equal(sigmoid_mean(mu, 0.0), expit(mu))
    assert np.array_equal(logsigmoid_mean(mu, 0.0), log_expit(mu))
    assert np.array_equal(sigmoid_var(mu, 0.0), np.zeros_like(mu))
    m, v = tanh_moments(mu, 0.0)
    assert np.array_equal(m, np.tanh(mu)) and np.array_equal(v, np.zeros_like(mu))
    m, v = relu_moments(mu, 0.0)
    assert np.array_equal(m, np.maximum(mu, 0)) and np.array_equal(v, np.zeros_like(mu))


@pytest.mark.parametrize('name', list(FUNCTIONS))
def test_gradcheck(name):
    f = FUNCTIONS[name]
    rng = np.random.default_rng(1)
    mu = torch.tensor(rng.normal(0, 3, (3, 1)), requires_grad=True)      # broadcasting shapes
    var = torch.tensor(rng.uniform(0.05, 6, (1, 4)), requires_grad=True)
    assert torch.autograd.gradcheck(lambda m, v: as_tuple(f(m, v)), (mu, var))


@pytest.mark.parametrize('name', [n for n in FUNCTIONS if n != 'softmax_sample'])
def test_numpy_torch_agree(name):
    f = FUNCTIONS[name]
    rng = np.random.default_rng(4)
    mu, var = rng.normal(0, 5, (4, 5)), rng.uniform(0, 30, (4, 5)) * (rng.uniform(size=(4, 5)) > 0.2)
    for a, b in zip(as_tuple(f(mu, var)), as_tuple(f(torch.tensor(mu), torch.tensor(var)))):
        assert np.allclose(a, b.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_float32_torch_stays_float32():
    mu = torch.linspace(-5, 5, 7)
    for f in FUNCTIONS.values():
        for o in as_tuple(f(mu, torch.full((7,), 2.0))):
            assert o.dtype == torch.float32 and torch.isfinite(o).all()


# ----------------------------------------------------------------------------------------------
# the checks catch the known published mistakes

def test_mutations_are_caught():
    mu, var = 2.0, 25.0
    tm, tv = centred_var(expit, mu, var)
    std_for_var = expit(mu / np.sqrt(1 + np.pi * np.sqrt(var) / 8))
    assert abs(std_for_var - tm) > B['sigmoid_mean'](var)
    c = np.sqrt(1 + np.pi * 9.0 / 8)
    inverse_sqrt = log_expit(-3.0 / c) / c
    assert abs(inverse_sqrt - gauss_quad(log_expit, -3.0, 9.0)) > B['logsigmoid_mean'](9.0)
    tanh_bug = 2 * sigmoid_mean(0.5, 4.0) - 1, 4 * sigmoid_var(0.5, 4.0)
    ttm, ttv = centred_var(np.tanh, 0.5, 4.0)
    assert abs(tanh_bug[0] - ttm) > B['tanh_moments.mean'](4.0) or abs(tanh_bug[1] - ttv) > B['tanh_moments.var'](4.0)
    P, w = unscented_points(np.zeros(3), np.ones(3) / 2)       # half the variance
    cov = np.einsum('j,jk,jl->kl', w, P, P)
    assert not np.allclose(cov, np.eye(3))
