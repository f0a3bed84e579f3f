"""MC dropout with the sampled nets as copies of the batch (`mc_predict(batched=...)`, chapter 05): every sampled net
draws its gates from its own stream, so the repeated batch and the loop give the same nets (float64, same seed), whatever
the grouping into passes (the memory budget); the samples' mean and variance are those of exact enumeration; models that
mix the rows of a batch, or whose gates are drawn inside torch's kernels, take the loop (or are refused with batched=True).
"""
import contextlib

import pytest
import torch
from torch import nn
import torch.nn.functional as F

import fastdropout_nb.distill as D
from fastdropout_nb.distill import enumerate_dropout, mc_predict, sample_seeds, seeded, switchable_dropout, dropout_mode
from fastdropout_nb.testing import assert_mc_close
from fastdropout_nb.uncertainty import mc_outputs

torch.set_num_threads(1)


class _Gates(nn.Module):
    "Functional dropout on the input, channel dropout after a conv, batch norm (eval), a dropout module: 4 + 2 + 3 gates."
    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.fc, self.out, self.drop = nn.Conv2d(1, 2, 2), nn.BatchNorm1d(3), nn.Linear(2, 3), nn.Linear(3, 2), nn.Dropout(0.4)
    def forward(self, x):
        x = F.dropout(x, 0.3, training=self.training)
        h = F.dropout2d(torch.tanh(self.conv(x)), 0.6, self.training)
        return self.out(self.drop(torch.relu(self.bn(self.fc(h.flatten(1))))))


def _nets():
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(3, 6), nn.ReLU(), nn.Dropout(0.5), nn.Linear(6, 4), nn.Tanh(), nn.Dropout(0.3), nn.Linear(4, 2))
    gates = _Gates()
    with torch.no_grad(): gates.bn.running_mean.uniform_(-0.5, 0.5); gates.bn.running_var.uniform_(0.5, 2.0)
    gen = torch.Generator().manual_seed(1)
    return {'mlp': (mlp.double(), torch.randn(5, 3, dtype=torch.float64, generator=gen)),
            'gates': (gates.double(), torch.randn(5, 1, 2, 2, dtype=torch.float64, generator=gen))}


def _by_hand(net, x, n, seed):
    "The loop a user writes: sampled net s is one pass after torch.manual_seed(sample_seeds(seed, n)[s])."
    sw = switchable_dropout(net)
    with torch.no_grad(), dropout_mode(sw):
        return torch.stack([(torch.manual_seed(s), sw(x))[1] for s in sample_seeds(seed, n)]) if n else None


def _fork(f):
    with torch.random.fork_rng(): return f()


def check_batched_is_the_loop(net, x, n=50, seed=3):
    "The repeated batch (all nets in one pass, and 7 per pass) = the loop = the hand-written loop, in float64."
    per_row = D._batch_check(switchable_dropout(net), x)[1]
    loop = mc_predict(net, x, n, 'raw', seed=seed, batched=False)
    torch.testing.assert_close(loop, _fork(lambda: _by_hand(net, x, n, seed)).mean(0), rtol=0, atol=1e-12)
    for memory in (2**28, int(7 * per_row * len(x)) + 1):
        torch.testing.assert_close(mc_predict(net, x, n, 'raw', seed=seed, batched=True, memory=memory), loop, rtol=0, atol=1e-12)


def check_samples_match_enumeration(net, x, n=4000, seed=0):
    "The samples of the repeated batch have the exact mean and variance (within 5 standard errors of MC)."
    z = mc_outputs(net, x, n, seed=seed, batched=True)
    outs, probs = enumerate_dropout(net, x, 'raw')
    mean = torch.einsum('m,mnk->nk', probs, outs)
    var = torch.einsum('m,mnk->nk', probs, (outs - mean) ** 2)
    assert_mc_close(z.numpy(), mean.numpy(), k=5, what='batched MC mean vs exact')
    assert_mc_close(((z - mean) ** 2).numpy(), var.numpy(), k=5, what='batched MC variance vs exact')


@pytest.mark.parametrize('name', list(_nets()))
def test_batched_equals_the_loop_for_a_fixed_seed(name):
    net, x = _nets()[name]
    assert D._copies(switchable_dropout(net), x, 50, 'auto', 2**28) == 50      # one pass holds every copy
    check_batched_is_the_loop(net, x)


@pytest.mark.parametrize('name', list(_nets()))
def test_batched_samples_have_the_exact_mean_and_variance(name):
    check_samples_match_enumeration(*_nets()[name])


def test_chunking_and_batches_do_not_change_the_result():
    "Any number of copies per pass (1 to all) gives the same average for a fixed seed; another seed another one."
    net, x = _nets()['gates']
    per_row = D._batch_check(switchable_dropout(net), x)[1]
    runs = [mc_predict(net, x, 23, seed=5, batched=True, memory=int(k * per_row * len(x)) + 1) for k in (1, 2, 5, 23)]
    for r in runs[1:]: torch.testing.assert_close(r, runs[0], rtol=0, atol=1e-12)
    assert torch.equal(mc_predict(net, x, 23, seed=5), mc_predict(net, x, 23, seed=5))
    assert float((mc_predict(net, x, 23, seed=6) - runs[0]).abs().max()) > 1e-3
    torch.manual_seed(9); a = mc_predict(net, x, 23)                    # seed None: the global stream decides
    torch.manual_seed(9); assert torch.equal(a, mc_predict(net, x, 23))


@contextlib.contextmanager
def _one_stream(net, states, device, per_copy=D._per_copy_gates):
    "Planted bug: every copy of a pass draws its gates from the first copy's stream (one mask for all)."
    shared = [states[0]] * len(states)
    with per_copy(net, shared, device): yield
    states[:] = shared


def test_planted_bugs_are_caught(monkeypatch):
    "Copies interleaved instead of stacked, one stream for every copy, a row-mixing net let through: each fails a check."
    net, x = _nets()['mlp']
    with monkeypatch.context() as m:
        m.setattr(D, '_repeat', lambda b, k: b.repeat_interleave(k, 0))
        with pytest.raises(AssertionError): check_batched_is_the_loop(net, x)
        with pytest.raises(AssertionError): check_samples_match_enumeration(net, x)
    with monkeypatch.context() as m:
        m.setattr(D, '_per_copy_gates', _one_stream)
        with pytest.raises(AssertionError): check_batched_is_the_loop(net, x)
        with pytest.raises(AssertionError): check_samples_match_enumeration(net, x)
    with monkeypatch.context() as m:
        m.setattr(D, '_batch_check', lambda net, x: (None, 1.0))
        cum = _RowMixing().double()
        with pytest.raises(AssertionError): torch.testing.assert_close(
            mc_predict(cum, x, 20, 'raw', seed=0, batched=True), mc_predict(cum, x, 20, 'raw', seed=0, batched=False))


class _RowMixing(nn.Module):
    "Dim 0 is a sequence here (a running sum over it): copies stacked along it would see each other."
    def __init__(self): super().__init__(); self.fc, self.drop = nn.Linear(3, 2), nn.Dropout(0.5)
    def forward(self, x): return self.fc(self.drop(x.cumsum(0)))


class _SeqFirst(nn.Module):
    def __init__(self): super().__init__(); self.rnn, self.drop, self.fc = nn.LSTM(3, 4), nn.Dropout(0.5), nn.Linear(4, 2)
    def forward(self, x): return self.fc(self.drop(self.rnn(x)[0]))


class _First(nn.Module):
    "The output of a recurrent layer, without its state."
    def __init__(self, m): super().__init__(); self.m = m
    def forward(self, x): return self.m(x)[0]


class _DropConnect(nn.Module):
    "Dropout on a weight: one mask per pass, shared by every row."
    def __init__(self): super().__init__(); self.fc, self.drop = nn.Linear(3, 2), nn.Dropout(0.5)
    def forward(self, x): return F.linear(x, self.drop(self.fc.weight), self.fc.bias)


@pytest.mark.parametrize('make, x, why', [
    (_RowMixing, torch.randn(6, 3), 'rows are mixed'),
    (_SeqFirst, torch.randn(6, 2, 3), r'rnn \(LSTM\): batch_first=False'),
    (lambda: nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4, track_running_stats=False), nn.Dropout(0.5)), torch.randn(6, 3), 'statistics of the batch'),
    (_DropConnect, torch.randn(6, 3), 'does not grow with the batch'),
    (lambda: nn.Sequential(_First(nn.LSTM(3, 4, 2, dropout=0.5, batch_first=True))), torch.randn(6, 2, 3), "drawn inside torch's kernel"),
])
def test_models_that_cannot_take_a_repeated_batch_take_the_loop(make, x, why):
    "'auto' runs the loop (the same answer as batched=False); batched=True is refused with the reason, naming the module."
    torch.manual_seed(0)
    net = make().double().eval()
    assert torch.equal(mc_predict(net, x.double(), 9, 'raw', seed=1), mc_predict(net, x.double(), 9, 'raw', seed=1, batched=False))
    with pytest.raises(ValueError, match=why): mc_predict(net, x.double(), 9, 'raw', seed=1, batched=True)


def test_bad_arguments_are_refused():
    net, x = _nets()['mlp']
    for kw, name in [(dict(batched='yes'), 'batched'), (dict(batched=1), 'batched'), (dict(memory=0), 'memory'),
                     (dict(memory=1.5), 'memory'), (dict(seed=1.5), 'seed')]:
        with pytest.raises(ValueError, match=name): mc_predict(net, x, 5, **kw)
