"""Heavier checks of `fastdropout_nb.distill`: Theorem 1 by exact enumeration over many random nets,
prediction modes and state restoration, `distill`'s contract (frozen teacher, errors, options), and
nets written as people write them: functional dropout (found by the torch.fx rewrite) and batch norm.

Runs in the `ci` Hypothesis profile in well under a minute; `HYPOTHESIS_PROFILE=dev` for more examples.
"""
import copy
import itertools
import math
import sys
import types

import pytest
import torch
from hypothesis import given, strategies as st
from torch import nn
import torch.nn.functional as F

from fastdropout_nb.distill import (check_bregman_constant, check_convex_bound,
                                    distill, dropout_mode, each_seed, enumerate_dropout, exact_objectives, exact_predict,
                                    jensen_gap, kl_loss, l1_loss, mc_predict, moment_teacher, neg_entropy,
                                    random_students, random_teacher, sq_loss, sq_norm,
                                    standard_predict, switchable_dropout, dropout_modules)
from fastdropout_nb.testing import assert_mc_close

torch.set_num_threads(1)


def _net(seed, n_in, hidden, n_out, rates, relu):
    return random_teacher(seed, n_in, hidden, n_out, rates, nn.ReLU if relu else nn.Tanh)


nets = st.tuples(st.integers(0, 100_000), st.integers(1, 3),
                 st.lists(st.integers(1, 4), min_size=1, max_size=3).filter(lambda h: sum(h) <= 10),
                 st.integers(2, 4), st.floats(0.05, 0.9), st.booleans())


@given(nets, st.integers(1, 5))
def test_theorem1_bregman_losses(spec, n_x):
    seed, n_in, hidden, n_out, p, relu = spec
    net = _net(seed, n_in, tuple(hidden), n_out, (p,) * len(hidden), relu)
    x = torch.randn(n_x, n_in, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    outs, probs = enumerate_dropout(net, x, 'probs')
    assert abs(float(probs.sum()) - 1) < 1e-12
    gap = check_bregman_constant(outs, probs, random_students(outs, probs, n=5, seed=seed), kl_loss, neg_entropy)
    assert gap >= -1e-12
    raw, probs = enumerate_dropout(net, x, 'raw')
    gap = check_bregman_constant(raw, probs, random_students(raw, probs, n=5, seed=seed, kind='raw'), sq_loss, sq_norm)
    assert gap >= -1e-12


@given(nets)
def test_theorem1_l1_is_only_a_bound(spec):
    seed, n_in, hidden, n_out, p, relu = spec
    net = _net(seed, n_in, tuple(hidden), n_out, (p,) * len(hidden), relu)
    x = torch.randn(3, n_in, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    outs, probs = enumerate_dropout(net, x, 'probs')
    students = random_students(outs, probs, n=4, seed=seed)
    for q in students:                           # (i): J <= J' for every student
        J, Jp = exact_objectives(outs, probs, q, l1_loss)
        assert float(J) <= float(Jp) + 1e-12
    if float(jensen_gap(outs, probs, sq_norm)) > 1e-8:
        ybar = torch.tensordot(probs, outs, dims=1)
        check_convex_bound(outs, probs, [ybar, outs.amax(0) + 1] + students, l1_loss)


def test_broken_variants_are_caught():
    net = random_teacher(3)
    x = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    outs, probs = enumerate_dropout(net, x, 'probs')
    students = random_students(outs, probs, n=4)
    with pytest.raises(AssertionError):          # KL in the wrong direction is not of form (ii)
        check_bregman_constant(outs, probs, students, lambda y, q: kl_loss(q, y), neg_entropy)

    def averaged(outs, probs, q, loss):          # J' from the averaged teacher misses the Jensen gap
        ybar = torch.tensordot(probs, outs, dims=1)
        return loss(ybar, q).mean(), loss(ybar, q).mean()
    with pytest.raises(AssertionError):
        check_bregman_constant(outs, probs, students, kl_loss, neg_entropy, objectives=averaged)
    with pytest.raises(AssertionError):          # a wrong generator φ gives the wrong gap
        check_bregman_constant(outs, probs, students, kl_loss, sq_norm)


def test_mc_matches_exact_and_standard_is_exact_when_linear():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Dropout(0.5), nn.Linear(4, 3), nn.Tanh(),
                        nn.Dropout(0.3), nn.Linear(3, 2)).double()
    x = torch.randn(5, 3, dtype=torch.float64)
    exact = exact_predict(net, x, 'raw')
    with torch.no_grad(), dropout_mode(net):
        draws = torch.stack([net(x) for _ in range(3000)])
    assert_mc_close(draws.numpy(), exact.numpy())
    lin = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Dropout(0.4), nn.Linear(4, 2)).double()
    assert torch.allclose(exact_predict(lin, x, 'raw'), standard_predict(lin, x, 'raw'), atol=1e-12)


def test_predict_restores_state_and_keeps_batchnorm_in_eval():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Dropout2d(0.5), nn.Flatten(),
                        nn.Linear(3 * 16, 4))
    x = torch.randn(6, 1, 6, 6)
    net.train()
    stats = net[1].running_mean.clone()
    p1 = mc_predict(net, x, 20, seed=3)
    assert all(m.training for m in net.modules())
    assert torch.equal(net[1].running_mean, stats)          # BN never saw a batch in train mode
    assert torch.equal(p1, mc_predict(net, x, 20, seed=3))
    raw = mc_predict(net, x, 20, output='raw', seed=3)
    assert raw.shape == (6, 4) and not torch.allclose(raw.sum(1), torch.ones(6))
    assert torch.allclose(standard_predict(net, x), standard_predict(net.eval(), x))


def test_distill_contract():
    torch.manual_seed(0)
    teacher = random_teacher(1, 3, (8, 6), 3, (0.5, 0.5), nn.ReLU, torch.float32)
    x = torch.randn(256, 3)
    state = {k: v.clone() for k, v in teacher.state_dict().items()}
    flags = [m.training for m in teacher.modules()]
    for loss in ('kl', 'mse', lambda y, out: (y - out.softmax(1)).abs().sum(1)):
        s = distill(teacher, copy.deepcopy(teacher), x, loss=loss, epochs=2, seed=0, perturb=0.2, progress=False)
        assert not s.training and len(s.distill_history_) == 2
    for target in ('standard', lambda b: standard_predict(teacher, b)):
        distill(teacher, nn.Linear(3, 3), x, epochs=1, target=target, progress=False)
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in state.items())
    assert [m.training for m in teacher.modules()] == flags
    a = distill(teacher, copy.deepcopy(teacher), x, epochs=2, seed=5, progress=False)
    b = distill(teacher, copy.deepcopy(teacher), x, epochs=2, seed=5, progress=False)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))   # reproducible with a seed
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=32)
    distill(teacher, nn.Linear(3, 3), loader, epochs=2, progress=False)


@pytest.mark.parametrize('kwargs, match', [
    (dict(teacher=nn.Linear(3, 3)), 'no dropout'),
    (dict(unlabelled=torch.zeros(0, 3)), 'no inputs'),
    (dict(unlabelled=[]), 'no inputs'),
    (dict(student=nn.Linear(3, 5)), 'shape'),
    (dict(loss='hinge'), 'loss'),
    (dict(perturb=-0.1), 'perturb'),
    (dict(perturb=1.0), 'perturb'),
    (dict(epochs=0), 'epochs'),
    (dict(lr=-1.0), 'lr'),
    (dict(batch_size=0), 'batch_size'),
    (dict(target='nope'), 'target'),
    (dict(output='raw'), "output='probs'"),
    (dict(unlabelled=iter([torch.zeros(2, 3)]), epochs=2), 'one-shot'),
])
def test_distill_rejects_bad_input(kwargs, match):
    teacher = random_teacher(1, 3, (4,), 3, (0.5,), nn.ReLU, torch.float32)
    args = dict(teacher=teacher, student=copy.deepcopy(teacher), unlabelled=torch.randn(16, 3), epochs=1,
                progress=False)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        distill(**args)


def test_moments_target_is_moment_propagation():
    """`target='moments'` distils from `fastdropout_nb.propagation.moment_propagation(teacher, output='softmax')`; with
    dropout rate 0 that deterministic teacher is the standard prediction exactly."""
    from fastdropout_nb.propagation import moment_propagation
    teacher = random_teacher(1, 3, (4,), 3, (0.5,), nn.ReLU, torch.float64)
    x = torch.randn(64, 3, dtype=torch.float64)
    mp = moment_propagation(teacher, output='softmax')
    with torch.no_grad(): assert torch.equal(moment_teacher(teacher)(x), mp(x))

    def student():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 3)).double()
    s = distill(teacher, student(), x, target='moments', epochs=3, lr=1e-2, seed=0, progress=False)
    ref = distill(teacher, student(), x, target=lambda b: mp(b).detach(), epochs=3, lr=1e-2, seed=0, progress=False)
    assert s.distill_history_[-1]['loss'] < s.distill_history_[0]['loss']
    assert all(torch.allclose(a, b, atol=1e-10) for a, b in zip(s.parameters(), ref.parameters()))

    no_drop = copy.deepcopy(teacher)
    for m in no_drop.modules():
        if isinstance(m, nn.Dropout): m.p = 0.0
    torch.testing.assert_close(moment_teacher(no_drop)(x), standard_predict(no_drop, x), rtol=1e-12, atol=1e-14)


def test_moments_target_missing_module_is_a_clear_error(monkeypatch):
    for name in ('fastdropout_nb.nn', 'fastdropout_nb.propagation'):
        monkeypatch.setitem(sys.modules, name, None)               # import fails, wherever it comes from
    teacher = random_teacher(1, 3, (4,), 3, (0.5,), nn.ReLU, torch.float32)
    with pytest.raises(ValueError, match='moment_propagation'):
        distill(teacher, copy.deepcopy(teacher), torch.randn(8, 3), target='moments', epochs=1, progress=False)


class _Stop(Exception):
    pass


def _stop_after_saving(monkeypatch, n):
    "Make the module's checkpoint writer raise right after it has written the checkpoint of epoch `n` (a kill then)."
    import fastdropout_nb.distill as D
    orig = D._save_checkpoint
    def save(*args):
        orig(*args)
        if len(args[-1]) == n: raise _Stop
    monkeypatch.setattr(D, '_save_checkpoint', save)
    return lambda: monkeypatch.setattr(D, '_save_checkpoint', orig)


def test_checkpoints_resume_to_the_uninterrupted_result(tmp_path, monkeypatch):
    "distill and train_classifier stopped after epoch 2 and rerun with the checkpoint end bit-identical to a run never stopped."
    from fastdropout_nb.distill import mlp, train_classifier
    teacher = random_teacher(3, 4, (6, 5), 3, (0.5, 0.5), nn.ReLU, torch.float32)
    x = torch.randn(200, 4)
    kw = dict(epochs=4, lr=3e-3, batch_size=32, seed=5, perturb=0.1, milestones=(2,), progress=False)
    whole = distill(teacher, copy.deepcopy(teacher), x, **kw)
    restore = _stop_after_saving(monkeypatch, 2)
    with pytest.raises(_Stop): distill(teacher, copy.deepcopy(teacher), x, checkpoint=tmp_path / 's.pt', **kw)
    restore()
    resumed = distill(teacher, copy.deepcopy(teacher), x, checkpoint=tmp_path / 's.pt', **kw)
    assert [r['epoch'] for r in resumed.distill_history_] == [1, 2, 3, 4]
    for a, b in zip(whole.state_dict().values(), resumed.state_dict().values()): assert torch.equal(a, b)
    again = distill(teacher, copy.deepcopy(teacher), x, checkpoint=tmp_path / 's.pt', **kw)   # finished: nothing to train
    for a, b in zip(whole.state_dict().values(), again.state_dict().values()): assert torch.equal(a, b)
    with pytest.raises(ValueError, match='other settings'):
        distill(teacher, copy.deepcopy(teacher), x, checkpoint=tmp_path / 's.pt', **{**kw, 'perturb': 0.2})

    y = torch.randint(0, 3, (200,))
    net = lambda: (torch.manual_seed(0), mlp(4, (8,), 3, p_in=0.2, p=0.5))[1]
    ckw = dict(epochs=4, seed=1, milestones=(2,), batch_size=32)
    ref = train_classifier(net(), x, y, **ckw)
    restore = _stop_after_saving(monkeypatch, 2)
    with pytest.raises(_Stop): train_classifier(net(), x, y, checkpoint=tmp_path / 't.pt', **ckw)
    restore()
    res = train_classifier(net(), x, y, checkpoint=tmp_path / 't.pt', **ckw)
    for a, b in zip(ref.state_dict().values(), res.state_dict().values()): assert torch.equal(a, b)
    assert not list(tmp_path.glob('.*.tmp'))                     # atomic writes leave no temporary files


# --- nets written as people write them: functional dropout, batch norm ------------------------------------------

class _FunctionalBN(nn.Module):
    "MLP with batch norm after a dropped-into layer; dropouts written as functions (F.dropout and torch.dropout)."
    def __init__(self, n_in=4, h=6, n_out=3, p_in=0.2, p=0.5):
        super().__init__()
        self.p_in, self.p = p_in, p
        self.fc1, self.fc2, self.bn, self.fc3 = nn.Linear(n_in, h), nn.Linear(h, h), nn.BatchNorm1d(h), nn.Linear(h, n_out)
        with torch.no_grad():                                    # running statistics a fresh layer does not have
            self.bn.running_mean.uniform_(-1, 1); self.bn.running_var.uniform_(0.5, 2.0); self.bn.num_batches_tracked += 7

    def forward(self, x):
        x = F.dropout(x, self.p_in, training=self.training)
        x = F.relu(self.fc1(x))
        x = torch.dropout(x, self.p, self.training)
        return self.fc3(F.relu(self.bn(self.fc2(x))))


def _bn_state(net):
    return {k: v.clone() for k, v in net.state_dict().items() if k.startswith('bn.')}


def _same(a, b): return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_rewrite_makes_every_functional_dropout_a_module_sharing_parameters():
    torch.manual_seed(0)
    net = _FunctionalBN()
    sw = switchable_dropout(net)
    assert [(type(m), m.p) for m in dropout_modules(sw)] == [(nn.Dropout, 0.2), (nn.Dropout, 0.5)]
    assert sw.fc1.weight is net.fc1.weight and sw.bn.running_var is net.bn.running_var
    assert switchable_dropout(sw) is sw and not dropout_modules(net)
    x = torch.randn(5, 4)
    net.eval()
    assert torch.equal(sw.eval()(x), net(x))


def test_mc_predict_on_functional_dropout_equals_a_hand_written_average():
    "mc_predict of an F.dropout net with batch norm = the hand-written MC average with the same seed."
    torch.manual_seed(0)
    net = _FunctionalBN().train()
    x = torch.randn(7, 4)
    bn0, n = _bn_state(net), 300
    mc = mc_predict(net, x, n, seed=11)
    assert all(m.training for m in net.modules())                 # flags restored
    assert _same(_bn_state(net), bn0)                               # running statistics unchanged
    net.bn.eval()                                                   # by hand: the root's flag drives F.dropout
    with torch.no_grad():                                           # sampled net s: one pass under its own seed
        draws = torch.stack([net(x).softmax(1) for _ in each_seed(11, n)])
    net.train()
    torch.testing.assert_close(mc, draws.mean(0), rtol=0, atol=1e-6)
    std = standard_predict(net, x)
    assert _same(_bn_state(net), bn0)
    assert float((mc - std).abs().max()) > 1e-3                      # not the standard pass (round-off is ~1e-7)
    assert_mc_close(draws.double().numpy(), exact_predict(net.double(), x.double()).numpy(), k=5,
                    what='MC of the functional net vs its exact ideal predictor')


class _Gates(nn.Module):
    "Functional element-wise dropout on the input, a dropout module called twice, and channel dropout (F.dropout2d)."
    def __init__(self):
        super().__init__()
        self.conv, self.fc, self.drop = nn.Conv2d(1, 2, 2), nn.Linear(2, 2), nn.Dropout(0.4)

    def forward(self, x):
        x = F.dropout(x, 0.3, training=self.training)                       # 4 gates (1×2×2)
        h = F.dropout2d(torch.tanh(self.conv(x)), 0.6, self.training)       # 2 channel gates, over a 1×1 map
        h = self.drop(torch.tanh(self.fc(h.flatten(1))))                    # 2 gates
        return self.drop(h) * 2 + h                                         # the same module again: 2 new gates


def _hand_enumeration(net, x, shared=False):
    """E_σ[net(x)] written out over every gate of every dropout call, in float64 (`shared`: the planted bug of one gate
    set for both calls of `net.drop`)."""
    total, t = 0, lambda g: torch.tensor(g, dtype=torch.float64)
    keep = lambda gates, p: math.prod(1 - p if g else p for g in gates)
    for g_in, g_ch, g_a in itertools.product(*[list(itertools.product((0, 1), repeat=k)) for k in (4, 2, 2)]):
        for g_b in [g_a] if shared else itertools.product((0, 1), repeat=2):
            prob = keep(g_in, 0.3) * keep(g_ch, 0.6) * keep(g_a, 0.4) * (1 if shared else keep(g_b, 0.4))
            with torch.no_grad():
                h = torch.tanh(net.conv(x * t(g_in).reshape(1, 1, 2, 2) / 0.7)) * t(g_ch).reshape(1, 2, 1, 1) / 0.4
                h = torch.tanh(net.fc(h.flatten(1))) * t(g_a) / 0.6
                total = total + prob * (h * t(g_b) / 0.6 * 2 + h)
    return total


def test_exact_predict_on_functional_dropout_equals_a_hand_enumeration():
    torch.manual_seed(3)
    net = _Gates().double()
    x = torch.randn(3, 1, 2, 2, dtype=torch.float64)
    outs, probs = enumerate_dropout(net, x)
    assert len(probs) == 2 ** 10 and abs(float(probs.sum()) - 1) < 1e-12
    exact = exact_predict(net, x, 'raw')
    torch.testing.assert_close(exact, _hand_enumeration(net, x), rtol=0, atol=1e-12)
    assert float((exact - _hand_enumeration(net, x, shared=True)).abs().max()) > 1e-3     # the planted bug is seen


def test_models_whose_dropout_cannot_be_switched_are_refused():
    class Hand(nn.Module):
        def __init__(self): super().__init__(); self.fc = nn.Linear(3, 2)
        def forward(self, x): return self.fc(x * torch.rand_like(x).ge(0.5) * 2)
    class DataDependent(nn.Module):
        def __init__(self): super().__init__(); self.fc = nn.Linear(3, 2)
        def forward(self, x): return self.fc(F.dropout(x, 0.5, self.training) if x.sum() > 0 else x)
    class TrainOnly(nn.Module):
        def __init__(self): super().__init__(); self.fc = nn.Linear(3, 2)
        def forward(self, x): return self.fc(F.dropout(x, 0.5) if self.training else x)
    class TensorRate(nn.Module):
        def __init__(self): super().__init__(); self.fc = nn.Linear(3, 2)
        def forward(self, x): return self.fc(F.dropout(x, x.mean(), self.training))
    cases = [(Hand(), "node 'ge'|rand_like"), (DataDependent(), 'cannot be traced'), (TrainOnly(), 'training mode'),
             (TensorRate(), 'rate must be a constant'), (nn.Sequential(nn.Linear(3, 2), nn.AlphaDropout(0.2)), 'alpha'),
             (nn.Sequential(nn.Linear(3, 3)), 'no dropout')]
    x = torch.randn(4, 3)
    for model, match in cases:
        for call in (lambda: mc_predict(model, x, 5), lambda: exact_predict(model, x),
                     lambda: distill(model, nn.Linear(3, 2), x, epochs=1, progress=False)):
            with pytest.raises(ValueError, match=match): call()
    plain = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3), nn.ReLU(), nn.Linear(3, 2)).eval()
    with torch.no_grad(): assert torch.equal(standard_predict(plain, x, 'raw'), plain(x))   # no dropout: one eval pass


def test_distill_keeps_batchnorm_statistics_and_functional_dropout_off_in_the_student():
    "distill never touches the teacher's batch-norm statistics; the student's F.dropout stays off."
    torch.manual_seed(1)
    teacher, x = _FunctionalBN(), torch.randn(96, 4)
    bn0 = _bn_state(teacher)
    for target in ('mc', 'standard'):
        distill(teacher, copy.deepcopy(teacher), x, epochs=2, batch_size=32, seed=0, target=target, progress=False)
        assert _same(_bn_state(teacher), bn0)
    mlp_teacher = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    class FunctionalStudent(nn.Module):                              # the standard teacher's function, F.dropout inside
        def __init__(self): super().__init__(); self.net = copy.deepcopy(mlp_teacher)
        def forward(self, x): return self.net(F.dropout(x, 0.9, training=self.training))
    with_drop = nn.Sequential(nn.Dropout(0.5), mlp_teacher)
    s = distill(with_drop, FunctionalStudent(), x, loss='mse', output='raw', target='standard', epochs=2, batch_size=32,
                seed=0, progress=False)
    assert [r['loss'] for r in s.distill_history_] == [0.0, 0.0]      # a sampled student would miss its target


def test_distill_moments_target_on_a_custom_teacher_with_batchnorm():
    "target='moments' on a custom-module teacher (functional dropout, batch norm) is moment_propagation."
    try: from fastdropout_nb.propagation import moment_propagation
    except ImportError: pytest.skip('fastdropout_nb.propagation is not available')
    torch.manual_seed(2)
    teacher, x = _FunctionalBN().double(), torch.randn(128, 4, dtype=torch.float64)
    bn0 = _bn_state(teacher)
    mp = moment_propagation(teacher, output='softmax')
    with torch.no_grad(): torch.testing.assert_close(moment_teacher(teacher)(x), mp(x), rtol=0, atol=0)

    def student():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).double()
    s = distill(teacher, student(), x, target='moments', epochs=4, lr=1e-2, batch_size=32, seed=0, progress=False)
    ref = distill(teacher, student(), x, target=lambda b: mp(b).detach(), epochs=4, lr=1e-2, batch_size=32, seed=0,
                  progress=False)
    assert s.distill_history_[-1]['loss'] < s.distill_history_[0]['loss']
    assert all(torch.equal(a, b) for a, b in zip(s.parameters(), ref.parameters()))
    assert _same(_bn_state(teacher), bn0)
    exact = exact_predict(teacher, x[:16])                              # and it is near the ideal predictor
    with torch.no_grad(): assert float((mp(x[:16]) - exact).abs().max()) < 0.1


# --- a small zoo of nets written as people write them, through every entry point ---------------------------------

class _Residual(nn.Module):
    def __init__(self):
        super().__init__(); self.inp, self.fc1, self.fc2, self.out = nn.Linear(3, 4), nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 3)
    def forward(self, x):
        h = F.relu(self.inp(x))
        h = h + self.fc2(F.dropout(F.relu(self.fc1(h)), 0.5, self.training))      # a residual block
        return self.out(F.dropout(h, 0.3, self.training))


class _GeluSilu(nn.Module):
    def __init__(self):
        super().__init__(); self.fc1, self.fc2, self.fc3 = nn.Linear(3, 5), nn.Linear(5, 5), nn.Linear(5, 3)
    def forward(self, x):
        x = F.gelu(self.fc1(F.dropout(x, 0.2, self.training)))
        return self.fc3(F.silu(self.fc2(torch.dropout(x, 0.5, self.training))))


class _AvgPoolLeaky(nn.Module):
    def __init__(self):
        super().__init__(); self.conv, self.fc = nn.Conv2d(1, 3, 2), nn.Linear(3, 2)
    def forward(self, x):
        x = F.leaky_relu(self.conv(x.view(-1, 1, 3, 3)), 0.1)
        x = F.dropout2d(x, 0.4, self.training)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class _MnistShape(nn.Module):
    "PyTorch's MNIST example, shrunk to 3×3 inputs: conv, max-pool, F.dropout, flatten, F.log_softmax."
    def __init__(self):
        super().__init__(); self.conv, self.fc1, self.fc2 = nn.Conv2d(1, 2, 2), nn.Linear(2, 4), nn.Linear(4, 3)
    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv(x.view(-1, 1, 3, 3))), 2)
        x = F.dropout(torch.flatten(x, 1), 0.25, training=self.training)
        x = F.dropout(F.relu(self.fc1(x)), 0.5, training=self.training)
        return F.log_softmax(self.fc2(x), dim=1)


def _zoo():
    torch.manual_seed(4)
    return {'residual': (_Residual(), 8), 'gelu-silu': (_GeluSilu(), 8), 'avgpool-leaky': (_AvgPoolLeaky(), 3),
            'mnist-shape': (_MnistShape(), 6), 'batchnorm': (_FunctionalBN(3, 4, 3), 7),
            'reused module': (nn.Sequential(nn.Linear(3, 4), (d := nn.Dropout(0.5)), nn.Tanh(), nn.Linear(4, 4), d,
                                            nn.Linear(4, 2)), 8)}


@pytest.mark.parametrize('name', list(_zoo()))
def test_every_entry_point_on_a_zoo_net(name):
    "Each net: the rewrite finds every gate; MC (draws) agrees with the exact ideal predictor; batch norm untouched."
    net, units = _zoo()[name]
    net = net.double().train()
    x = torch.randn(5, 9 if name in ('avgpool-leaky', 'mnist-shape') else 3, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(0))
    state = copy.deepcopy(net.state_dict())
    outs, probs = enumerate_dropout(net, x)
    assert len(probs) == 2 ** units
    exact = exact_predict(net, x, 'raw')
    sw = switchable_dropout(net)
    with torch.no_grad(), dropout_mode(sw):
        draws = torch.stack([sw(x) for _ in each_seed(0, 1000)])
    assert_mc_close(draws.numpy(), exact.numpy(), k=5, what=f'{name}: MC vs exact')
    torch.testing.assert_close(mc_predict(net, x, 1000, "raw", seed=0), draws.mean(0), rtol=0, atol=1e-10)
    assert float((exact_predict(net, x) - standard_predict(net, x)).abs().max()) > 1e-6   # softmax: not weight scaling
    distill(net, copy.deepcopy(net), x, target='mc', epochs=1, progress=False, loss='mse', output='raw')
    try: from fastdropout_nb.propagation import moment_propagation
    except ImportError: moment_propagation = None
    if moment_propagation is not None:                 # target='moments' where propagation has rules, refused where not
        try: moment_propagation(net, output='softmax')
        except ValueError:
            with pytest.raises(ValueError, match='moment_propagation'):
                distill(net, copy.deepcopy(net), x, target='moments', epochs=1, progress=False)
        else: distill(net, copy.deepcopy(net), x, target='moments', epochs=1, progress=False)
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in state.items()) and all(m.training for m in net.modules())


class _FunctionalTwin(nn.Module):
    "An nn.Sequential dropout net run with each nn.Dropout written as a function call instead (same weights, same rates)."
    def __init__(self, seq, use_torch):
        super().__init__(); self.seq, self.use_torch = seq, use_torch

    def forward(self, x):
        for m in self.seq:
            if not isinstance(m, nn.Dropout): x = m(x)
            elif self.use_torch: x = torch.dropout(x, m.p, self.training)
            else: x = F.dropout(x, m.p, training=self.training)
        return x


@given(nets, st.booleans(), st.integers(1, 4))
def test_functional_dropout_nets_equal_their_module_twins(spec, use_torch, n_x):
    "Random nets: written with F.dropout/torch.dropout, every gate configuration, its probability and MC draws equal the module net's."
    seed, n_in, hidden, n_out, p, relu = spec
    net = _net(seed, n_in, tuple(hidden), n_out, (p,) * len(hidden), relu)
    twin = _FunctionalTwin(net, use_torch)
    assert [m.p for m in dropout_modules(switchable_dropout(twin))] == [m.p for m in dropout_modules(net)]
    x = torch.randn(n_x, n_in, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    (o1, p1), (o2, p2) = enumerate_dropout(net, x, 'probs'), enumerate_dropout(twin, x, 'probs')
    assert torch.equal(o1, o2) and torch.equal(p1, p2)
    assert torch.equal(mc_predict(net, x, 7, 'raw', seed=seed), mc_predict(twin, x, 7, 'raw', seed=seed))


def test_a_dropout_switched_off_in_the_code_is_no_gate():
    "F.dropout(x, p, training=False) never dropped while the model trained: the identity, not a gate."
    class Half(nn.Module):
        def __init__(self): super().__init__(); self.fc = nn.Linear(3, 2)
        def forward(self, x): return self.fc(F.dropout(F.dropout(x, 0.5, training=False), 0.3, training=self.training))
    net, x = Half().double(), torch.randn(4, 3, dtype=torch.float64)
    assert [m.p for m in dropout_modules(switchable_dropout(net))] == [0.3]
    assert [m.p for m in dropout_modules(switchable_dropout(net, training=True))] == [0.3]
    assert len(enumerate_dropout(net, x)[1]) == 2 ** 3


def test_mc_predict_on_the_propagation_zoo_equals_a_hand_written_average():
    """Chapter 04b's six nets as people write them: mc_predict = the average with the custom modules (so F.dropout) and
    dropout modules in train mode, PyTorch's other layers (batch norm) in eval mode, same seed; not the standard pass."""
    try: from fastdropout_nb.propagation import zoo_models
    except ImportError: pytest.skip('fastdropout_nb.propagation.zoo_models is not available')
    x = torch.rand(6, 64, generator=torch.Generator().manual_seed(0))
    for name, make in zoo_models().items():
        torch.manual_seed(0)
        net = make().eval()
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                with torch.no_grad(): m.running_mean.uniform_(-0.5, 0.5); m.running_var.uniform_(0.5, 2.0)
        state = copy.deepcopy(net.state_dict())
        mc, std = mc_predict(net, x, 30, seed=1), standard_predict(net, x)
        for m in net.modules():
            m.training = isinstance(m, nn.modules.dropout._DropoutNd) or not type(m).__module__.startswith('torch.nn')
        with torch.no_grad(): by_hand = sum(net(x).softmax(1) for _ in each_seed(1, 30)) / 30
        net.eval()
        torch.testing.assert_close(mc, by_hand, rtol=0, atol=1e-6, msg=lambda m: f'{name}: {m}')
        assert float((mc - std).abs().max()) > 1e-4, name
        assert all(torch.equal(v, net.state_dict()[k]) for k, v in state.items()), name
