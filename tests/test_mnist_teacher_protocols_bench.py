"""benchmarks/mnist_teacher_protocols.py on a tiny stand-in for MNIST: the report after every epoch, and a run stopped by
--epochs and resumed with a larger --epochs gives the numbers of a run never stopped."""
import importlib.util, json
from pathlib import Path

import torch

_spec = importlib.util.spec_from_file_location('mnist_teacher_protocols',
                                               Path(__file__).parents[1] / 'benchmarks' / 'mnist_teacher_protocols.py')
mt = importlib.util.module_from_spec(_spec); _spec.loader.exec_module(mt)

torch.set_num_threads(1)


def _tiny_mnist(data_dir=None):
    g = torch.Generator().manual_seed(0)
    return (torch.rand(192, 784, generator=g), torch.randint(0, 10, (192,), generator=g),
            torch.rand(100, 784, generator=g), torch.randint(0, 10, (100,), generator=g))


def _run(tmp_path, monkeypatch, ckdir, out, epochs):
    monkeypatch.setattr(mt, 'mnist_tensors', _tiny_mnist)
    mt.main(['--network', 'all', '--protocol', 'caffe', '--seed', '1', '--epochs', str(epochs),
             '--checkpoint-dir', str(tmp_path / ckdir), '--out', str(tmp_path / out)])
    return json.loads((tmp_path / out).read_text())


def test_stopped_and_resumed_report_equals_uninterrupted(tmp_path, monkeypatch):
    first = _run(tmp_path, monkeypatch, 'a', 'a.json', 1)
    assert first['epochs_reached'] == 1 and len(first['test_error']) == 1 and first['epochs_planned'] == 60
    assert {'command', 'machine', 'torch', 'date', 'protocol_fields'} <= set(first)
    resumed = _run(tmp_path, monkeypatch, 'a', 'a.json', 3)
    fresh = _run(tmp_path, monkeypatch, 'b', 'b.json', 3)
    assert resumed['epochs_reached'] == fresh['epochs_reached'] == 3
    assert resumed['test_error'][0] == first['test_error'][0]
    assert resumed['test_error'] == fresh['test_error'] and resumed['loss'] == fresh['loss']
    assert resumed['best'] == min(fresh['test_error']) and resumed['final'] == fresh['test_error'][-1]
