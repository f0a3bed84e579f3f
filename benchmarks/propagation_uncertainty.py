"""Does moment propagation give MC dropout's uncertainty? Thirteen dropout nets on 8×8 digits (chapter 04b's zoo of six
plus seven more), each trained briefly; on the 600 test digits the logits' covariance, the class probabilities, the
mutual information and the out-of-distribution AUROC of the diagonal twin ('moments') and of the linearised
covariance ('moments_cov') are scored against Monte Carlo dropout; where a bar is missed, the twin's moments at every
node against MC say which layer's approximation goes wrong. Writes a JSON report (+ the table as .txt) and prints the table.

    python benchmarks/propagation_uncertainty.py --out reports/propagation_uncertainty.json [--masks 3000] [--epochs 60]

About 11 CPU minutes on one thread. To measure a commit while the working tree holds other changes, export it and put it
first on the path: `git archive HEAD fastdropout_nb | tar -x -C DIR && git rev-parse HEAD > DIR/COMMIT`, then
`PYTHONPATH=DIR python benchmarks/propagation_uncertainty.py ...` (the report records the package's path and commit).
"""
import argparse, datetime, json, math, os, platform, subprocess, sys, time
from pathlib import Path
import torch
import torch.nn.functional as F
from torch import nn, fx
from scipy.stats import spearmanr
from torchmetrics.functional.classification import binary_auroc
from fastdropout_nb.distill import train_classifier
from fastdropout_nb.distillation_protocols import digits_split
from fastdropout_nb.propagation import zoo_models, moment_propagation, mc_average
from fastdropout_nb.uncertainty import covariance_propagation, covariance_factor, softmax_stats, predict_uncertainty, mc_outputs, entropy

BARS = dict(cov_rel_frobenius=0.25, ood_auroc_gap=0.03, mi_spearman=0.9)

# ---------------------------------------------------------------- seven more nets, written as people write them
def smooth_mlp(act):
    "A constructor of 64 → 128 → 128 → 10 (nn.Sequential) with activation `act`, dropout 0.2 on the input and 0.5 after each hidden layer."
    make = lambda: nn.Sequential(nn.Dropout(0.2), nn.Linear(64, 128), act(), nn.Dropout(0.5),
                                 nn.Linear(128, 128), act(), nn.Dropout(0.5), nn.Linear(128, 10))
    make.__doc__ = f"nn.Sequential 64 → 128 → 128 → 10 with nn.{act.__name__}, dropout 0.2 on the input and 0.5 after each hidden layer."
    return make

class ResidualConvGAP(nn.Module):
    "conv → ReLU → [dropout → conv → + skip] → ReLU → global average pooling → Linear."
    def __init__(self, width=16):
        super().__init__()
        self.stem, self.drop = nn.Conv2d(1, width, 3, padding=1), nn.Dropout(0.3)
        self.conv, self.pool, self.fc = nn.Conv2d(width, width, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Linear(width, 10)
    def forward(self, x):
        h = F.relu(self.stem(x.view(-1, 1, 8, 8)))
        h = F.relu(h + self.conv(self.drop(h)))
        return self.fc(torch.flatten(self.pool(h), 1))

class ChannelDropConv(nn.Module):
    "conv → ReLU, then channel dropout → conv → ReLU → max pooling → flatten → Linear."
    def __init__(self):
        super().__init__()
        self.conv1, self.drop, self.conv2 = nn.Conv2d(1, 16, 3, padding=1), nn.Dropout2d(0.3), nn.Conv2d(16, 32, 3, padding=1)
        self.pool, self.fc = nn.MaxPool2d(2), nn.Linear(32 * 4 * 4, 10)
    def forward(self, x):
        h = self.drop(F.relu(self.conv1(x.view(-1, 1, 8, 8))))
        return self.fc(torch.flatten(self.pool(F.relu(self.conv2(h))), 1))

class TwoHeads(nn.Module):
    "Two linear heads of one dropped vector, summed: d = dropout(relu(fc(x))); logits = f1(d) + f2(d)."
    def __init__(self):
        super().__init__()
        self.fc, self.drop, self.f1, self.f2 = nn.Linear(64, 128), nn.Dropout(0.5), nn.Linear(128, 10), nn.Linear(128, 10)
    def forward(self, x):
        d = self.drop(F.relu(self.fc(x)))
        return self.f1(d) + self.f2(d)

class CentredMLP(nn.Module):
    "A hidden layer centred over its units after dropout: h - h.mean(1, keepdim=True)."
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(64, 128), nn.Linear(128, 10)
    def forward(self, x):
        h = F.dropout(F.relu(self.fc1(x)), 0.5, self.training)
        h = h - h.mean(1, keepdim=True)
        return self.fc2(h)

def all_models():
    "The zoo's six nets and seven more: name → constructor."
    return dict(**zoo_models(), elu_mlp=smooth_mlp(nn.ELU), mish_mlp=smooth_mlp(nn.Mish), softplus_mlp=smooth_mlp(nn.Softplus),
                residual_conv_gap=ResidualConvGAP, channel_drop_conv=ChannelDropConv, two_heads=TwoHeads, centred_mlp=CentredMLP)

# ---------------------------------------------------------------- Monte Carlo reference and the deterministic methods
def mc_stats(z, chunk=50):
    """From MC logits z (n, N, K), centred per mask: mean logits, their covariance (N, K, K), each example's E‖Σ̂ − Σ‖²_F and
    the same for the diagonal (the sum of the entries' sampling variances, from the fourth moments), probs (with the summed
    squared standard error of their entries), entropy and mutual information."""
    z = z.double(); z = z - z.mean(-1, keepdim=True); n = z.shape[0]
    mean = z.mean(0); d = z - mean
    cov = torch.einsum('sni,snj->nij', d, d) / (n - 1)
    noise2, noise2_diag = torch.empty(z.shape[1], dtype=z.dtype), torch.empty(z.shape[1], dtype=z.dtype)
    for i in range(0, z.shape[1], chunk):
        v = (d[:, i:i + chunk, :, None] * d[:, i:i + chunk, None, :]).var(0) / n      # (chunk, K, K)
        noise2[i:i + chunk], noise2_diag[i:i + chunk] = v.sum((-2, -1)), v.diagonal(dim1=-2, dim2=-1).sum(-1)
    p = z.softmax(-1); probs = p.mean(0)
    ent = entropy(probs)
    return dict(mean=mean, cov=cov, noise2=noise2, noise2_diag=noise2_diag, probs=probs, probs_se2=p.var(0).sum(-1) / n,
                entropy=ent, mutual_info=ent - entropy(p).mean(0))

def centring(K, like):
    "C = I − 11ᵀ/K: C Σ C is the covariance of the logits centred over the classes (a softmax ignores a common shift)."
    return torch.eye(K, dtype=like.dtype) - 1.0 / K

METHODS = ('standard', 'moments', 'moments_cov')
PROPAGATED = ('moments', 'moments_cov')

def _try(fn):
    "fn(), or dict(error=...) when it raises a ValueError (a refusal, or a non-finite covariance)."
    try: return fn()
    except ValueError as e: return dict(error=f'{type(e).__name__}: {e}'.split('. Supported:')[0])

def predictions(model, x):
    "`predict_uncertainty` of standard / moments / moments_cov, each with the centred logits' covariance (float64)."
    out = {m: _try(lambda m=m: predict_uncertainty(model, x, m)) for m in METHODS}
    with torch.no_grad(): out['standard']['logits'] = model.eval()(x); out['moments']['mean'] = moment_propagation(model, 'mean')(x)
    C = centring(out['standard']['probs'].shape[-1], torch.zeros((), dtype=torch.float64))
    for m, key in (('moments', 'logit_var'), ('moments_cov', 'logit_cov')):
        if 'error' not in out[m]:
            full = out[m][key] if key == 'logit_cov' else torch.diag_embed(out[m][key])
            out[m]['cov'] = C @ full.double() @ C
    return out

def gaussian_references(mc, n_draws=3000, seed=5):
    """Where the Gaussian assumption stands: the logits taken as N(MC mean, MC covariance) through `softmax_stats`' unscented
    points ('gauss_ut'), its quasi-Monte Carlo points ('gauss_qmc', what `predict_uncertainty` uses for moments and moments_cov),
    and by `n_draws` plain draws ('gauss_mc'): probs, entropy, mutual information."""
    out, (mean, cov) = {}, (mc['mean'], mc['cov'])
    for name, points in (('gauss_ut', 'unscented'), ('gauss_qmc', 'qmc')):
        p, expected_entropy = softmax_stats(mean, cov, points=points)
        out[name] = dict(probs=p, entropy=entropy(p), mutual_info=entropy(p) - expected_entropy)
    g = torch.Generator().manual_seed(seed)
    z = mean + torch.einsum('nkl,snl->snk', covariance_factor(cov), torch.randn(n_draws, *mean.shape, generator=g, dtype=mean.dtype))
    q = z.softmax(-1); p = q.mean(0)
    out['gauss_mc'] = dict(probs=p, entropy=entropy(p), mutual_info=entropy(p) - entropy(q).mean(0))
    return out

def uncertainty_only(model, x, n_mc, seed, n_ref, mc=None):
    "Entropy and MI on inputs `x` (the OOD comparison): MC-`n_mc`, MC-`n_ref` (`mc`: its `mc_stats`, drawn here when None), the Gaussian with MC-`n_ref`'s moments, moments, moments_cov."
    mc = mc_stats(mc_outputs(model, x, n_ref, seed + 100)) if mc is None else mc
    us = {f'mc{n_mc}': predict_uncertainty(model, x, 'mc', n_samples=n_mc, seed=seed), f'mc{n_ref}': mc,
          **{k: v for k, v in gaussian_references(mc).items() if k != 'gauss_mc'}, **{m: _try(lambda m=m: predict_uncertainty(model, x, m)) for m in PROPAGATED}}
    return {k: u if 'error' in u else dict(entropy=u['entropy'], mutual_info=u['mutual_info']) for k, u in us.items()}

# ---------------------------------------------------------------- metrics
def cov_errors(cov, mc):
    """Relative Frobenius error of a (centred) logits covariance against MC's, MC noise subtracted: per-example median and
    pooled sqrt(Σ‖Σ_prop − Σ_MC‖² / Σ‖Σ_MC‖²) (headline); the same for the diagonal; the raw pooled ratios too."""
    res = {}
    for part, f, noise2 in (('full', lambda t: t, mc['noise2']), ('diag', lambda t: t.diagonal(dim1=-2, dim2=-1), mc['noise2_diag'])):
        err2 = ((f(cov) - f(mc['cov'])) ** 2).flatten(1).sum(1); ref2 = (f(mc['cov']) ** 2).flatten(1).sum(1)
        per = ((err2 - noise2).clamp_min(0) / (ref2 - noise2).clamp_min(1e-300)).sqrt()
        res[part] = dict(pooled=math.sqrt(max(float((err2 - noise2).sum()), 0.0) / float((ref2 - noise2).sum())),
                         median=float(per.median()), pooled_raw=math.sqrt(float(err2.sum() / ref2.sum())),
                         mc_rel_se=math.sqrt(float(noise2.sum() / ref2.sum())))
    tr = lambda t: float(t.diagonal(dim1=-2, dim2=-1).sum())
    res['var_ratio'] = tr(cov) / tr(mc['cov'])                                   # total variance, propagated / MC
    return res

def rms(a, b): return math.sqrt(float(((a.double() - b.double()) ** 2).sum(-1).mean()))

def auroc(score_in, score_out):
    preds = torch.cat([score_in, score_out]).float()
    target = torch.cat([torch.zeros(len(score_in)), torch.ones(len(score_out))]).long()
    return float(binary_auroc(preds, target))

def seconds(fn, repeats=3):
    "Median seconds of `fn()` over `repeats` runs after one warm-up run."
    fn(); ts = []
    for _ in range(repeats):
        t0 = time.perf_counter(); fn(); ts.append(time.perf_counter() - t0)
    return sorted(ts)[len(ts) // 2]

def cost(model, x, n_mc=100):
    "Seconds per batch `x` (median of 3 after a warm-up; MC once) for the standard pass, the two propagations with their softmax statistics (QMC points, as `predict_uncertainty`) and MC-`n_mc` (`mc_average`)."
    model.eval(); twin, cp = moment_propagation(model), covariance_propagation(model)
    with torch.no_grad():
        t = dict(standard=seconds(lambda: model(x).softmax(-1)),
                 moments=_try(lambda: seconds(lambda: softmax_stats(*twin(x), points='qmc'))),
                 moments_cov=_try(lambda: seconds(lambda: softmax_stats(*cp(x), points='qmc'))),
                 mc100=seconds(lambda: mc_average(model, x, n_mc, 0), 1))
    return dict(seconds=t, ratio={k: v / t['standard'] for k, v in t.items() if not isinstance(v, dict)})

# ---------------------------------------------------------------- where the twin's moments go wrong
class _Sampling(fx.Interpreter):
    "Run a traced net (eval mode) with every dropout sampling, keeping the values of the nodes in `keep`."
    def __init__(self, gm, keep):
        super().__init__(gm); self.keep, self.seen = keep, {}
    def run_node(self, n):
        out = super().run_node(n)
        if n in self.keep: self.seen[n] = out
        return out
    def call_function(self, target, args, kwargs):
        if target in (F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, torch.dropout):
            p = args[1] if len(args) > 1 else kwargs.get('p', 0.5)
            return target(args[0], p, True)
        return super().call_function(target, args, kwargs)

def node_diagnosis(model, x, n_samples=500, seed=4):
    """Every noisy node of the twin: its element-wise (mean, var) against MC over `n_samples` masks. var_ratio = Σ var_twin / Σ var_MC,
    var_rel_err = sqrt(Σ (var_twin − var_MC)² / Σ var_MC²), mean_err = RMS(mean_twin − mean_MC) / RMS(std_MC). MC's own noise
    in them: mean_err ≈ 1/sqrt(n_samples), var_rel_err ≈ sqrt(2/(n_samples − 1)) for Gaussian values (more for heavy tails)."""
    twin = moment_propagation(model).eval()
    with torch.no_grad(): nm = twin.node_moments(x)
    gm, drops = twin.net, [m for m in twin.net.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]
    acc, reps = {}, max(1, min(n_samples, 4096 // len(x)))
    try:
        for m in drops: m.train()
        with torch.no_grad(), torch.random.fork_rng():
            torch.manual_seed(seed)
            for start in range(0, n_samples, reps):
                k = min(reps, n_samples - start)
                run = _Sampling(gm, set(nm)); run.run(x.repeat(k, 1))
                for node, v in run.seen.items():
                    v = v.double().reshape(k, len(x), *v.shape[1:])
                    s1, s2 = acc.get(node, (0.0, 0.0)); acc[node] = (s1 + v.sum(0), s2 + (v * v).sum(0))
    finally:
        for m in drops: m.eval()
    rows = []
    for node, (mean, var) in nm.items():
        s1, s2 = acc[node]; mc_mean = s1 / n_samples; mc_var = ((s2 - n_samples * mc_mean ** 2) / (n_samples - 1)).clamp_min(0)
        mean, var = mean.double(), var.double()
        rows.append(dict(node=node.name, kind=twin.kinds[node], var_ratio=float(var.sum() / mc_var.sum().clamp_min(1e-300)),
                         var_rel_err=float(((var - mc_var) ** 2).sum().sqrt() / (mc_var ** 2).sum().sqrt().clamp_min(1e-300)),
                         mean_err=float(((mean - mc_mean) ** 2).mean().sqrt() / mc_var.mean().sqrt().clamp_min(1e-300))))
    return rows

# ---------------------------------------------------------------- one net
def score_net(make, data, a):
    "Train one net and score it: the JSON row."
    (Xtr, ytr), (Xte, yte) = data['train'], data['test']
    torch.manual_seed(0); net = make()
    train_classifier(net, Xtr, ytr, epochs=a.epochs, lr=2e-3, seed=0, progress=False)
    Xte = Xte[:a.n_test]; yte = yte[:a.n_test]
    z = mc_outputs(net, Xte, a.masks, seed=1); mc = mc_stats(z)
    r = predictions(net, Xte)
    ok = [m for m in PROPAGATED if 'error' not in r[m]]
    row = dict(description=(make.__doc__ or type(make()).__doc__ or '').strip().split('\n')[0],
               error_standard=100.0 * float((r['standard']['probs'].argmax(1) != yte).double().mean()),
               error_mc=100.0 * float((mc['probs'].argmax(1) != yte).double().mean()),
               errors={m: r[m]['error'] for m in PROPAGATED if m not in ok})
    row['cov'] = {m: cov_errors(r[m]['cov'], mc) for m in ok}
    centred = lambda t: t.double() - t.double().mean(-1, keepdim=True)
    se2 = float(mc['cov'].diagonal(dim1=-2, dim2=-1).mean()) / a.masks
    row['logit_mean_rms'] = dict(standard=math.sqrt(max(float(((centred(r['standard']['logits']) - mc['mean']) ** 2).mean()) - se2, 0.0)),
                                 moments=math.sqrt(max(float(((centred(r['moments']['mean']) - mc['mean']) ** 2).mean()) - se2, 0.0)),
                                 mc_noise=math.sqrt(se2))
    refs = gaussian_references(mc)
    row['probs_rms'] = {m: rms(r[m]['probs'], mc['probs']) for m in ('standard', *ok)}
    row['probs_rms'].update({m: rms(g['probs'], mc['probs']) for m, g in refs.items()})
    row['probs_rms']['mc_noise'] = math.sqrt(float(mc['probs_se2'].mean()))
    spearman = lambda u: float(spearmanr(u.numpy(), mc['mutual_info'].numpy()).statistic)
    row['mi_spearman'] = {m: spearman(r[m]['mutual_info']) for m in ok}
    row['mi_spearman'].update({m: spearman(g['mutual_info']) for m, g in refs.items()})
    half = a.masks // 2
    row['mi_spearman']['mc_halves'] = float(spearmanr(mc_stats(z[:half])['mutual_info'].numpy(), mc_stats(z[half:])['mutual_info'].numpy()).statistic)
    ood, ins = {}, uncertainty_only(net, Xte, a.ood_masks, 2, a.masks, mc)
    for oname, Xo in ood_sets(Xte).items():
        outs = uncertainty_only(net, Xo, a.ood_masks, 3, a.masks)
        ood[oname] = {m: {s: auroc(ins[m][s], outs[m][s]) for s in ('entropy', 'mutual_info')}
                      for m in ins if 'error' not in ins[m] and 'error' not in outs[m]}
    row['ood_auroc'] = ood
    gap = lambda m, ref: max((abs(o[m][k] - o[ref][k]) for o in ood.values() for k in o[ref]), default=None) if all(m in o for o in ood.values()) else None
    r100, rref = f'mc{a.ood_masks}', f'mc{a.masks}'
    row['ood_gap'] = {f'{m}_vs_{ref}': gap(m, ref) for m, ref in (('moments', r100), ('moments_cov', r100), (rref, r100),
                                                                   ('moments', rref), ('moments_cov', rref), ('gauss_qmc', rref), ('gauss_ut', rref))}
    row['cost'] = cost(net, Xte, a.ood_masks)
    row['nodes'] = node_diagnosis(net, Xte[:a.diag_n], a.diag_masks)
    row['pass'] = passes(row, f'mc{a.ood_masks}')
    return row

def ood_sets(X):
    "The OOD digits: 'rotated' (each test digit turned by 90°), 'shuffled' (its pixels permuted by one fixed permutation)."
    perm = torch.randperm(64, generator=torch.Generator().manual_seed(0))
    return dict(rotated=X.view(-1, 8, 8).rot90(1, dims=(1, 2)).reshape(-1, 64).contiguous(), shuffled=X[:, perm])

def passes(row, mc_key):
    "Each bar, for each propagated method: True (met) or False (not met, or the method gave no answer)."
    p = {}
    for m in PROPAGATED:
        done = m not in row['errors']
        p[f'cov_{m}'] = done and row['cov'][m]['full']['pooled'] <= BARS['cov_rel_frobenius']
        p[f'probs_{m}'] = done and row['probs_rms'][m] <= row['probs_rms']['standard']
        p[f'mi_{m}'] = done and row['mi_spearman'][m] >= BARS['mi_spearman']
        p[f'ood_{m}'] = done and all(m in o and abs(o[m][s] - o[mc_key][s]) <= BARS['ood_auroc_gap'] for o in row['ood_auroc'].values() for s in o[mc_key])
    return p

# ---------------------------------------------------------------- report
def table(report):
    "Two plain-text tables, net × metric with PASS/FAIL against each bar ('—': the method gave no answer)."
    mc_key, pf = f"mc{report['settings']['ood_masks']}", lambda ok: 'PASS' if ok else 'FAIL'
    num = lambda d, *ks, f='{:.3f}': (lambda v: f.format(v) if v is not None else '—')(_get(d, *ks))
    head = (f"{'net':18} {'err%':>5} | {'cov rel. Frobenius, pooled (diag)':^42} | {'probs RMS vs MC-' + str(report['settings']['masks']):^27} | "
            f"{'MI Spearman':^25} | cost ÷ standard pass\n{'':18} {'':>5} | {'moments':^20} {'moments_cov':^21} | "
            f"{'standard':>8} {'moments':>8} {'cov':>8} | {'moments':^12} {'moments_cov':^12} | {'mom':>5} {'cov':>5} {mc_key:>6}")
    lines = [head]
    for name, r in report['nets'].items():
        p = r['pass']
        cov = ' '.join(f"{num(r, 'cov', m, 'full', 'pooled'):>6} ({num(r, 'cov', m, 'diag', 'pooled')}) {pf(p['cov_' + m])}" for m in PROPAGATED)
        probs = ' '.join(f"{num(r, 'probs_rms', m):>6}{'' if m == 'standard' else ' ' + ('≤' if p['probs_' + m] else '>')}" for m in METHODS)
        mi = ' '.join(f"{num(r, 'mi_spearman', m)} {pf(p['mi_' + m])}" for m in PROPAGATED)
        c = ' '.join(num(r, 'cost', 'ratio', m, f='{:.1f}').rjust(w) for m, w in (('moments', 5), ('moments_cov', 5), ('mc100', 6)))
        lines.append(f"{name:18} {r['error_standard']:5.1f} | {cov} | {probs} | {mi} | {c}")
    lines += ['', f"OOD AUROC (entropy, MI): test digits vs rotated 90° | vs pixels shuffled; bar: within {BARS['ood_auroc_gap']} of {mc_key}",
              f"{'net':18} | {mc_key + ' / moments / moments_cov (rotated)':^44} | {mc_key + ' / moments / moments_cov (shuffled)':^44} | moments  moments_cov"]
    for name, r in report['nets'].items():
        cells = [' / '.join(f"{num(r, 'ood_auroc', o, m, 'entropy', f='{:.2f}')},{num(r, 'ood_auroc', o, m, 'mutual_info', f='{:.2f}')}"
                            for m in (mc_key, *PROPAGATED)) for o in ('rotated', 'shuffled')]
        lines.append(f"{name:18} | {cells[0]:^44} | {cells[1]:^44} | {pf(r['pass']['ood_moments']):7}  {pf(r['pass']['ood_moments_cov'])}")
    ref, g = f"mc{report['settings']['masks']}", ('gauss_ut', 'gauss_qmc', 'gauss_mc')
    lines += ['', "Where the Gaussian stands: the logits as N(MC mean, MC covariance) through the unscented points (ut), the QMC points (qmc) and plain draws (mc)",
              f"{'net':18} | {'probs RMS vs ' + ref:^24} | {'MI Spearman vs ' + ref:^32} | {'OOD AUROC ' + ref + ' / gauss_qmc (rot | shuf)':^40} | centred mean logits",
              f"{'':18} | {'ut':>7} {'qmc':>7} {'mc':>7} | {'ut':>6} {'qmc':>6} {'mc':>6} {'MC halves':>10} | {'':40} | RMS vs MC: standard, twin"]
    for name, r in report['nets'].items():
        ood = ' | '.join(' / '.join(f"{num(r, 'ood_auroc', o, m, 'entropy', f='{:.2f}')},{num(r, 'ood_auroc', o, m, 'mutual_info', f='{:.2f}')}"
                                    for m in (ref, 'gauss_qmc')) for o in ('rotated', 'shuffled'))
        lines.append(f"{name:18} | {' '.join(num(r, 'probs_rms', m).rjust(7) for m in g)} | {' '.join(num(r, 'mi_spearman', m).rjust(6) for m in g)} "
                     f"{num(r, 'mi_spearman', 'mc_halves'):>10} | {ood:^40} | {num(r, 'logit_mean_rms', 'standard')} {num(r, 'logit_mean_rms', 'moments')}")
    errs = [f"{name} {m}: {e}" for name, r in report['nets'].items() for m, e in r['errors'].items()]
    return '\n'.join(lines + ([''] + ['No answer:'] + errs if errs else []))

def _get(d, *keys):
    for k in keys:
        if not isinstance(d, dict) or k not in d or isinstance(d[k], dict) and 'error' in d[k]: return None
        d = d[k]
    return d

def code_version():
    """The package measured: its path, its commit and which measured modules differ from it (a clean export of a commit,
    `git archive HEAD fastdropout_nb`, put on PYTHONPATH, names its commit in a file COMMIT beside the package)."""
    import fastdropout_nb
    pkg, repo = Path(fastdropout_nb.__file__).resolve().parent, Path(__file__).resolve().parents[1]
    if pkg.parent != repo:
        stamp = pkg.parent / 'COMMIT'
        return dict(package=str(pkg), commit=stamp.read_text().strip() if stamp.exists() else None, modified=[] if stamp.exists() else None)
    git = lambda *a: subprocess.run(['git', *a], capture_output=True, text=True, cwd=repo).stdout.strip()
    changed = git('status', '--porcelain', '--', *(f'fastdropout_nb/{m}.py' for m in ('propagation', 'uncertainty', 'moments', 'distill', 'nn')))
    return dict(package=str(pkg), commit=git('rev-parse', 'HEAD'), modified=changed.split('\n') if changed else [])

def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument('--out', default='reports/propagation_uncertainty.json')
    ap.add_argument('--masks', type=int, default=3000); ap.add_argument('--ood-masks', type=int, default=100)
    ap.add_argument('--epochs', type=int, default=60); ap.add_argument('--n-test', type=int, default=600)
    ap.add_argument('--diag-n', type=int, default=200); ap.add_argument('--diag-masks', type=int, default=500)
    ap.add_argument('--only', nargs='*', default=None)
    a = ap.parse_args(argv)
    torch.set_num_threads(1); t0, c0 = time.time(), time.process_time()
    data = digits_split(0)
    argv = sys.argv[1:] if argv is None else argv
    env = [f"PYTHONPATH={os.environ['PYTHONPATH']}"] if os.environ.get('PYTHONPATH') else []
    report = dict(command=' '.join([*env, 'python benchmarks/propagation_uncertainty.py', *argv]),
                  machine=f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, 1 thread",
                  date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'), code=code_version(),
                  settings=dict(n_train=len(data['train'][0]), n_test=min(a.n_test, len(data['test'][0])), epochs=a.epochs, lr=2e-3,
                                optimizer='adam', masks=a.masks, ood_masks=a.ood_masks, diagnosis=dict(n=a.diag_n, masks=a.diag_masks, seed=4), training_seed=0, mask_seeds=dict(test=1, ood_in_mc100=2, ood_out_mc100=3, ood_out_reference=103, gaussian_draws=5),
                                ood_sets=ood_sets.__doc__, bars=BARS, headline='pooled, MC noise subtracted',
                                metrics=dict(cov=cov_errors.__doc__, probs_rms='sqrt(mean over examples of Σ_k (p_k − p_MC,k)²) against the MC-masks probabilities; '
                                                                      'mc_noise: the MC probabilities\' own RMS standard error',
                                             mi_spearman='Spearman correlation of per-example MI with MC-masks MI on the test digits; mc_halves: '
                                                         'MI of the first half of the masks against the second half (the reference\'s own reliability)',
                                             gaussian=gaussian_references.__doc__,
                                             logit_mean_rms='RMS distance of the centred mean logits (standard pass; the twin\'s mean, which moments_cov shares) '
                                                            'to MC\'s, MC noise subtracted; mc_noise: that noise',
                                             ood_auroc='torchmetrics binary_auroc, test digits (0) vs OOD digits (1), score entropy or MI',
                                             cost=cost.__doc__, nodes=node_diagnosis.__doc__)),
                  nets={})
    for name, make in all_models().items():
        if a.only and name not in a.only: continue
        t1 = time.time(); report['nets'][name] = score_net(make, data, a)
        print(name, f'{time.time() - t1:.0f} s', json.dumps(report['nets'][name]['pass']), flush=True)
    report['seconds_total'], report['cpu_seconds_total'] = time.time() - t0, time.process_time() - c0
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(report, indent=1) + '\n')
    text = table(report); print(text)
    Path(a.out).with_suffix('.txt').write_text(f"{report['command']}\n{report['machine']}, {report['date']}\n\n{text}\n")

if __name__ == '__main__': main()
