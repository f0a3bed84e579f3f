"The twin's fast rules (node-by-node quadrature, cached W∘W, fused dropout, O(K) unscented softmax, torch.compile) tied to the plain formulas."
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from hypothesis import given, settings
import fastdropout_nb.moments as moments_mod
import fastdropout_nb.propagation as prop
from fastdropout_nb.moments import softmax_mean
from fastdropout_nb.propagation import moment_propagation, zoo_models, squared_weight, unscented_softmax, Moments
from fastdropout_nb.testing import quadrature_direct, check_quadrature_moments, check_unscented_softmax
from test_propagation import random_graphs, _build

D = torch.float64


def _direct(f, mean, var, n=20, first=None):
    "`quadrature_direct`, with a closed-form mean `first` in place of the quadrature's (GELU), as `quadrature_moments` takes it."
    m, v = quadrature_direct(f, mean, var, n)
    if first is None: return m, v
    c = f(mean)
    return first, (v + (m - c) ** 2 - (first - c) ** 2).clamp_min(0)      # Σ w (f − c)² − (first − c)²


def _plain(monkeypatch):
    "The plain formulas in place of the fast rules: all-nodes quadrature, W∘W on every call, the out-of-place dropout, softmax_mean."
    monkeypatch.setattr(moments_mod, 'quadrature_moments', _direct)
    monkeypatch.setattr(prop, 'quadrature_moments', _direct)
    monkeypatch.setattr(prop, 'squared_weight', lambda w: w * w)
    monkeypatch.setattr(prop, 'dropout_rule', lambda x, p: Moments(prop.moments_of(x)[0], (prop.moments_of(x)[1] + prop.moments_of(x)[0] ** 2 * p) / (1 - p)))
    monkeypatch.setattr(prop, 'unscented_softmax', lambda m, v: softmax_mean(m, v, method='unscented'))


def _values_and_grads(net, x, output):
    "The twin's outputs on x and the gradients of a fixed weighting of them w.r.t. the net's parameters and the input."
    x = x.clone().requires_grad_()
    out = moment_propagation(net, output)(x)
    out = out if isinstance(out, tuple) else (out,)
    w = [torch.linspace(0.5, 1.5, o.numel(), dtype=D).reshape(o.shape) for o in out]
    params = [p for p in net.parameters() if p.requires_grad]
    grads = torch.autograd.grad(sum((o * wi).sum() for o, wi in zip(out, w)), params + [x], allow_unused=True)
    with torch.no_grad(): nograd = moment_propagation(net, output)(x)          # the in-place branches
    return [o.detach() for o in out], grads, nograd if isinstance(nograd, tuple) else (nograd,)


def _tie(net, x, output, tol=1e-10):
    fast = _values_and_grads(net, x, output)
    with pytest.MonkeyPatch.context() as m:
        _plain(m)
        plain = _values_and_grads(net, x, output)
    for a, b in zip(fast[0], plain[0]): torch.testing.assert_close(a, b, rtol=tol, atol=tol)
    for a, b in zip(fast[2], plain[2]): torch.testing.assert_close(a, b, rtol=tol, atol=tol)
    for a, b in zip(fast[1], plain[1]):
        if a is None or b is None: assert a is None and b is None; continue
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)


@pytest.mark.parametrize('output', ['moments', 'softmax'])
@pytest.mark.parametrize('name', list(zoo_models()))
def test_zoo_fast_rules_equal_the_plain_formulas(name, output):
    torch.manual_seed(0)
    net = zoo_models()[name]().double().eval()
    _tie(net, torch.rand(5, 64, dtype=D), output)


@settings(max_examples=15, deadline=None)
@given(random_graphs())
def test_random_graph_fast_rules_equal_the_plain_formulas(spec):
    net, x = _build(spec)
    _tie(net.double(), x.double(), 'moments')


def test_the_tie_sees_a_planted_bug(monkeypatch):
    "A variance 1 % off in the fused dropout fails the tie."
    torch.manual_seed(0)
    net = zoo_models()['gelu_silu_mlp']().double().eval()
    good = prop.dropout_rule
    monkeypatch.setattr(prop, 'dropout_rule', lambda x, p: (lambda r: Moments(r.mean, r.var * 1.01))(good(x, p)))
    with pytest.raises(AssertionError): _tie(net, torch.rand(5, 64, dtype=D), 'moments')


@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
def test_quadrature_moments_equals_the_all_nodes_formula(dtype):
    check_quadrature_moments(moments_mod.quadrature_moments, dtype)


@pytest.mark.parametrize('bug', ['std for var', 'one node less'])
def test_quadrature_check_sees_planted_bugs(bug):
    q = moments_mod.quadrature_moments
    impl = (lambda f, m, v, n=20: (lambda r: (r[0], r[1].sqrt()))(q(f, m, v, n))) if bug == 'std for var' else \
           (lambda f, m, v, n=20: q(f, m, v, n - 1))
    with pytest.raises(AssertionError): check_quadrature_moments(impl)


def test_unscented_softmax_equals_softmax_mean():
    check_unscented_softmax(unscented_softmax)


@pytest.mark.parametrize('bug', ['half spread', 'std for var'])
def test_unscented_softmax_check_sees_planted_bugs(bug):
    impl = (lambda m, v: unscented_softmax(m, v / 2)) if bug == 'half spread' else (lambda m, v: unscented_softmax(m, v.sqrt()))
    with pytest.raises(AssertionError): check_unscented_softmax(impl)


def test_squared_weight_is_kept_until_the_weight_changes():
    lin = nn.Linear(4, 3).double()
    with torch.no_grad():
        sq = squared_weight(lin.weight)
        assert squared_weight(lin.weight) is sq
        lin.weight.add_(1.0)
        assert torch.equal(squared_weight(lin.weight), lin.weight * lin.weight)
        lin.weight = nn.Parameter(lin.weight * 3)                        # a new tensor
        assert torch.equal(squared_weight(lin.weight), lin.weight * lin.weight)
    opt = torch.optim.SGD(lin.parameters(), lr=0.5)
    lin.weight.grad = torch.ones_like(lin.weight); opt.step()
    with torch.no_grad(): assert torch.equal(squared_weight(lin.weight), lin.weight * lin.weight)
    assert squared_weight(lin.weight).requires_grad                      # under autograd: computed afresh, in the graph
    with torch.inference_mode(): w = torch.rand(3, 3)
    assert torch.equal(squared_weight(w), w * w)                         # an inference tensor has no version counter


def test_compiled_twin_equals_the_eager_twin():
    torch.manual_seed(0)
    net = zoo_models()['batchnorm_mlp']().eval()
    x = torch.rand(16, 64)
    with torch.no_grad():
        twin = moment_propagation(net, compile=True); twin(x)            # the first call is eager: it binds every rule
        eager, compiled = moment_propagation(net)(x), twin(x)
    for a, b in zip(eager, compiled): torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match='compile'): moment_propagation(net, compile='yes')


def test_each_compiled_twin_keeps_its_own_graphs():
    # torch.compile keeps its graphs per code object, 8 by default: twins that shared `_forward`'s code ran eagerly after the 8th
    from fastdropout_nb.nn import dropout_mlp
    from fastdropout_nb.propagation import MomentPropagation
    codes = [moment_propagation(dropout_mlp((8, 4 + i, 3), 0.2, 0.5).eval(), compile=True)._own_forward().__func__.__code__ for i in range(2)]
    assert codes[0] is not codes[1] and all(c is not MomentPropagation._forward.__code__ for c in codes)
