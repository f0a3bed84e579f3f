"""Uncertainty on MNIST: standard, MC-100, moment propagation (diagonal, full covariance) and distilled prediction, as JSON.

A dropout MLP 784-800-800-10 (ReLU; dropout 0.2 on the input, 0.5 after each hidden layer) trained by ordinary
dropout, and a student of the same shape distilled from it (Algorithm 2, sampled teacher), are scored by
`fastdropout_nb.uncertainty.predict_uncertainty` with each method on the 10 000 MNIST test digits and on two
out-of-distribution sets: the 11 000 USPS digits (16x16, resized bilinearly to 20x20 and centred in a 28x28 frame,
as MNIST's digits sit in a 20x20 box) and the MNIST test digits rotated by 90 degrees (counter-clockwise).

In distribution: test error %, NLL, Brier score, ECE (15 bins, torchmetrics) and the reliability diagram's bins.
Out of distribution: AUROC (torchmetrics) of predictive entropy and of mutual information (where a method defines
it) for MNIST test (negatives) against each OOD set (positives). Agreement with MC-100: the RMS distance of the
probability vectors and Spearman's rank correlation of entropy and of mutual information, with a second MC-100
run (other masks) as the floor MC noise sets. Cost: seconds to predict the 10 000 test digits (one thread,
batches of --batch-size), and the teacher's and student's training seconds per epoch.

Usage: python benchmarks/uncertainty_mnist.py --data-dir DATA --out reports/uncertainty_mnist.json
                                              [--threads 1] [--results-dir results/uncertainty_mnist] [--train-only] [--fresh] [--quick]
The trained teacher and student are cached under --results-dir keyed by their settings (training itself writes a
checkpoint every epoch and resumes from it), so a rerun only re-scores.
"""
import argparse
import copy
import hashlib
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torchmetrics.functional import spearman_corrcoef
from torchmetrics.functional.classification import binary_auroc, multiclass_calibration_error

from fastdropout_nb.data import load_usps
from fastdropout_nb.distill import distill, train_classifier
from fastdropout_nb.fastdropout_protocols import mnist_tensors
from fastdropout_nb.nn import dropout_mlp

METHODS = ('standard', 'mc', 'moments', 'moments_cov', 'distilled')
WITH_MI = ('mc', 'moments', 'moments_cov')
SETTINGS = dict(
    sizes=[784, 800, 800, 10], p_input=0.2, p_hidden=0.5, activation='relu',
    teacher=dict(epochs=20, lr=1e-3, batch_size=128, optimizer='adam', weight_decay=0.0, milestones=[15], seed=0),
    student=dict(init='teacher', epochs=5, lr=1e-4, batch_size=128, optimizer='adam', loss='kl', target='mc',
                 perturb=0.2, milestones=[], seed=0),
    n_samples=100, mc_seed=0, mc_floor_seed=1, batch_size=1000, n_bins=15, hist_bins=30, timing_repeats=3,
    usps=dict(resize=[20, 20], mode='bilinear', frame=28), rotation_degrees=90)
QUICK = dict(n_train=2000, n_test=1000, n_usps=1000, teacher_epochs=2, student_epochs=1, n_samples=10)


def key(d):
    "A short hash of the settings `d` (names the cached nets and predictions)."
    return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


def usps_as_mnist(images, size=(20, 20), frame=28):
    "USPS uint8 (n, 16, 16) -> float (n, 784) in [0, 1]: resized bilinearly to `size`, centred in a `frame` x `frame` image."
    x = torch.as_tensor(images, dtype=torch.float32)[:, None] / 255
    x = F.interpolate(x, size=tuple(size), mode='bilinear', align_corners=False).clamp(0, 1)
    top, left = (frame - size[0]) // 2, (frame - size[1]) // 2
    x = F.pad(x, (left, frame - size[1] - left, top, frame - size[0] - top))
    return x.reshape(len(x), frame * frame)


def rotated(X, k=1):
    "MNIST rows (n, 784) rotated by k x 90 degrees counter-clockwise."
    return torch.rot90(X.reshape(-1, 28, 28), k, dims=(1, 2)).reshape(len(X), 784).contiguous()


def teacher_net(S):
    torch.manual_seed(S['teacher']['seed'])
    return dropout_mlp(tuple(S['sizes']), S['p_input'], S['p_hidden'], S['activation'])


def _epochs_done(ckpt):
    return len(torch.load(ckpt, map_location='cpu', weights_only=False)['history']) if ckpt.exists() else 0


def train_teacher(S, Xtr, ytr, folder):
    "The dropout teacher, trained (or loaded from `folder`) with `S['teacher']`; returns (net, record)."
    tkey = key(dict(S['teacher'], sizes=S['sizes'], p=[S['p_input'], S['p_hidden']], act=S['activation'], n=len(Xtr)))
    path, meta = folder / f'teacher_{tkey}.pt', folder / f'teacher_{tkey}.json'
    net = teacher_net(S)
    if path.exists():
        net.load_state_dict(torch.load(path, map_location='cpu')); return net.eval(), json.loads(meta.read_text()), tkey
    T, ckpt = S['teacher'], folder / f'teacher_{tkey}.ckpt'
    before, t0, load0 = _epochs_done(ckpt), time.perf_counter(), os.getloadavg()[0]
    train_classifier(net, Xtr, ytr, epochs=T['epochs'], lr=T['lr'], batch_size=T['batch_size'], seed=T['seed'],
                     optimizer=T['optimizer'], weight_decay=T['weight_decay'], milestones=T['milestones'], checkpoint=ckpt)
    run = T['epochs'] - before
    rec = dict(key=tkey, epochs_timed=run, seconds_per_epoch=(time.perf_counter() - t0) / run if run else None,
               load_average=[load0, os.getloadavg()[0]], threads=torch.get_num_threads())
    torch.save(net.state_dict(), path); meta.write_text(json.dumps(rec))
    return net.eval(), rec, tkey


def train_student(S, teacher, tkey, Xtr, folder):
    "The student distilled from `teacher` on the training images (or loaded from `folder`); returns (net, record)."
    St = S['student']
    skey = key(dict(St, teacher=tkey, n=len(Xtr)))
    path, meta = folder / f'student_{skey}.pt', folder / f'student_{skey}.json'
    student = copy.deepcopy(teacher)
    if path.exists():
        student.load_state_dict(torch.load(path, map_location='cpu')); return student.eval(), json.loads(meta.read_text())
    load0 = os.getloadavg()[0]
    distill(teacher, student, Xtr, loss=St['loss'], epochs=St['epochs'], lr=St['lr'], perturb=St['perturb'],
            batch_size=St['batch_size'], target=St['target'], optimizer=St['optimizer'], milestones=St['milestones'],
            seed=St['seed'], checkpoint=folder / f'student_{skey}.ckpt')
    secs = [h['seconds'] for h in student.distill_history_]
    rec = dict(key=skey, history=student.distill_history_, seconds_per_epoch=sum(secs) / len(secs),
               load_average=[load0, os.getloadavg()[0]], threads=torch.get_num_threads())
    torch.save(student.state_dict(), path); meta.write_text(json.dumps(rec))
    return student.eval(), rec


def predict(method, teacher, student, x, S, seed):
    "`predict_uncertainty` over batches of `S['batch_size']` (batch i of an MC run seeded `1000 * seed + i`), concatenated."
    from fastdropout_nb.uncertainty import predict_uncertainty
    parts = []
    for i in range(0, len(x), S['batch_size']):
        u = predict_uncertainty(teacher, x[i:i + S['batch_size']], method=method, n_samples=S['n_samples'],
                                seed=1000 * seed + i // S['batch_size'], student=student if method == 'distilled' else None)
        parts.append({k: v.detach() for k, v in u.items() if k in ('probs', 'entropy', 'expected_entropy', 'mutual_info')})
    out = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    p = out['probs']
    if not torch.isfinite(p).all() or p.min() < -1e-6 or p.max() > 1 + 1e-6:
        raise ValueError(f'{method}: {int((~torch.isfinite(p)).sum())} probabilities not finite; '
                         f'range [{float(p.nan_to_num().min())}, {float(p.nan_to_num().max())}]')
    out['probs'] = p.clamp(0, 1)        # rounding (<= 1e-6) out of [0, 1] would make torchmetrics take them for logits
    return out


def timings(ctx, x):
    """Seconds to predict `x` by each method: the fastest of `S['timing_repeats']` rounds, each round timing every
    method in turn (so that a change in the machine's load reaches them all alike); MC-100 in the first round only."""
    S, best, load0 = ctx['S'], {m: math.inf for m in METHODS}, os.getloadavg()
    for r in range(S['timing_repeats']):
        for m in METHODS:
            if m == 'mc' and r: continue
            t0 = time.perf_counter(); predict(m, ctx['teacher'], ctx['student'], x, S, S['mc_seed'])
            best[m] = min(best[m], time.perf_counter() - t0)
    return best, dict(load_average_before=list(load0), load_average_after=list(os.getloadavg()), threads=torch.get_num_threads(),
                      batch_size=S['batch_size'], repeats=S['timing_repeats'], examples=len(x))


def code_hash():
    "A hash of the source of the modules that predict (a cached prediction is reused only while they are unchanged)."
    import fastdropout_nb.distill, fastdropout_nb.propagation, fastdropout_nb.uncertainty
    mods = (fastdropout_nb.uncertainty, fastdropout_nb.propagation, fastdropout_nb.distill)
    return hashlib.sha1(b''.join(Path(m.__file__).read_bytes() for m in mods)).hexdigest()[:12]


def cached_predict(method, name, x, ctx, seed):
    """`predict` on the set `name`, cached in `ctx['folder']` under the settings and the nets'
    keys: a rerun does not redo the Monte Carlo passes (`--fresh` does). The record keeps the hash of the code that
    predicted. Returns (outputs, record)."""
    S = ctx['S']
    k = key(dict(method=method, set=name, n=len(x), n_samples=S['n_samples'], batch_size=S['batch_size'], seed=seed,
                 nets=ctx['nets']))
    path = ctx['folder'] / f'pred_{method}_{k}.pt'
    if path.exists() and not ctx['fresh']:
        d = torch.load(path, map_location='cpu', weights_only=False); return d['out'], d['record']
    load0 = os.getloadavg()[0]
    out = predict(method, ctx['teacher'], ctx['student'], x, S, seed)
    if method not in WITH_MI: out.pop('mutual_info', None)
    rec = dict(load_average=[load0, os.getloadavg()[0]], date=time.strftime('%Y-%m-%d %H:%M'), code=code_hash())
    torch.save(dict(out=out, record=rec), path)
    return out, rec


def reliability(probs, y, n_bins):
    """Per-bin mean confidence, accuracy and count of the top-label prediction in `n_bins` equal bins of [0, 1], and the
    ECE they give. Binned as torchmetrics bins (right-closed), which puts confidence 1.0 in a bin of its own: that bin's
    ECE term is kept in `ece_check` (equal to torchmetrics' ECE) and the bin is folded into the top one for the diagram."""
    conf, pred = probs.max(1)
    idx = torch.bucketize(conf, torch.linspace(0, 1, n_bins + 1, dtype=conf.dtype), right=True) - 1
    acc, n = (pred == y).to(torch.float64), n_bins + 1
    def bins(idx, n):
        count = torch.bincount(idx, minlength=n).double()
        mean = lambda v: torch.zeros(n, dtype=torch.float64).scatter_add_(0, idx, v.double()) / count.clamp_min(1)
        return mean(conf), mean(acc), count
    c, a, k = bins(idx, n)
    ece_check = float(((a - c).abs() * k).sum() / k.sum())
    c, a, k = bins(idx.clamp(max=n_bins - 1), n_bins)
    return dict(confidence=c.tolist(), accuracy=a.tolist(), count=k.long().tolist(), ece_check=ece_check,
                ece_folded=float(((a - c).abs() * k).sum() / k.sum()), at_one=int((conf == 1).sum()))


def in_distribution(probs, y, n_bins):
    "Test error %, NLL (probabilities floored at 1e-12), Brier score (sum over classes), ECE and the reliability bins."
    K, py = probs.shape[1], probs[torch.arange(len(y)), y]
    r = dict(error=100 * float((probs.argmax(1) != y).float().mean()),
                nll=float(-py.clamp_min(1e-12).log().mean()), nll_floored=int((py < 1e-12).sum()),
                brier=float(((probs - F.one_hot(y, K).to(probs.dtype)) ** 2).sum(1).mean()),
                ece=float(multiclass_calibration_error(probs, y, num_classes=K, n_bins=n_bins, norm='l1')),
                reliability=reliability(probs, y, n_bins))
    if abs(r['ece'] - r['reliability']['ece_check']) > 1e-4:     # torchmetrics sums the bins in float32
        raise RuntimeError(f"reliability bins give ECE {r['reliability']['ece_check']}, torchmetrics {r['ece']}")
    return r


def auroc(score_in, score_out):
    "AUROC of `score` separating the OOD set (positives) from MNIST test (negatives)."
    s = torch.cat([score_in, score_out]).double()
    return float(binary_auroc(s, torch.cat([torch.zeros(len(score_in)), torch.ones(len(score_out))]).long()))


def histogram(v, hi, bins):
    return torch.histc(v.double().clamp(0, hi), bins=bins, min=0, max=hi).long().tolist()


def agreement(u, ref):
    "RMS distance of the probability vectors to `ref`'s; Spearman of entropy and (where both have it) mutual information."
    r = dict(rms_probs=float(((u['probs'] - ref['probs']) ** 2).sum(1).mean().sqrt()),
             spearman_entropy=float(spearman_corrcoef(u['entropy'].double(), ref['entropy'].double())))
    if 'mutual_info' in u and 'mutual_info' in ref:
        r['spearman_mi'] = float(spearman_corrcoef(u['mutual_info'].double(), ref['mutual_info'].double()))
    return r


def score(ctx, sets):
    "Every method on every set: in-distribution metrics on MNIST, OOD AUROCs, histograms, agreement with MC, timings."
    S, (x_in, y_in) = ctx['S'], sets['MNIST test']
    K, res, preds = S['sizes'][-1], {}, {}
    for m in METHODS:
        preds[m], recs = {}, {}
        for name, (x, _) in sets.items():
            preds[m][name], recs[name] = cached_predict(m, name, x, ctx, S['mc_seed'])
        u = preds[m]['MNIST test']
        r = dict(prediction=recs, **in_distribution(u['probs'], y_in, S['n_bins']))
        r['usps_error'] = 100 * float((preds[m]['USPS']['probs'].argmax(1) != sets['USPS'][1]).float().mean())
        r['auroc'] = {name: {s: auroc(u[s], preds[m][name][s]) for s in ('entropy', 'mutual_info') if s in u}
                      for name in sets if name != 'MNIST test'}
        r['hist'] = {name: {s: histogram(p[s], math.log(K), S['hist_bins']) for s in ('entropy', 'mutual_info') if s in p}
                     for name, p in preds[m].items()}
        res[m] = r
        print(f"{m}: error {r['error']:.2f} % NLL {r['nll']:.4f} ECE {r['ece']:.4f}", file=sys.stderr, flush=True)
    best, timing = timings(ctx, x_in)
    for m, secs in best.items(): res[m]['seconds'] = secs
    for m in METHODS:
        res[m]['seconds_ratio'] = res[m]['seconds'] / res['standard']['seconds']
        if m != 'mc': res[m]['agreement_mc'] = {name: agreement(preds[m][name], preds['mc'][name]) for name in sets}
    floor = {name: cached_predict('mc', name, x, ctx, S['mc_floor_seed']) for name, (x, _) in sets.items()}
    return res, {name: dict(agreement(floor[name][0], preds['mc'][name]), prediction=floor[name][1]) for name in sets}, timing


def _git_head():
    "The commit the script ran at, and whether the package's sources differed from it."
    import subprocess
    run = lambda *a: subprocess.run(['git', *a], capture_output=True, text=True).stdout.strip()
    return dict(commit=run('rev-parse', 'HEAD'), package_modified=bool(run('status', '--porcelain', '--', 'fastdropout_nb')))


def data(data_dir, S, quick):
    Xtr, ytr, Xte, yte = mnist_tensors(data_dir, n_train=QUICK['n_train'] if quick else None)
    usps = load_usps(data_dir)
    Xu, yu = usps_as_mnist(usps.X, S['usps']['resize'], S['usps']['frame']), torch.as_tensor(usps.y, dtype=torch.int64)
    if quick: Xte, yte, Xu, yu = Xte[:QUICK['n_test']], yte[:QUICK['n_test']], Xu[:QUICK['n_usps']], yu[:QUICK['n_usps']]
    return Xtr, ytr, {'MNIST test': (Xte, yte), 'USPS': (Xu, yu), 'MNIST rotated 90°': (rotated(Xte), yte)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--data-dir', default=None)
    ap.add_argument('--out', required=True)
    ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--results-dir', default='results/uncertainty_mnist', help='the cached teacher and student')
    ap.add_argument('--train-only', action='store_true', help='train and cache the two nets, score nothing')
    ap.add_argument('--fresh', action='store_true', help='predict again instead of reading cached predictions')
    ap.add_argument('--quick', action='store_true', help=f'a smoke test: {QUICK}')
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    S = copy.deepcopy(SETTINGS)
    if a.quick:
        S['teacher']['epochs'], S['teacher']['milestones'] = QUICK['teacher_epochs'], []
        S['student']['epochs'], S['n_samples'] = QUICK['student_epochs'], QUICK['n_samples']
    folder = Path(a.results_dir); folder.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    Xtr, ytr, sets = data(a.data_dir, S, a.quick)
    teacher, trec, tkey = train_teacher(S, Xtr, ytr, folder)
    student, srec = train_student(S, teacher, tkey, Xtr, folder)
    if a.train_only: return 0
    ctx = dict(S=S, folder=folder, teacher=teacher, student=student, nets=[tkey, srec['key']], fresh=a.fresh)
    res, floor, timing = score(ctx, sets)
    argv_txt = ' '.join(('DATA' if i and (sys.argv[1:] if argv is None else argv)[i - 1] == '--data-dir' else w)
                        for i, w in enumerate(sys.argv[1:] if argv is None else argv))
    r = dict(command=f'python benchmarks/uncertainty_mnist.py {argv_txt}', quick=a.quick, settings=S,
             sets={name: len(x) for name, (x, _) in sets.items()}, methods=res, mc_floor_agreement=floor, teacher_training=trec,
             student_training=srec, seconds=time.time() - t0, timing=timing,
             code=code_hash(), git=_git_head(), torch=torch.__version__, threads=torch.get_num_threads(), cores=os.cpu_count(),
             machine=platform.platform(), processor=platform.processor() or platform.machine(),
             date=time.strftime('%Y-%m-%d'))
    Path(a.out).write_text(json.dumps(r, indent=1) + '\n', encoding='utf-8')
    print(json.dumps({m: {k: v for k, v in x.items() if k not in ('hist', 'reliability')} for m, x in res.items()}, indent=1))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
