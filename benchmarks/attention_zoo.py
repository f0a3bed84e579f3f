"""MC dropout and distillation on five attention / recurrent nets (chapter 05): does `mc_predict` sample them, and does
`distill` bring a student closer to the MC average than the standard pass is?

Five nets as people write them, on sequences of 6 tokens of width 16 (random inputs; weights as initialised times 2 for
the attention nets and 4 for the recurrent ones, so that dropout moves the mean outputs): a `nn.TransformerEncoderLayer`, a GPT-style block calling
`F.scaled_dot_product_attention(..., dropout_p=self.p if self.training else 0.0)`, hand-written attention with
`nn.Dropout` on the attention weights, a 2-layer `nn.LSTM(dropout=0.5)` and a 2-layer `nn.GRU(dropout=0.5)`.
For each: MC-1000 on 256 held-out sequences (the reference), a second MC-1000 with other masks (its own noise),
the standard pass, and a student (a copy of the net) distilled with `target='mc'` on 1024 other sequences.

    python benchmarks/attention_zoo.py --out reports/attention_zoo.json
"""
import argparse, copy, datetime, json, math, platform, sys, time
import torch
import torch.nn.functional as F
from torch import nn
from fastdropout_nb.distill import distill, mc_predict, standard_predict

D, T, K, P = 16, 6, 4, 0.3
SCALE = dict(encoder=2.0, gpt_sdpa=2.0, hand_attention=2.0, lstm=4.0, gru=4.0)   # the weights' init times this


class Encoder(nn.Module):
    "One nn.TransformerEncoderLayer (its own dropouts and attention dropout), a head on the token mean."
    def __init__(self):
        super().__init__()
        self.enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(D, 2, 2 * D, dropout=P, batch_first=True), 1,
                                         enable_nested_tensor=False)
        self.head = nn.Linear(D, K)
    def forward(self, x): return self.head(self.enc(x).mean(1))


class GPTBlock(nn.Module):
    "LayerNorm, qkv, causal SDPA with dropout in training, residual dropout, GELU MLP, head on the token mean."
    def __init__(self, heads=2):
        super().__init__()
        self.ln1, self.qkv, self.proj, self.drop1 = nn.LayerNorm(D), nn.Linear(D, 3 * D), nn.Linear(D, D), nn.Dropout(P)
        self.ln2, self.mlp, self.drop2 = nn.LayerNorm(D), nn.Sequential(nn.Linear(D, 2 * D), nn.GELU(), nn.Linear(2 * D, D)), nn.Dropout(P)
        self.head, self.heads, self.p = nn.Linear(D, K), heads, P
    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, dropout_p=self.p if self.training else 0.0, is_causal=True)
        x = x + self.drop1(self.proj(a.transpose(1, 2).reshape(b, t, d)))
        x = x + self.drop2(self.mlp(self.ln2(x)))
        return self.head(x.mean(1))


class HandAttention(nn.Module):
    "softmax(q kᵀ / sqrt(d)) with nn.Dropout on the weights, then the values; a head on the first token."
    def __init__(self):
        super().__init__()
        self.q, self.k, self.v, self.drop, self.head = nn.Linear(D, D), nn.Linear(D, D), nn.Linear(D, D), nn.Dropout(P), nn.Linear(D, K)
    def forward(self, x):
        w = self.drop((self.q(x) @ self.k(x).transpose(-2, -1) / math.sqrt(D)).softmax(-1))
        return self.head((w @ self.v(x))[:, 0])


class Recurrent(nn.Module):
    "A 2-layer LSTM or GRU with dropout 0.5 between its layers, a head on the last step."
    def __init__(self, cell):
        super().__init__()
        self.rnn, self.head = cell(D, D, num_layers=2, dropout=0.5, batch_first=True), nn.Linear(D, K)
    def forward(self, x): return self.head(self.rnn(x)[0][:, -1])


NETS = dict(encoder=Encoder, gpt_sdpa=GPTBlock, hand_attention=HandAttention,
            lstm=lambda: Recurrent(nn.LSTM), gru=lambda: Recurrent(nn.GRU))


def kl(p, q): return float((p * (p.clamp_min(1e-12).log() - q.clamp_min(1e-12).log())).sum(-1).mean())


def run(name, masks, epochs):
    torch.manual_seed(0)
    net = NETS[name]().eval()
    with torch.no_grad():
        for prm in net.parameters():
            if prm.dim() > 1: prm.mul_(SCALE[name])
    g = torch.Generator().manual_seed(1)
    unlabelled, x = torch.randn(1024, T, D, generator=g), torch.randn(256, T, D, generator=g)
    t0 = time.perf_counter()
    mc, mc2 = mc_predict(net, x, masks, seed=1), mc_predict(net, x, masks, seed=2)
    std = standard_predict(net, x)
    student = distill(net, copy.deepcopy(net), unlabelled, epochs=epochs, lr=1e-3, seed=0, progress=False)
    with torch.no_grad(): dist = student.eval()(x).softmax(-1)
    rms = lambda p: float(((p - mc) ** 2).sum(-1).mean().sqrt())
    return dict(kl_mc_standard=kl(mc, std), kl_mc_distilled=kl(mc, dist), kl_mc_mc=kl(mc, mc2),
                rms_standard=rms(std), rms_distilled=rms(dist), rms_mc_mc=rms(mc2), seconds=time.perf_counter() - t0)


def header(script, argv):
    "A report's command (as run), machine and date (UTC), for this script and `benchmarks/attention_moments.py`."
    cmd = f'python benchmarks/{script}' + ''.join(f' {s}' for s in (argv if argv is not None else sys.argv[1:]))
    return dict(command=cmd, machine=f"{platform.machine()}, torch {torch.__version__}, 1 thread",
                date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--out', default='reports/attention_zoo.json')
    ap.add_argument('--masks', type=int, default=1000); ap.add_argument('--epochs', type=int, default=10)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    rows = {name: run(name, a.masks, a.epochs) for name in NETS}
    report = dict(**header('attention_zoo.py', argv),
                  settings=dict(width=D, tokens=T, classes=K, p=P, masks=a.masks, epochs=a.epochs, unlabelled=1024, test=256,
                                weights='PyTorch init times SCALE', scale=SCALE), nets=rows)
    with open(a.out, 'w') as f: json.dump(report, f, indent=1)
    print(report['command']); print(report['machine'])
    print(f"{'net':15s} {'KL(MC‖standard)':>16s} {'KL(MC‖distilled)':>17s} {'KL(MC‖MC)':>10s} {'RMS std':>8s} {'RMS dist':>9s}")
    for name, r in rows.items():
        print(f"{name:15s} {r['kl_mc_standard']:16.4f} {r['kl_mc_distilled']:17.4f} {r['kl_mc_mc']:10.4f} "
              f"{r['rms_standard']:8.4f} {r['rms_distilled']:9.4f}")


if __name__ == '__main__':
    main()
