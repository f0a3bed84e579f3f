"MC dropout, the standard pass and distillation for nets with attention and recurrent dropout (chapter 05)."
import copy
import pytest
import torch
from torch import nn
from fastdropout_nb import distill as D
from fastdropout_nb.distill import distill, each_seed, mc_predict, standard_predict, sampling_modules, exact_predict

torch.set_num_threads(1)


class _Attn(nn.Module):
    "Self-attention with attention-weight dropout, batch norm and a linear head."
    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2, dropout=0.2, batch_first=True)
        self.bn, self.head = nn.BatchNorm1d(8), nn.Linear(8, 3)
    def forward(self, x): return self.head(self.bn(self.attn(x, x, x, need_weights=False)[0].mean(1)))


class _Recurrent(nn.Module):
    "A 2-layer LSTM/GRU with dropout between its layers, batch norm and a linear head on the last step."
    def __init__(self, cell):
        super().__init__()
        self.rnn = cell(8, 6, num_layers=2, dropout=0.3, batch_first=True)
        self.bn, self.head = nn.BatchNorm1d(6), nn.Linear(6, 3)
    def forward(self, x): return self.head(self.bn(self.rnn(x)[0][:, -1]))


def _encoder():
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.1, batch_first=True)
    return nn.Sequential(nn.TransformerEncoder(layer, 1, enable_nested_tensor=False), nn.Flatten(), nn.Linear(40, 3))


def _sampling(net):
    "The modules that must sample, chosen by hand from each net's structure (not by the package's list)."
    out = []
    for m in net.modules():
        if isinstance(m, nn.MultiheadAttention) or isinstance(m, (nn.LSTM, nn.GRU)) or isinstance(m, nn.Dropout): out.append(m)
        if isinstance(m, nn.TransformerEncoderLayer): out.append(m)      # its fused inference path has no dropout
    return out


NETS = {'attention': _Attn, 'lstm': lambda: _Recurrent(nn.LSTM), 'gru': lambda: _Recurrent(nn.GRU), 'encoder': _encoder}


def _setup(name):
    torch.manual_seed(0)
    net = NETS[name]().eval()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm1d):
            with torch.no_grad(): m.running_mean.uniform_(-0.5, 0.5); m.running_var.uniform_(0.5, 2.0)
    return net, torch.randn(6, 5, 8, generator=torch.Generator().manual_seed(1))


def _by_hand(net, x, n, seed):
    "The MC average a user writes: everything in eval mode, then exactly the sampling modules switched on."
    net.eval()
    for m in _sampling(net): m.training = True
    try:
        with torch.no_grad(): return sum(net(x).softmax(1) for _ in each_seed(seed, n)) / n
    finally: net.eval()


@pytest.mark.parametrize('name', list(NETS))
def test_mc_predict_equals_the_hand_written_average(name):
    "mc_predict = the hand-written average; not the standard pass; two samples differ; batch norm and flags unchanged."
    net, x = _setup(name)
    state = copy.deepcopy(net.state_dict())
    mc, std = mc_predict(net, x, 20, seed=3), standard_predict(net, x)
    assert all(not m.training for m in net.modules())
    torch.testing.assert_close(mc, _by_hand(net, x, 20, 3), rtol=0, atol=1e-6)
    assert float((mc - std).abs().max()) > 1e-4
    one, two = mc_predict(net, x, 1, seed=5), mc_predict(net, x, 1, seed=6)
    assert float((one - two).abs().max()) > 1e-4                      # the fused path would give exactly 0.0
    with torch.no_grad(): torch.testing.assert_close(std, net(x).softmax(1), rtol=0, atol=1e-6)   # standard = eval
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in state.items())


def test_attention_left_in_eval_mode_is_caught(monkeypatch):
    "Planted bug: MultiheadAttention left in eval mode (alone, or with nothing else sampling) fails the checks."
    net, x = _setup('encoder')
    monkeypatch.setattr(D, '_samples', lambda m, f=D._samples: f(m) and not isinstance(m, nn.MultiheadAttention))
    with pytest.raises(AssertionError):
        torch.testing.assert_close(mc_predict(net, x, 20, seed=3), _by_hand(net, x, 20, 3), rtol=0, atol=1e-6)
    net, x = _setup('attention')
    with pytest.raises(ValueError, match='no dropout'): mc_predict(net, x, 5, seed=3)   # nothing left that samples


def test_the_fused_path_is_refused_not_averaged(monkeypatch):
    "If the Transformer layer stays in eval mode its fused path samples nothing: a ValueError, never a standard pass."
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.1, batch_first=True)
    net, x = nn.Sequential(layer, nn.Flatten(), nn.Linear(40, 3)).eval(), torch.randn(6, 5, 8)
    monkeypatch.setattr(D, '_samples', lambda m: isinstance(m, (nn.Dropout, nn.MultiheadAttention)))
    with pytest.raises(ValueError, match='drew no dropout gates'): mc_predict(net, x, 5, seed=0)
    with pytest.raises(ValueError, match='drew no dropout gates'):
        distill(net, copy.deepcopy(net), x, epochs=1, progress=False)


def test_enumeration_refuses_dropout_inside_attention_and_recurrent_layers():
    for name in NETS:
        net, x = _setup(name)
        with pytest.raises(ValueError, match='cannot be enumerated'): exact_predict(net, x)


def test_single_layer_rnn_dropout_is_no_gate():
    "PyTorch drops only between recurrent layers: a 1-layer LSTM(dropout>0) samples nothing, so it is no dropout net."
    with pytest.warns(UserWarning): rnn = nn.LSTM(4, 3, num_layers=1, dropout=0.3)
    assert sampling_modules(rnn) == []


def test_distill_on_an_encoder_beats_the_standard_pass():
    "KL(MC ‖ student) after a few epochs of distillation is below KL(MC ‖ standard pass); the teacher is untouched."
    teacher, _ = _setup('encoder')
    x = torch.randn(256, 5, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        for m in teacher.modules():
            if isinstance(m, nn.Linear): m.weight.mul_(3.0)
    for m in teacher.modules():
        if isinstance(m, nn.Dropout): m.p = 0.4
    for m in teacher.modules():
        if isinstance(m, nn.MultiheadAttention): m.dropout = 0.4
    ideal = mc_predict(teacher, x, 200, seed=0)
    kl = lambda q: float((torch.special.xlogy(ideal, ideal) - ideal * q.clamp_min(1e-12).log()).sum(1).mean())
    kl_std = kl(standard_predict(teacher, x))
    student = distill(teacher, copy.deepcopy(teacher), x, epochs=8, lr=3e-3, batch_size=32, seed=0, progress=False)
    assert not any(m.training for m in student.modules())
    kl_student = kl(standard_predict(student, x))
    assert kl_student < kl_std, (kl_student, kl_std)


# ---------------------------------------------------------------- F.scaled_dot_product_attention with dropout_p
import torch.nn.functional as F


class _GPT(nn.Module):
    "LayerNorm → qkv → SDPA (dropout_p = p in training) → proj → residual dropout → LayerNorm/GELU MLP → head on the token mean."
    def __init__(self, d=8, heads=2, p=0.3, masked=False):
        super().__init__()
        self.ln1, self.qkv, self.proj, self.drop1 = nn.LayerNorm(d), nn.Linear(d, 3 * d), nn.Linear(d, d), nn.Dropout(p)
        self.ln2, self.mlp, self.drop2 = nn.LayerNorm(d), nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d)), nn.Dropout(p)
        self.head, self.heads, self.p, self.masked = nn.Linear(d, 3), heads, p, masked
        self.register_buffer('mask', torch.rand(5, 5, generator=torch.Generator().manual_seed(4)) > 0.3)
        self.mask.fill_diagonal_(True)
    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if self.masked: a = F.scaled_dot_product_attention(q, k, v, self.mask, self.p if self.training else 0.0, scale=0.7)
        else: a = F.scaled_dot_product_attention(q, k, v, dropout_p=self.p if self.training else 0.0, is_causal=True)
        x = x + self.drop1(self.proj(a.transpose(1, 2).reshape(b, t, d)))
        x = x + self.drop2(self.mlp(self.ln2(x)))
        return self.head(x.mean(1))


def _gpt(masked=False):
    torch.manual_seed(0)
    net = _GPT(masked=masked).double().eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Linear): m.weight.mul_(2.0)          # larger weights: the attention gates matter more
    return net, torch.randn(6, 5, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))


def _train_samples(net, x, n, seed, p_attn):
    "Hand-written MC: the block in train mode (LayerNorm, GELU, linear maps are the same in both modes), attention at p_attn."
    p, net.p = net.p, p_attn
    net.train()
    try:
        with torch.no_grad(): return torch.stack([net(x).softmax(1) for _ in each_seed(seed, n)])
    finally: net.eval(); net.p = p


@pytest.mark.parametrize('masked', [False, True])
def test_sdpa_attention_dropout_is_sampled(masked):
    "mc_predict = the train-mode average under the same seed; differs from the attention-at-0 average beyond MC noise."
    net, x = _gpt(masked)
    n = 2000
    mc, std = mc_predict(net, x, n, seed=3), standard_predict(net, x)
    sampled = _train_samples(net, x, n, 3, net.p)
    torch.testing.assert_close(mc, sampled.mean(0), rtol=0, atol=1e-6)
    old = _train_samples(net, x, n, 3, 0.0)                             # the attention dropout left at 0
    z = ((mc - old.mean(0)).abs() / ((sampled.var(0) + old.var(0)) / n).sqrt()).max()
    assert float(z) > 5, float(z)
    with torch.no_grad(): torch.testing.assert_close(std, net(x).softmax(1), rtol=0, atol=1e-12)   # standard = eval
    assert any(isinstance(m, D.AttentionDropout) and m.p == net.p for m in sampling_modules(D.switchable_dropout(net)))
    assert all(not m.training for m in net.modules())


def test_sdpa_left_unrewritten_is_caught(monkeypatch):
    "Planted bug: the SDPA node left as traced in eval mode (dropout_p=0): MC no longer equals the hand-written average."
    net, x = _gpt()
    monkeypatch.setattr(D, '_is_sdpa', lambda node: False)
    with pytest.raises(AssertionError):
        torch.testing.assert_close(mc_predict(net, x, 200, seed=3), _train_samples(net, x, 200, 3, net.p).mean(0), rtol=0, atol=1e-6)


def test_distill_runs_on_a_gpt_block():
    "distill with sampled targets trains the student (its parameters move), teacher untouched, outputs finite."
    teacher, x = _gpt()
    state = copy.deepcopy(teacher.state_dict())
    student = distill(teacher, copy.deepcopy(teacher), x.repeat(4, 1, 1), epochs=2, lr=1e-3, batch_size=8, seed=0, progress=False)
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in state.items())
    assert any(not torch.equal(v, student.state_dict()[k]) for k, v in state.items())
    assert bool(torch.isfinite(standard_predict(student, x)).all())


class _RateNode(_GPT):
    "dropout_p read from a buffer: a graph node, not a constant."
    def __init__(self): super().__init__(); self.register_buffer('rate', torch.tensor(0.3))
    def forward(self, x):
        q = self.qkv(x).view(x.shape[0], x.shape[1], 3, 2, 4).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q[0], q[1], q[2], dropout_p=self.rate)
        return self.head(a.transpose(1, 2).reshape(x.shape[0], x.shape[1], 8).mean(1))


class _TrainOnlyAttention(_GPT):
    "A second attention call only under `if self.training:`: the eval-mode trace misses it."
    def forward(self, x):
        q = self.qkv(x).view(x.shape[0], x.shape[1], 3, 2, 4).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q[0], q[1], q[2])
        if self.training: a = F.scaled_dot_product_attention(a, q[1], q[2], dropout_p=0.3)
        return self.head(a.transpose(1, 2).reshape(x.shape[0], x.shape[1], 8).mean(1))


@pytest.mark.parametrize('model, match', [(_RateNode, 'dropout_p must be a constant'),
                                          (_TrainOnlyAttention, '2 scaled_dot_product_attention calls in training mode but 1')])
def test_sdpa_refusals(model, match):
    with pytest.raises(ValueError, match=match): mc_predict(model().eval(), torch.randn(2, 5, 8), 3, seed=0)


def test_sdpa_dropout_cannot_be_enumerated():
    net, x = _gpt()
    with pytest.raises(ValueError, match='cannot be enumerated'): exact_predict(net, x[:1])
