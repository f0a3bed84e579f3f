"""A HuggingFace `BertForSequenceClassification`, as most people meet a transformer (chapter 05): built from a small
config (random init, no download), fine-tuned briefly on RT sentences (RTs, from the shared data folder), wrapped to
return logits from integer token ids. `mc_predict` samples its hidden, attention-probability and classifier dropout
(eager and SDPA attention), `distill` brings a student closer to MC than the standard pass, and `moment_propagation`
refuses it naming the module its tracing stops in. Skipped without `transformers` or without the shared data."""
import copy
from pathlib import Path
import pytest
import torch
from torch import nn

transformers = pytest.importorskip('transformers')
from fastdropout_nb import data as FD
from fastdropout_nb import distill as D
from fastdropout_nb.distill import distill, mc_predict, standard_predict, sampling_modules
from fastdropout_nb.propagation import moment_propagation

torch.set_num_threads(1)
SHARED = Path(__file__).resolve().parents[1].parent / 'shared' / 'data'
N_TRAIN, N_TEST, MAX_LEN, P = 1000, 100, 24, 0.3


class BertLogits(nn.Module):
    "A BertForSequenceClassification taking a batch of token ids (PAD_ID pads) and returning its logits."
    def __init__(self, bert): super().__init__(); self.bert = bert
    def forward(self, ids): return self.bert(input_ids=ids, attention_mask=(ids != FD.PAD_ID).long()).logits


def bert(vocab_size, attn='eager', hidden=P, attention=P, classifier=P, layers=2, width=32):
    cfg = transformers.BertConfig(vocab_size=vocab_size, hidden_size=width, num_hidden_layers=layers, num_attention_heads=2,
                                  intermediate_size=2 * width, max_position_embeddings=MAX_LEN, hidden_dropout_prob=hidden,
                                  attention_probs_dropout_prob=attention, classifier_dropout=classifier, attn_implementation=attn)
    return BertLogits(transformers.BertForSequenceClassification(cfg))


def set_rates(model, hidden=None, attention=None, classifier=None):
    "Set the dropout rates of one kind in place: hidden (embeddings and every sublayer), attention probabilities, classifier."
    for name, m in model.named_modules():
        if isinstance(m, transformers.models.bert.modeling_bert.BertSelfAttention):
            if attention is not None: m.dropout.p = attention
        elif isinstance(m, nn.Dropout) and not name.endswith('attention.self.dropout'):
            p = classifier if name == 'bert.dropout' else hidden
            if p is not None: m.p = p
    return model


@pytest.fixture(scope='module')
def rt():
    "A BERT (dropout 0.3 everywhere) fine-tuned for 3 epochs on 1000 RT sentences; 100 held-out sentences, and the training ids."
    try: ds = FD.load_rts(SHARED, download=False)
    except (FileNotFoundError, ValueError) as e: pytest.skip(f'RT sentences not available: {e}')
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(len(ds), generator=g)
    train, test = ds.subset(idx[:N_TRAIN].numpy()), ds.subset(idx[N_TRAIN:N_TRAIN + N_TEST].numpy())
    vocab = FD.build_vocab(train[0], min_count=2)
    x_train = torch.from_numpy(FD.encode_tokens(train[0], vocab, MAX_LEN))
    x_test = torch.from_numpy(FD.encode_tokens(test[0], vocab, MAX_LEN))
    torch.manual_seed(0)
    model = bert(len(vocab) + 2)
    D.train_classifier(model, x_train, torch.from_numpy(train[1]), epochs=3, lr=2e-3, batch_size=32, seed=0, progress=False)
    acc = lambda x, y: float((standard_predict(model, x).argmax(1).numpy() == y).mean())
    return dict(model=model, x=x_test, y=test[1], x_train=x_train, vocab=len(vocab) + 2, acc=acc(x_test, test[1]),
                train_acc=acc(x_train, train[1]))


def kl(p, q): return float((p * (p.clamp_min(1e-12).log() - q.clamp_min(1e-12).log())).sum(1).mean())


def test_fine_tuned(rt):
    "Fine-tuned: well above chance on its training sentences (on 100 held-out ones it is recorded, not asserted)."
    assert rt['train_acc'] > 0.8, rt['train_acc']


def test_token_ids_are_accepted_and_bad_input_refused(rt):
    m, x = rt['model'], rt['x']
    assert x.dtype == torch.int64 and standard_predict(m, x[:4]).shape == (4, 2)
    with pytest.raises(ValueError, match='x'): standard_predict(m, x[:4].bool())
    with pytest.raises(ValueError, match='x'): mc_predict(m, x[0], 2)               # no batch axis
    with pytest.raises(ValueError, match='x'): mc_predict(m, torch.full((2, 5), 10 ** 6), 2)   # ids beyond the vocabulary


def test_mc_is_the_training_mode_average(rt):
    "BERT's training flag changes only its dropouts: MC is the average of passes in training mode, same seed."
    m, x = rt['model'], rt['x'][:16]
    mc = mc_predict(m, x, 20, seed=3, batched=False)
    ref, flags = 0, [(q, q.training) for q in m.modules()]
    with torch.no_grad():
        m.train()
        for s in D.sample_seeds(3, 20):                        # one seed per sampled net, as mc_predict draws them
            with D.seeded(int(s)): ref = ref + m(x).softmax(1)
    for q, f in flags: q.training = f
    assert torch.allclose(mc, ref / 20, atol=1e-6)


def test_mc_differs_from_the_standard_pass_beyond_mc_noise(rt):
    m, x = rt['model'], rt['x']
    mc, mc2, st = mc_predict(m, x, 100, seed=0), mc_predict(m, x, 100, seed=1), standard_predict(m, x)
    assert kl(mc, st) > 5 * kl(mc, mc2), (kl(mc, st), kl(mc, mc2))


@pytest.mark.parametrize('attn', ['eager', 'sdpa'])
@pytest.mark.parametrize('kind', ['hidden', 'attention', 'classifier'])
def test_every_dropout_kind_is_sampled(rt, kind, attn):
    "Only one kind of dropout left on: two sampled passes differ, and the pass in training mode draws the same numbers."
    net = bert(rt['vocab'], attn)
    net.load_state_dict(rt['model'].state_dict())
    set_rates(net, **{k: (P if k == kind else 0.0) for k in ('hidden', 'attention', 'classifier')})
    x = rt['x'][:32]
    a, b = mc_predict(net, x, 1, output='raw', seed=0), mc_predict(net, x, 1, output='raw', seed=1)
    assert (a - b).abs().max() > 1e-4
    assert torch.allclose(standard_predict(net, x, output='raw'), standard_predict(rt['model'], x, output='raw'), atol=1e-5)
    set_rates(net, **{kind: 0.0})
    with pytest.raises(ValueError, match='no dropout'): mc_predict(net, x, 2)


def test_attention_dropout_left_unswitched_is_refused(rt, monkeypatch):
    "The planted bug: BertSelfAttention's flag (which sets its dropout rate) not switched. MC must refuse, not skip it."
    monkeypatch.setattr(D, '_rate_switch', lambda cls: None)
    with pytest.raises(ValueError, match='BertSelfAttention'): mc_predict(rt['model'], rt['x'][:8], 2)


def test_distill_brings_the_student_closer_to_mc_than_the_standard_pass(rt):
    m, x = rt['model'], rt['x']
    mc, st = mc_predict(m, x, 200, seed=0), standard_predict(m, x)
    student = distill(m, copy.deepcopy(m), rt['x_train'], epochs=2, lr=1e-4, batch_size=32, seed=0, progress=False)
    dist = standard_predict(student, x)
    assert kl(mc, dist) < kl(mc, st), (kl(mc, dist), kl(mc, st))
    for name, q in student.named_modules():                   # the student comes back in eval mode
        assert not q.training, name


def test_moment_propagation_refuses_naming_the_module(rt):
    with pytest.raises(ValueError, match=r"module 'bert[.\w]*'"): moment_propagation(rt['model'])(rt['x'][:4])


def test_enumeration_refuses_an_untraceable_model(rt):
    with pytest.raises(ValueError, match='use mc_predict'): D.exact_predict(rt['model'], rt['x'][:2])


class _HiddenFunctional(nn.Module):
    "torch.fx cannot trace it (a branch on the data), and it drops with F.dropout under its own flag: not a rate switch."
    def __init__(self): super().__init__(); self.fc, self.drop = nn.Linear(3, 2), nn.Dropout(0.2)
    def forward(self, x):
        x = torch.nn.functional.dropout(x, 0.5, self.training) if x.sum() > -1e9 else x
        return self.fc(self.drop(x))


def test_an_untraceable_model_with_an_unswitched_dropout_is_refused():
    "Run as it is, its nn.Dropout samples but its F.dropout would not: the training-pass check refuses it, naming it."
    with pytest.raises(ValueError, match='_HiddenFunctional'): mc_predict(_HiddenFunctional(), torch.randn(4, 3), 3)
    standard_predict(_HiddenFunctional(), torch.randn(4, 3))         # one eval pass: nothing to sample, accepted
