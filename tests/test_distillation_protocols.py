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
