"""The distillation protocols (`fastdropout_nb.distillation_protocols`): the digits pipeline end to end on a tiny
budget, and the LeNet / LeNetAll nets of the paper's MNIST protocol."""
import pytest
import torch
from torch import nn

from fastdropout_nb.distillation_protocols import digits_distillation, digits_split, inference_costs, lenet, small_convnet

torch.set_num_threads(1)


def test_tiny_digits_pipeline_runs():
    data = digits_split(0)
    torch.manual_seed(0)
    teacher = small_convnet()
    res, student = digits_distillation(data, teacher, quick=True, seed=0, epochs=1, n_mc=3)
    assert set(res) >= {'standard', 'mc', 'distilled', 'recovered_error'}
    costs = inference_costs(teacher, student, data['test'][0][:50], n_mc=3, repeats=1)
    assert set(costs) == {'standard', 'mc-3', 'distilled'} and all(v > 0 for v in costs.values())


@pytest.mark.parametrize('dropout, n', [('last', 1), ('all', 3)])
def test_lenet_shapes(dropout, n):
    net = lenet(dropout)
    assert net(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert sum(isinstance(m, nn.Dropout) for m in net.modules()) == n
    with pytest.raises(ValueError):
        lenet('first')


@pytest.mark.parametrize('protocol', ['as_written', 'summed', 'caffe'])
def test_teacher_protocol_runs_one_step(protocol):
    "Each teacher protocol builds its optimiser and takes one step (one epoch of one batch): loss finite, evaluation recorded."
    from fastdropout_nb.distillation_protocols import TEACHER_PROTOCOLS, train_teacher
    assert {'deviation', 'reason', 'epochs', 'lr'} <= set(TEACHER_PROTOCOLS[protocol])
    g = torch.Generator().manual_seed(0)
    X, y = torch.rand(64, 1, 28, 28, generator=g), torch.randint(0, 10, (64,), generator=g)
    net = train_teacher(X, y, 'all', protocol, epochs=1, progress=False, evaluate=lambda m: dict(n=float(len(m(X)))))
    (rec,) = net.train_history_
    assert rec['epoch'] == 1 and torch.isfinite(torch.tensor(rec['loss'])) and rec['n'] == 64.0 and not net.training


def test_teacher_protocol_unknown_refused():
    from fastdropout_nb.distillation_protocols import teacher_protocol
    with pytest.raises(ValueError, match='protocol'):
        teacher_protocol('adam')


class _Stop(Exception):
    pass


@pytest.mark.parametrize('protocol', ['caffe', 'summed'])
def test_teacher_protocol_resumes_bit_identical(protocol, tmp_path, monkeypatch):
    """Stopped after epoch 2 of 3 and rerun from the checkpoint, a teacher ends bit-identical to one never stopped ('caffe':
    CaffeSGD's iteration count, hence its `inv` rate, must come back with the optimiser's state)."""
    import fastdropout_nb.distill as D
    from fastdropout_nb.distillation_protocols import train_teacher
    g = torch.Generator().manual_seed(1)
    X, y = torch.rand(96, 1, 28, 28, generator=g), torch.randint(0, 10, (96,), generator=g)
    kw = dict(dropout='all', protocol=protocol, seed=3, epochs=3, progress=False)
    ref = train_teacher(X, y, **kw)
    save = D._save_checkpoint
    def stop_after_two(*args):
        save(*args)
        if len(args[-1]) == 2: raise _Stop
    monkeypatch.setattr(D, '_save_checkpoint', stop_after_two)
    with pytest.raises(_Stop): train_teacher(X, y, checkpoint=tmp_path / 't.pt', **kw)
    monkeypatch.setattr(D, '_save_checkpoint', save)
    res = train_teacher(X, y, checkpoint=tmp_path / 't.pt', **kw)
    assert [r['loss'] for r in res.train_history_] == [r['loss'] for r in ref.train_history_]
    assert all(torch.equal(a, b) for a, b in zip(ref.state_dict().values(), res.state_dict().values()))


def _tiny_mnist_ds(data_dir=None):
    "A stand-in for `load_mnist`: 128 training and 64 test images (uint8, 28×28), as `mnist_table` reads them."
    import numpy as np
    from types import SimpleNamespace
    r = np.random.default_rng(0)
    img = lambda n: (r.integers(0, 256, (n, 28, 28), dtype=np.uint8), r.integers(0, 10, n))
    return SimpleNamespace(train=img(128), test=img(64))


def test_mnist_table_teacher_protocol_reuses_the_protocol_checkpoint(tmp_path, monkeypatch):
    """mnist_table(protocol='caffe') trains its teacher by `train_teacher` into the teacher-protocol script's checkpoint
    (teacher-NET-PROTOCOL[-quick]-seedK.pt) and, rerun, takes it from there without a step; the student's checkpoint names
    the teacher's protocol and epochs; 'as_written' refuses teacher_epochs."""
    import fastdropout_nb.distillation_protocols as DP
    monkeypatch.setattr(DP, 'load_mnist', _tiny_mnist_ds)
    kw = dict(quick=True, seed=2, device='cpu', n_mc=3, mc_repeats=1, checkpoint_dir=tmp_path, protocol='caffe')
    r = DP.mnist_table('all', **kw)
    assert r['protocol'] == 'caffe' and r['teacher_epochs'] == 1 and r['network'] == 'LeNetAll'
    assert {p.name for p in tmp_path.iterdir()} == {'teacher-all-caffe-quick-seed2.pt', 'mnist-all-quick-seed2-caffe1-student.pt'}
    assert torch.load(tmp_path / 'teacher-all-caffe-quick-seed2.pt', weights_only=False)['settings']['epochs'] == 60
    def no_training(*a, **k): raise AssertionError('the teacher was retrained')
    monkeypatch.setattr(DP, 'train_classifier', no_training)
    assert DP.mnist_table('all', **kw) == r                      # teacher and student both from their checkpoints
    with pytest.raises(ValueError, match='teacher_epochs'):
        DP.mnist_table('all', quick=True, device='cpu', teacher_epochs=5)


def test_train_teacher_stops_inside_the_schedule(tmp_path):
    """epochs=N stops after epoch N of the protocol's schedule with the protocol's settings in the checkpoint, so a later
    call with more epochs continues it (= a run to that epoch never stopped); a checkpoint past N is refused."""
    from fastdropout_nb.distillation_protocols import train_teacher
    g = torch.Generator().manual_seed(4)
    X, y = torch.rand(64, 1, 28, 28, generator=g), torch.randint(0, 10, (64,), generator=g)
    kw = dict(dropout='last', protocol='caffe', seed=1, progress=False)
    ck = tmp_path / 't.pt'
    one = train_teacher(X, y, epochs=1, checkpoint=ck, **kw)
    assert len(one.train_history_) == 1 and torch.load(ck, weights_only=False)['settings']['epochs'] == 60
    again = train_teacher(X, y, epochs=1, checkpoint=ck, **kw)                 # reached: loaded, not retrained
    assert all(torch.equal(a, b) for a, b in zip(one.state_dict().values(), again.state_dict().values()))
    two, ref = train_teacher(X, y, epochs=2, checkpoint=ck, **kw), train_teacher(X, y, epochs=2, **kw)
    assert [r['loss'] for r in two.train_history_] == [r['loss'] for r in ref.train_history_]
    assert all(torch.equal(a, b) for a, b in zip(two.state_dict().values(), ref.state_dict().values()))
    with pytest.raises(ValueError, match='past epoch 1'):
        train_teacher(X, y, epochs=1, checkpoint=ck, **kw)
    with pytest.raises(ValueError, match='epochs'):
        train_teacher(X, y, epochs=61, **kw)
