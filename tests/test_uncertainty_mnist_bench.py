"""Checks of benchmarks/uncertainty_mnist.py's pieces: the reliability bins give torchmetrics' ECE (and a wrong ECE is
caught), the metrics at their known values, USPS framed as MNIST digits are, the rotation, AUROC's direction."""
import importlib.util, math
from pathlib import Path

import pytest
import torch

_spec = importlib.util.spec_from_file_location('uncertainty_mnist', Path(__file__).parents[1] / 'benchmarks' / 'uncertainty_mnist.py')
um = importlib.util.module_from_spec(_spec); _spec.loader.exec_module(um)

torch.set_num_threads(1)


def _probs(n=2000, K=10, seed=0, saturated=200):
    "Drawn probability vectors of every confidence, `saturated` of them with confidence exactly 1, and labels."
    g = torch.Generator().manual_seed(seed)
    p = (torch.randn(n, K, generator=g) * torch.rand(n, 1, generator=g) * 8).softmax(-1)
    p[:saturated] = torch.nn.functional.one_hot(torch.randint(0, K, (saturated,), generator=g), K).float()
    return p, torch.randint(0, K, (n,), generator=g)


def test_reliability_bins_give_torchmetrics_ece():
    p, y = _probs()
    r = um.in_distribution(p, y, 15)
    rel = r['reliability']
    assert len(rel['count']) == 15 and sum(rel['count']) == len(y) and rel['at_one'] >= 200
    assert abs(rel['ece_check'] - r['ece']) < 1e-4 and r['ece'] > 0.05     # drawn far from calibrated
    conf = p.max(1).values
    assert rel['count'][0] == int((conf < 1 / 15).sum()) and rel['count'][-1] == int((conf >= 14 / 15).sum())


def test_a_wrong_ece_is_caught(monkeypatch):
    p, y = _probs()
    true_ece = um.multiclass_calibration_error
    monkeypatch.setattr(um, 'multiclass_calibration_error', lambda *a, **k: 1.1 * true_ece(*a, **k))   # 10 % off
    with pytest.raises(RuntimeError, match='reliability bins'): um.in_distribution(p, y, 15)


def test_metrics_at_known_values():
    K, y = 10, torch.arange(10).repeat(5)
    perfect = um.in_distribution(torch.nn.functional.one_hot(y, K).float(), y, 15)
    assert perfect['error'] == 0 and perfect['nll'] == 0 and perfect['brier'] == 0 and perfect['ece'] == 0
    uniform = um.in_distribution(torch.full((len(y), K), 1 / K), y, 15)
    assert math.isclose(uniform['nll'], math.log(K), rel_tol=1e-6) and math.isclose(uniform['brier'], 1 - 1 / K, rel_tol=1e-6)


def test_usps_framed_as_mnist():
    x = um.usps_as_mnist(torch.full((2, 16, 16), 255, dtype=torch.uint8)).reshape(2, 28, 28)
    assert x.shape == (2, 28, 28) and torch.allclose(x[:, 4:24, 4:24], torch.ones(2, 20, 20)) and x.count_nonzero() == 2 * 400
    dot = torch.zeros(1, 16, 16, dtype=torch.uint8); dot[0, 7:9, 7:9] = 255     # the centre stays the centre
    im = um.usps_as_mnist(dot).reshape(28, 28); idx = torch.arange(28.)
    assert abs(float((im.sum(1) * idx).sum() / im.sum()) - 13.5) < 1e-5 and abs(float((im.sum(0) * idx).sum() / im.sum()) - 13.5) < 1e-5


def test_rotation_is_a_quarter_turn():
    X = torch.zeros(1, 784); X[0, 5] = 1                                   # row 0, column 5
    R = um.rotated(X).reshape(28, 28)
    assert R[27 - 5, 0] == 1 and R.sum() == 1                             # counter-clockwise: top row to left column
    assert torch.equal(um.rotated(um.rotated(um.rotated(um.rotated(X)))), X)


def test_auroc_ranks_ood_as_positive_and_agreement_of_equals():
    lo, hi = torch.rand(50), torch.rand(60) + 1
    assert um.auroc(lo, hi) == 1.0 and um.auroc(hi, lo) == 0.0
    p, _ = _probs(200, saturated=0)
    u = dict(probs=p, entropy=torch.special.entr(p).sum(-1), mutual_info=torch.rand(200))
    a = um.agreement(u, u)
    assert a['rms_probs'] == 0 and a['spearman_entropy'] > 0.999 and a['spearman_mi'] > 0.999
