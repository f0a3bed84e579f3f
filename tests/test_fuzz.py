"""Fuzz every public numeric entry point with malformed input (Hypothesis).

Each call must either return finite values of the input's kind, or raise a `ValueError` whose
message names the offending argument: never a silent NaN, never an obscure error from deep
inside NumPy or torch. Valid values stay in the documented range (|x| <= 1e4, var <= 1e8), where
every answer must be finite.
"""
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import given, strategies as st, HealthCheck, settings

import fastdropout_nb.testing  # noqa: F401  (loads the Hypothesis profile)
from fastdropout_nb import moments as M

FLOATS = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False)
SPECIAL = st.sampled_from([np.nan, np.inf, -np.inf])


@st.composite
def arrays(draw, shape=None, nonneg=False, small=False):
    """A value of some kind: mostly float arrays, sometimes malformed (bad dtype, NaN/inf, None, empty, torch).
    `small`: valid values with |x| <= 30 and var <= 1 (for an entry with `Domain(edges=False)`, whose true value overflows at the edges)."""
    kind = draw(st.sampled_from(['float'] * 6 + ['int', 'bool', 'complex', 'str', 'object', 'none', 'special',
                                                  'empty', 'torch', 'torch_int', 'list', 'scalar']))
    shape = shape if shape is not None else draw(st.sampled_from([(), (3,), (2, 3), (1, 3), (3, 1), (4,)]))
    n = int(np.prod(shape)) if shape else 1
    valid = (st.floats(0, 1.0) if nonneg else st.floats(-30, 30)) if small else (st.floats(0, 1e8) if nonneg else FLOATS)
    vals = np.array(draw(st.lists(valid, min_size=n, max_size=n)), float).reshape(shape)
    if kind == 'float': return vals
    if kind == 'int': return vals.astype(int)
    if kind == 'bool': return vals > 0
    if kind == 'complex': return vals + 1j
    if kind == 'str': return vals.astype(str)
    if kind == 'object': return np.array([None] * n, dtype=object).reshape(shape)
    if kind == 'none': return None
    if n == 0 and kind in ('special', 'scalar'): return vals
    if kind == 'special':
        v = vals.copy().reshape(-1); v[0] = draw(SPECIAL); return v.reshape(shape)
    if kind == 'empty': return np.zeros((0,) + shape[1:])
    if kind == 'torch': return torch.tensor(vals)
    if kind == 'torch_int': return torch.tensor(vals.astype(np.int64))
    if kind == 'list': return vals.tolist()
    return float(vals.reshape(-1)[0])


def _finite(x):
    if torch.is_tensor(x): return bool(torch.isfinite(x).all())
    return bool(np.all(np.isfinite(np.asarray(x, dtype=float))))


def call(f, names, *args):
    "Call `f`; a ValueError must name one of `names`; a returned value must be finite."
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('error', RuntimeWarning)       # overflow/invalid warnings are silent NaNs
            warnings.simplefilter('error', np.exceptions.ComplexWarning)
            out = f(*args)
    except ValueError as e:
        assert any(n in str(e) for n in names), f"ValueError does not name {names}: {e}"
        return None
    for o in (out if isinstance(out, tuple) else (out,)):
        assert _finite(o), f"non-finite output {o!r} for {args!r}"
    return out


ONE_D = {n: e.fn for n, e in M.REGISTRY.items() if e.domain.dims != (2, 2)}   # every registered expectation
ONE_D.update({'gauss_hermite_expect': lambda mu, var: M.gauss_hermite_expect(lambda y: y * y, mu, var),
              'softmax_mean': M.softmax_mean})
ARGS = ('mu', 'var')


@pytest.mark.parametrize('name', ONE_D)
@settings(suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_closed_forms_fuzz(name, data):
    small = name in M.REGISTRY and not M.REGISTRY[name].domain.edges
    mu, var = data.draw(arrays(small=small)), data.draw(arrays(nonneg=True, small=small))
    call(ONE_D[name], ARGS + ('axis',), mu, var)


@given(m1=arrays(), v1=arrays(nonneg=True), m2=arrays(), v2=arrays(nonneg=True))
def test_max_moments_fuzz(m1, v1, m2, v2):
    call(M.max_moments, ('m1', 'v1', 'm2', 'v2'), m1, v1, m2, v2)


@given(mu=arrays(), var=arrays(nonneg=True), target=arrays())
def test_squared_error_mean_fuzz(mu, var, target):
    call(M.squared_error_mean, ('mu', 'var', 'target'), mu, var, target)


@st.composite
def dropout_args(draw):
    n, m, k = draw(st.integers(0, 3)), draw(st.integers(0, 4)), draw(st.integers(1, 2))
    x = draw(arrays(shape=(n, m)))
    if draw(st.booleans()) and isinstance(x, np.ndarray) and x.dtype.kind == 'f' and x.ndim == 2: x = sp.csr_matrix(x)
    w = draw(arrays(shape=draw(st.sampled_from([(m,), (m, k), (m + 1,), ()]))))
    p = draw(st.one_of(st.floats(-0.5, 1.5), st.just(np.nan), arrays(shape=(m,))))
    return x, w, p


@given(dropout_args())
def test_dropout_moments_fuzz(args):
    call(M.dropout_moments, ('x', 'w', 'p'), *args)


def test_the_fuzz_check_can_fail():
    "A silent NaN, an overflow warning and an error that names no argument are all caught."
    with pytest.raises(AssertionError, match='non-finite'): call(lambda mu, var: np.asarray(mu) * np.nan, ARGS, 1.0, 1.0)
    with pytest.raises(RuntimeWarning): call(lambda mu, var: np.exp(np.asarray(1e4)), ARGS, 1.0, 1.0)
    with pytest.raises(AssertionError, match='does not name'):
        call(lambda mu, var: float('x'), ARGS, 1.0, 1.0)


# --- the estimator and the PyTorch modules -------------------------------------------------------------------

from fastdropout_nb import nn as N  # noqa: E402
from fastdropout_nb.logistic import FastDropoutLogisticRegression  # noqa: E402

MODULES = {'FastDropoutLinear': N.FastDropoutLinear(3, 2, 0.5, dtype=torch.float64), 'MomentReLU': N.MomentReLU(),
           'MomentSigmoid': N.MomentSigmoid(), 'MomentTanh': N.MomentTanh()}


def _tensor(a):
    "NumPy numeric arrays become tensors (the modules take tensors); anything else is passed as it is."
    return torch.as_tensor(a) if isinstance(a, np.ndarray) and a.dtype.kind in 'biuf' else a


@pytest.mark.parametrize('name', MODULES)
@given(data=st.data())
def test_nn_modules_fuzz(name, data):
    shape = data.draw(st.sampled_from([(), (3,), (2, 3), (4, 3), (2, 4)]))
    mean, var = data.draw(arrays(shape=shape)), data.draw(st.one_of(st.none(), arrays(shape=shape, nonneg=True)))
    x = _tensor(mean) if var is None else (_tensor(mean), _tensor(var))
    with torch.no_grad():
        call(MODULES[name], ('mean', 'var', 'input', 'moment pair'), x)


@given(p=st.one_of(st.floats(-1, 2), st.just(float('nan')), st.none(), st.text(max_size=3)))
def test_nn_rates_fuzz(p):
    call(lambda p, _: N.FastDropoutLinear(3, 2, p)(torch.zeros(1, 3)), ('p',), p, None)


LR_NAMES = ('X', 'y', 'p', 'array', 'sample', 'class', 'feature')


@settings(deadline=None)
@given(X=arrays(shape=(6, 3)), y=st.sampled_from([np.array([0, 1] * 3), np.zeros(6), np.array([0, 1, 2] * 2),
                                                   np.array([0, 1, 0]), np.array([0.0, np.nan] * 3)]),
       p=st.one_of(st.floats(-0.5, 1.5), st.just(0.5)), sparse=st.booleans())
def test_logistic_regression_fuzz(X, y, p, sparse):
    if sparse and isinstance(X, np.ndarray) and X.dtype.kind == 'f' and X.ndim == 2: X = sp.csr_matrix(X)
    est = FastDropoutLogisticRegression(p=p, max_iter=5)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', UserWarning)           # ConvergenceWarning after 5 iterations is expected
        call(lambda X, y: est.fit(X, y).predict_proba(X), LR_NAMES, X, y)


# --- the distillation entry points ------------------------------------------------------------------------------

from torch import nn as tnn  # noqa: E402
from fastdropout_nb import distill as DI  # noqa: E402

torch.manual_seed(0)
_TEACHER = tnn.Sequential(tnn.Linear(3, 5), tnn.ReLU(), tnn.Dropout(0.5), tnn.Linear(5, 2)).double()
DISTILL_NAMES = ('x', 'unlabelled', 'n_samples', 'batch_size', 'output', 'epochs', 'lr', 'perturb', 'model')


def _distill_input(a):
    "float64 NumPy arrays as float64 tensors (the teacher's dtype) most of the time; the rest as drawn."
    if isinstance(a, np.ndarray) and a.dtype.kind in 'biuf': return torch.as_tensor(a)
    return a


@settings(deadline=None, max_examples=60)
@given(data=st.data(), which=st.sampled_from(['standard', 'mc', 'exact', 'distill']))
def test_distill_entry_points_fuzz(data, which):
    x = _distill_input(data.draw(arrays(shape=data.draw(st.sampled_from([(4, 3), (2, 3), (3,), (4, 2), (1, 3)])))))
    if which == 'standard':
        bs = data.draw(st.sampled_from([None, 2, 0, -1, 2.5, 'x']))
        call(lambda x, bs: DI.standard_predict(_TEACHER, x, batch_size=bs), DISTILL_NAMES, x, bs)
    elif which == 'mc':
        n = data.draw(st.sampled_from([3, 0, -2, 2.5, None, True]))
        call(lambda x, n: DI.mc_predict(_TEACHER, x, n_samples=n, seed=0), DISTILL_NAMES, x, n)
    elif which == 'exact':
        out = data.draw(st.sampled_from(['probs', 'raw', 'logits']))
        call(lambda x, out: DI.exact_predict(_TEACHER, x, output=out), DISTILL_NAMES, x, out)
    else:
        epochs, lr = data.draw(st.sampled_from([1, 0, 2.0])), data.draw(st.sampled_from([1e-2, 0.0, float('nan'), -1.0]))
        student = tnn.Linear(3, 2).double()
        call(lambda x, e: DI.distill(_TEACHER, student, x, epochs=e, lr=lr, progress=False)(torch.zeros(1, 3, dtype=torch.float64)),
             DISTILL_NAMES, x, epochs)


def test_distill_rejects_a_model_that_cannot_take_the_input():
    with pytest.raises(ValueError, match='failed on x'): DI.standard_predict(_TEACHER, torch.zeros(2, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match='dtype'): DI.mc_predict(_TEACHER, torch.zeros(2, 3), n_samples=2)
    with pytest.raises(ValueError, match='unlabelled'): DI.distill(_TEACHER, tnn.Linear(3, 2).double(), None, epochs=1)
    with pytest.raises(ValueError, match='unlabelled batch'):
        DI.distill(_TEACHER, tnn.Linear(3, 2).double(), [torch.zeros(2, 3)], epochs=1, progress=False)
