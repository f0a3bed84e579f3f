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
