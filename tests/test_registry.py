"""Tests generated from the registry of Gaussian expectations (`fastdropout_nb.moments.REGISTRY`).

For every entry, from the entry alone: a Hypothesis test against Monte Carlo (tolerance: the stated
bound + 5 standard errors), one against quadrature (the stated bound; 1e-10 relative for an exact
form), one of the exact identity an approximation rests on (1e-10), finite values and gradients at
the edges, and bad input raising a `ValueError` that names the argument. Each test looks the entry
up when it runs, so `benchmarks/planted_bugs.py` can substitute a broken function and count what
the suite catches.

Select one entry's tests by its name in brackets, which no other name contains:
`pytest -n 0 tests/test_registry.py -k "[gelu_mean]"` (not `-k gelu_mean`: `-k` matches substrings, so
`-k elu_moments` also selects `relu_moments` and `leaky_relu_moments`). Both entries of a function
returning `(mean, var)`: `-k "[elu_moments."`. A name with parentheses, which `-k` cannot spell, by
node id: `pytest "tests/test_registry.py::test_quadrature[sigmoid_var(paper)]"`.
"""
import re

import numpy as np
import pytest
import torch
from dataclasses import replace

from hypothesis import assume, given, strategies as st

from fastdropout_nb.moments import REGISTRY
from fastdropout_nb.testing import assert_mc_close, domain_strategy, entry_mc_samples, entry_quad, entry_strategy, gauss_expect

pytestmark = pytest.mark.filterwarnings('ignore::scipy.integrate.IntegrationWarning')

NAMES = list(REGISTRY)
IDENTITIES = [n for n in NAMES if REGISTRY[n].identity is not None]
QUAD_SLACK = 1e-9          # round-off allowed on top of an approximation's bound (quadrature, MC at var = 0)
IDENTITY_TOL = 1e-10


def _vmax(var): return np.max(np.asarray(var, float), axis=-1) if np.ndim(var) else float(var)


def _value(entry, mu, var):
    out = entry.fn(np.asarray(mu, float) if np.ndim(mu) else mu, np.asarray(var, float) if np.ndim(var) else var)
    return np.asarray(out, float)


def _tolerance(entry, mu, var, truth):
    "The stated bound at this input; an exact form: relative to the truth and, for a mean, to the scale |mu| + std."
    if entry.exact:
        scale = np.abs(truth) + (np.max(np.abs(mu)) + np.sqrt(_vmax(var)) if entry.moment == 'mean' else 0.0)
        return entry.bound.rel * scale + 1e-300
    return entry.bound(_vmax(var), truth) + QUAD_SLACK * (1 + np.abs(truth))


@pytest.mark.parametrize('name', NAMES)
@given(data=st.data())
def test_monte_carlo(name, data):
    entry = REGISTRY[name]
    mu, var = data.draw(entry_strategy(entry))
    got = _value(entry, mu, var)
    samples = entry_mc_samples(entry, mu, var, n=400_000 if np.size(mu) <= 2 else 50_000)
    floor = entry.bound.rel * np.abs(got) + 1e-12 if entry.exact else entry.bound(_vmax(var), got) + QUAD_SLACK * (1 + np.abs(got))
    assert_mc_close(samples, got, floor=floor, what=f'{name}{mu, var}')


def _up_to_three(entry):
    "The entry with its Gaussian vectors at most 3 long: quadrature truths exist up to three dimensions (longer ones: MC)."
    d = entry.domain.dims
    return entry if d is None or d[1] <= 3 else replace(entry, domain=replace(entry.domain, dims=(d[0], 3)))

@pytest.mark.parametrize('name', NAMES)
@given(data=st.data())
def test_quadrature(name, data):
    entry = REGISTRY[name]
    mu, var = data.draw(entry_strategy(_up_to_three(entry)))
    truth = entry_quad(entry, mu, var)
    assume(truth is not None)
    truth, got = np.asarray(truth, float), _value(entry, mu, var)
    err, tol = np.abs(got - truth), _tolerance(entry, mu, var, truth)
    assert np.all(err <= tol), f'{name}{mu, var}: {got} vs quadrature {truth}, error {np.max(err):.3g} > {np.max(tol):.3g}'


@pytest.mark.parametrize('name', IDENTITIES)
@given(data=st.data())
def test_exact_identity(name, data):
    entry = REGISTRY[name]
    ident = entry.identity
    domain = entry.domain if ident.k is None else replace(entry.domain, dims=(ident.k, ident.k))
    mu, var = data.draw(domain_strategy(domain))
    with np.errstate(divide='ignore', invalid='ignore'):
        got = ident.link(_value(entry, mu, var), mu, var)
    assume(np.all(np.isfinite(got)))           # NaN: where the identity does not apply
    truth = gauss_expect(ident.h, mu, var)
    assert abs(got - truth) <= IDENTITY_TOL, f'{name}{mu, var}: {ident.text}: {got!r} vs quadrature {truth!r}'


EDGE_MU, EDGE_VAR = (-1e4, -30.0, 0.0, 1e-3, 30.0, 1e4), (0.0, 1e-12, 1.0, 1e8)


def _edge_grid(entry):
    """Torch inputs at the edges: |mu| up to 1e4, var from 0 to 1e8 (a vector: K = its smallest length).
    An entry with `Domain(edges=False)` (its true value overflows there, e.g. E[exp Y]) gets only the
    moderate part, |mu| <= 30 and var <= 1: var = 0 and a tiny var are still checked."""
    mus, vs = (EDGE_MU, EDGE_VAR) if entry.domain.edges else (EDGE_MU[1:-1], EDGE_VAR[:-1])
    grid = [(m, v) for m in mus for v in vs]
    mu = torch.tensor([m for m, _ in grid], dtype=torch.float64)
    var = torch.tensor([v for _, v in grid], dtype=torch.float64)
    if entry.domain.dims is not None:
        K = entry.domain.dims[0]
        mu = mu[:, None] * torch.tensor([1.0, -0.5, 0.25, 2.0][:K], dtype=torch.float64)
        var = var[:, None] * torch.tensor([1.0, 0.5, 2.0, 0.0][:K], dtype=torch.float64)
    return mu.requires_grad_(), var.requires_grad_()


@pytest.mark.parametrize('name', NAMES)
def test_finite_values_and_gradients_at_the_edges(name):
    entry = REGISTRY[name]
    mu, var = _edge_grid(entry)
    out = entry.fn(mu, var)
    assert torch.isfinite(out).all(), f'{name}: non-finite value'
    gm, gv = torch.autograd.grad(out.sum(), (mu, var), allow_unused=True)
    assert torch.isfinite(gm).all() and (gv is None or torch.isfinite(gv).all()), f'{name}: non-finite gradient'


def test_edge_grid_follows_the_domain():
    entry = REGISTRY['gelu_mean']
    mu, var = _edge_grid(entry)
    assert mu.abs().max() == 1e4 and var.max() == 1e8
    mu, var = _edge_grid(replace(entry, domain=replace(entry.domain, edges=False)))
    assert mu.abs().max() == 30 and var.max() == 1 and (var == 0).any() and (mu == 0).any()


@pytest.mark.parametrize('name', NAMES)
def test_bad_input_names_the_argument(name):
    entry = REGISTRY[name]
    K = (entry.domain.dims or (3,))[0]
    mu, var = np.zeros((3, K)), np.ones((3, K))
    bad_var, bad_mu = var.copy(), mu.copy()
    bad_var[1, -1], bad_mu[2, 0] = -1e-3, np.nan
    with pytest.raises(ValueError, match=r'\b(var|v\d)\b.*variance'): entry.fn(mu, bad_var)
    with pytest.raises(ValueError, match=r'\b(mu|m\d)\b must be finite'): entry.fn(bad_mu, var)
    with pytest.raises(ValueError, match=r'\b(var|v\d)\b must be finite'): entry.fn(mu, np.full((3, K), np.inf))
    with pytest.raises(ValueError, match='shapes do not broadcast'): entry.fn(np.zeros((2, K)), np.ones((3, K)))


def test_registry_entries_are_complete():
    for name, e in REGISTRY.items():
        assert e.chapter and e.measured, name
        assert e.moment in ('mean', 'var'), name
        assert e.exact or e.bound(1.0) > 0, name
        assert re.fullmatch(r'[\w.()]+', name), name
