"""Heavier sweeps of `fastdropout_nb.gaussian` (chapter 0): exact moments of a dropout sum.

Ground truth is exact enumeration of all 2**m dropout masks. Run with
`pytest tests/test_gaussian.py` (Hypothesis profile `ci` by default, `HYPOTHESIS_PROFILE=dev`
for a long run).
"""
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp
from scipy.special import ndtr

from fastdropout_nb.testing import all_masks, enumerate_moments, mask_probs  # also loads the Hypothesis profile
from fastdropout_nb.gaussian import (BERRY_ESSEEN_C, berry_esseen_bound, dropout_moments,
                                     largest_term_share)


# ---------------------------------------------------------------- ground truth

def assert_exact(x, w, p, rtol=1e-12):
    x2, w2 = np.atleast_2d(x), (w if np.ndim(w) == 2 else np.asarray(w)[:, None])
    mean, var, scale = enumerate_moments(x2, w2, p)
    got = dropout_moments(x, w, p)
    shape = np.shape(x)[:-1] + np.shape(w)[1:]
    for name, g, exact, floor in [('mean', got[0], mean, scale), ('var', got[1], var, scale ** 2)]:
        assert np.shape(g) == shape, (name, np.shape(g), shape)
        g = np.asarray(g, dtype=float).reshape(exact.shape)
        assert np.all(np.isfinite(g))
        err, tol = np.abs(g - exact), rtol * (np.abs(exact) + floor) + 1e-300
        assert np.all(err <= tol), f"{name}: max error {err.max():.3g} > {tol.ravel()[np.argmax(err)]:.3g}"


# Heavier than the notebook's sweeps: 4x the profile's examples (100 in `ci`, 1600 in `dev`).
heavier = settings(max_examples=4 * settings.default.max_examples)

# ---------------------------------------------------------------- strategies

rates = st.floats(0.0, 0.99)


@st.composite
def problems(draw, max_m=12, max_abs=100.0):
    "(x, w, p): |x|, |w| <= max_abs, so single terms |x_i w_i| reach 1e4."
    m = draw(st.integers(1, max_m))
    n = draw(st.integers(1, 4))
    k = draw(st.sampled_from([None, 1, 2, 4]))
    # magnitudes 1e-6 .. max_abs (or exactly 0): squares stay clear of float64's subnormal range
    el = st.one_of(st.just(0.0), st.floats(1e-6, 1.0), st.floats(-1.0, -1e-6),
                   st.floats(1.0, max_abs), st.floats(-max_abs, -1.0))
    x = draw(hnp.arrays(float, draw(st.sampled_from([(m,), (n, m)])), elements=el))
    w = draw(hnp.arrays(float, (m,) if k is None else (m, k), elements=el))
    p = draw(st.one_of(rates, hnp.arrays(float, (m,), elements=rates)))
    return x, w, p


@st.composite
def sparse_problems(draw):
    "A random SciPy sparse x (n, m) up to 60 x 300, weights (m,) or (m, k), p scalar or (m,)."
    seed = draw(st.integers(0, 2**32 - 1))
    n, m = draw(st.integers(1, 60)), draw(st.integers(1, 300))
    density = draw(st.sampled_from([0.0, 0.01, 0.1, 0.5, 1.0]))
    k = draw(st.sampled_from([None, 1, 3]))
    fmt = draw(st.sampled_from(['csr', 'csc', 'coo']))
    rng = np.random.default_rng(seed)
    x = sp.random(n, m, density=density, format=fmt, random_state=rng,
                  data_rvs=lambda size: rng.normal(size=size) * 10 ** rng.uniform(-2, 2, size))
    w = rng.normal(size=(m,) if k is None else (m, k))
    p = draw(st.one_of(rates, st.just(np.asarray(rng.uniform(0, 0.99, m)))))
    return x, w, p


# ---------------------------------------------------------------- exact moments

@heavier
@given(problems())
def test_exact_moments_numpy(problem):
    assert_exact(*problem)


@given(problems(max_m=10))
def test_exact_moments_torch_float64(problem):
    x, w, p = problem
    mean, var = dropout_moments(*(torch.tensor(a, dtype=torch.float64) for a in (x, w, p)))
    assert mean.dtype == torch.float64
    ref = dropout_moments(x, w, p)
    np.testing.assert_allclose(mean.numpy(), ref[0], rtol=1e-13, atol=1e-13 * (np.abs(x).max() * np.abs(w).max() + 1))
    np.testing.assert_allclose(var.numpy(), ref[1], rtol=1e-13, atol=0)


def test_no_dropout_is_deterministic():
    x, w = np.random.default_rng(0).normal(size=(4, 7)), np.random.default_rng(1).normal(size=(7, 3))
    mean, var = dropout_moments(x, w, 0.0)
    assert np.allclose(mean, x @ w, rtol=1e-14) and np.all(var == 0)


@heavier
@given(problems(max_m=10))
def test_float32_torch_path(problem):
    "float32 in -> float32 out, within float32 round-off of the same (rounded) inputs in float64."
    x, w, p = problem
    x32, w32, p32 = (torch.tensor(a, dtype=torch.float32) for a in (x, w, p))
    mean, var = dropout_moments(x32, w32, p32)
    assert mean.dtype == var.dtype == torch.float32
    ref_mean, ref_var = dropout_moments(*(a.double().numpy() for a in (x32, w32, p32)))
    m, eps = np.shape(x)[-1], np.finfo(np.float32).eps
    scale = np.abs(np.atleast_2d(x32.double().numpy())) @ np.abs(np.atleast_2d(w32.double().numpy().T).T)
    scale = scale.reshape(np.shape(ref_mean))
    assert np.all(np.abs(mean.double().numpy() - ref_mean) <= (m + 8) * eps * scale + 1e-30)
    # var is a sum of non-negative terms: relative error of a few eps per term and per addition
    assert np.all(np.abs(var.double().numpy() - ref_var) <= (m + 8) * eps * ref_var + 1e-30)


# ---------------------------------------------------------------- sparse input

@heavier
@given(sparse_problems())
def test_sparse_equals_dense(problem):
    x, w, p = problem
    dense = dropout_moments(x.toarray(), w, p)
    for got, ref in zip(dropout_moments(x, w, p), dense):
        assert isinstance(got, np.ndarray) and got.shape == ref.shape
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12 * (np.abs(ref).max() + 1e-300))


@given(sparse_problems())
def test_sparse_with_torch_weights_and_gradients(problem):
    x, w, p = problem
    wt_sparse = torch.tensor(w, requires_grad=True)
    wt_dense = torch.tensor(w, requires_grad=True)
    pt_sparse = torch.tensor(p, requires_grad=True)
    pt_dense = torch.tensor(p, requires_grad=True)
    ms, vs = dropout_moments(x, wt_sparse, pt_sparse)
    md, vd = dropout_moments(torch.tensor(x.toarray()), wt_dense, pt_dense)
    assert torch.is_tensor(ms) and ms.shape == md.shape
    for a, b in ((ms, md), (vs, vd)):
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-12,
                                   atol=1e-12 * (b.abs().max().item() + 1e-300))
    gs = torch.autograd.grad((ms.sum() + vs.sum()), (wt_sparse, pt_sparse))
    gd = torch.autograd.grad((md.sum() + vd.sum()), (wt_dense, pt_dense))
    for a, b in zip(gs, gd):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-11, atol=1e-11 * (b.abs().max().item() + 1e-300))


def test_sparse_is_never_densified():
    "A 1e5 x 1e6 matrix would need 800 GB dense; with 1e5 nonzeros it must take well under a second."
    rng = np.random.default_rng(0)
    n, m, nnz = 100_000, 1_000_000, 100_000
    x = sp.csr_matrix((rng.normal(size=nnz), (rng.integers(0, n, nnz), rng.integers(0, m, nnz))), shape=(n, m))
    w = rng.normal(size=m)
    mean, var = dropout_moments(x, w, 0.3)
    assert mean.shape == var.shape == (n,)
    assert np.allclose(mean, 0.7 * (x @ w)) and np.allclose(var, 0.21 * (x.multiply(x) @ w ** 2))
    mean_t, var_t = dropout_moments(x, torch.tensor(w), 0.3)
    assert torch.allclose(mean_t, torch.tensor(mean)) and torch.allclose(var_t, torch.tensor(var))
    assert largest_term_share(x, w, 0.3).shape == (n,) and berry_esseen_bound(x, w, 0.3).shape == (n,)


def test_gradcheck_float64():
    g = torch.Generator().manual_seed(1)
    for xs, ws in [((4, 6), (6, 3)), ((6,), (6, 2)), ((4, 6), (6,)), ((6,), (6,))]:
        x = torch.randn(*xs, generator=g, dtype=torch.float64, requires_grad=True)
        w = torch.randn(*ws, generator=g, dtype=torch.float64, requires_grad=True)
        p = (0.05 + 0.9 * torch.rand(6, generator=g, dtype=torch.float64)).requires_grad_()
        assert torch.autograd.gradcheck(dropout_moments, (x, w, p))
        ps = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(dropout_moments, (x, w, ps))


def test_extreme_magnitudes_finite_gradients():
    x = torch.tensor([[1e2, -1e2, 0.0, 1e-3]], dtype=torch.float64, requires_grad=True)
    w = torch.tensor([1e2, 1e2, -5.0, 1e-3], dtype=torch.float64, requires_grad=True)
    p = torch.tensor([0.0, 0.5, 0.99, 0.3], dtype=torch.float64, requires_grad=True)
    mean, var = dropout_moments(x, w, p)
    (mean + var).sum().backward()
    for t in (mean, var, x.grad, w.grad, p.grad):
        assert torch.isfinite(t).all()
    assert_exact(x.detach().numpy(), w.detach().numpy(), p.detach().numpy())


# ---------------------------------------------------------------- diagnostics

@heavier
@given(st.integers(1, 12), st.floats(0.01, 0.99), st.integers(0, 2**32 - 1))
def test_berry_esseen_bounds_the_exact_kolmogorov_distance(m, p, seed):
    rng = np.random.default_rng(seed)
    a = rng.choice([-1, 1], m) * np.exp(rng.uniform(0, 3) * rng.normal(size=m))
    masks = all_masks(m)
    probs = mask_probs(masks, p)
    vals = masks @ a
    mean, var = dropout_moments(a, np.ones(m), p)
    order = np.argsort(vals)
    F_right = np.cumsum(probs[order])
    G = ndtr((vals[order] - mean) / np.sqrt(var))
    dist = np.maximum(np.abs(F_right - G), np.abs(F_right - probs[order] - G)).max()
    bound = berry_esseen_bound(a, np.ones(m), p)
    share = largest_term_share(a, np.ones(m), p)
    q = 1 - p
    rho = (q * q + (1 - q) ** 2) / np.sqrt(q * (1 - q))
    assert dist <= bound <= BERRY_ESSEEN_C * rho * share * (1 + 1e-12)
    assert 1 / np.sqrt(m) * (1 - 1e-12) <= share <= 1 + 1e-12
    assert np.isclose(share, np.abs(a).max() / np.linalg.norm(a), rtol=1e-12)


@given(sparse_problems())
def test_diagnostics_sparse_equals_dense(problem):
    x, w, p = problem
    for f in (largest_term_share, berry_esseen_bound):
        got, ref = f(x, w, p), f(x.toarray(), w, p)
        assert got.shape == ref.shape and np.all(np.isfinite(got)) and np.all(got >= 0)
        np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-300)
        got_t = f(x, torch.tensor(w), p)
        np.testing.assert_allclose(got_t.numpy(), ref, rtol=1e-10, atol=1e-300)


@given(problems(max_m=12))
def test_share_in_range_and_scale_free(problem):
    x, w, p = problem
    share = largest_term_share(x, w, p)
    assert np.all(np.isfinite(share)) and np.all((share >= 0) & (share <= 1 + 1e-12))
    np.testing.assert_allclose(largest_term_share(1e3 * np.asarray(x), w, p), share, rtol=1e-10)


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("args, match", [
    ((np.ones((2, 5)), np.ones(4)), r"x has 5 features \(columns\) but w has 4 rows"),
    ((np.ones((2, 5)), np.ones((4, 2))), r"x has 5 features \(columns\) but w has 4 rows"),
    ((sp.csr_matrix(np.ones((2, 5))), np.ones(4)), r"x has 5 features \(columns\) but w has 4 rows"),
    ((np.ones(5), torch.ones(4)), r"x has 5 features \(columns\) but w has 4 rows"),
    ((np.ones((3, 0)), np.ones(0)), r"x has no features"),
    ((sp.csr_matrix((3, 0)), np.ones(0)), r"x has no features"),
    ((np.ones(3), np.ones(3), 1.0), r"p is the probability of dropping"),
    ((np.ones(3), np.ones(3), torch.tensor([0.1, 1.5, 0.0])), r"p is the probability of dropping"),
    ((np.ones(3), np.ones(3), np.full((3, 2), 0.1)), r"p must be a scalar or one drop rate per input"),
    ((np.ones(3), np.ones(3), float('inf')), r"p must be finite"),
    ((torch.tensor([1.0, float('nan')]), np.ones(2)), r"x must be finite"),
    ((np.ones(2), np.array([np.nan, 1.0])), r"w must be finite"),
    ((np.ones((1, 2, 2)), np.ones(2)), r"x must have shape"),
    ((np.ones(2), np.ones((2, 1, 1))), r"w must have shape"),
])
def test_bad_input_names_the_argument(args, match):
    for f in (dropout_moments, largest_term_share, berry_esseen_bound):
        with pytest.raises(ValueError, match=match):
            f(*args)


def test_torch_sparse_is_refused():
    with pytest.raises(TypeError, match="torch sparse"):
        dropout_moments(torch.eye(3).to_sparse(), torch.ones(3))
