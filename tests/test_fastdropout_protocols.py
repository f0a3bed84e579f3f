"""The fast dropout protocols (`fastdropout_nb.fastdropout_protocols`): the paper's MNIST kinds keep the rule of
the committed runs, and a one-epoch run records it."""
import torch

from fastdropout_nb.nn import FastDropoutLinear
from fastdropout_nb.fastdropout_protocols import make_mnist_model, mnist_experiment

torch.set_num_threads(1)


def lins(net): return [l for l in net.layers if isinstance(l, FastDropoutLinear)]


def test_mnist_var_kind_keeps_the_rule_of_its_runs():
    "'fast_dropout_var' trains by the rule of the committed runs ('mean') unless told otherwise, and records it."
    net = make_mnist_model('fast_dropout_var')
    assert {l.var_scale_rule for l in lins(net)} == {'mean'} and {l.var_scale for l in lins(net)} == {1.5}
    assert {l.var_scale_rule for l in lins(make_mnist_model('fast_dropout_var', var_scale_rule='noise'))} == {'noise'}
    g = torch.Generator().manual_seed(0)
    data = (torch.rand(60, 784, generator=g), torch.randint(0, 10, (60,), generator=g), torch.rand(20, 784, generator=g),
            torch.randint(0, 10, (20,), generator=g))
    r = mnist_experiment('fast_dropout_var', epochs=1, data=data, device='cpu', curve=False, batch_size=30)
    assert r['settings']['var_scale_rule'] == 'mean' and r['settings']['var_scale'] == 1.5
