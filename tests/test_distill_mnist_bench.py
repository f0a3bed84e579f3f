"""benchmarks/distill_mnist.py --protocol on a tiny stand-in for MNIST: the teacher comes from the teacher-protocol
checkpoint in --checkpoint-dir (not retrained), and the report records protocol, teacher epochs and the command."""
import importlib.util, json
from pathlib import Path

import numpy as np
import pytest
import torch

import fastdropout_nb.distillation_protocols as DP

_spec = importlib.util.spec_from_file_location('distill_mnist', Path(__file__).parents[1] / 'benchmarks' / 'distill_mnist.py')
dm = importlib.util.module_from_spec(_spec); _spec.loader.exec_module(dm)

torch.set_num_threads(1)


def _tiny(data_dir=None):
    from types import SimpleNamespace
    r = np.random.default_rng(1)
    img = lambda n: (r.integers(0, 256, (n, 28, 28), dtype=np.uint8), r.integers(0, 10, n))
    return SimpleNamespace(train=img(64), test=img(32))


def test_protocol_row_reuses_the_teacher_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setattr(DP, 'load_mnist', _tiny)
    ds = _tiny()
    X = torch.tensor(ds.train[0], dtype=torch.float32).div_(255.0).unsqueeze(1)
    DP.train_teacher(X, torch.as_tensor(ds.train[1]), 'last', 'caffe', seed=0, epochs=2,   # as the teacher-protocol script does
                     checkpoint=tmp_path / 'teacher-last-caffe-seed0.pt')
    monkeypatch.setattr(DP, 'train_classifier', lambda *a, **k: pytest.fail('the teacher was retrained'))
    out = tmp_path / 'rows' / 'lenet_caffe_seed0.json'
    dm.main(['--network', 'last', '--protocol', 'caffe', '--teacher-epochs', '2', '--mc-repeats', '1', '--data-dir', '/x',
             '--checkpoint-dir', str(tmp_path), '--out', str(out)])
    r = json.loads(out.read_text())
    assert r['protocol'] == 'caffe' and r['teacher_epochs'] == 2 and r['network'] == 'LeNet' and not r['quick']
    assert r['command'].startswith('python benchmarks/distill_mnist.py --network last --protocol caffe') and 'DATA' in r['command']
    assert (tmp_path / 'mnist-last-full-seed0-caffe2-student.pt').exists()
    with pytest.raises(ValueError, match='past epoch 1'):         # the teacher's checkpoint is at epoch 2
        dm.main(['--network', 'last', '--protocol', 'caffe', '--teacher-epochs', '1', '--checkpoint-dir', str(tmp_path),
                 '--out', str(out)])
