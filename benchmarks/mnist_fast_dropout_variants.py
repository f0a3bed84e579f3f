"""MNIST 784-1200-1200-10 fast dropout: variants of the objective on a validation split, and where the variance goes.

Each variant trains a `FastDropoutMLP` (p_input 0.2, p_hidden 0.5, ReLU unless named; SGD momentum 0.9, batch 100,
lr 0.05 decayed x0.99 per epoch, seed 0) on the first 50 000 training images and records the errors on the last
10 000 (moment-propagation prediction) after every epoch, `objective_gap` on 10 000 training images, and
`variance_ratio_by_layer` (real-dropout / propagated variance of each layer's outputs, 500 training images,
200 masks). The test set is used only with --test (below). Variants:

  hidden4, hidden10   var_scale 4 or 10 on the hidden layers' dropout only (not on the input layer); var_scale_rule 'mean'
                      (var_scale on the (p/q) m^2 part of the masks' noise only), the rule the committed runs used
  output6             var_scale 6 on the output layer's dropout only (its inputs' variance is the one
                      propagated 5-6x too small; the hidden layers' are about right); var_scale_rule 'mean' as above
  covfix              the output layer's input variance corrected for the covariance of the last hidden layer's
                      units that the propagation leaves out: Cov(h2) ~ J W2 diag(d1) W2^T J (delta method through
                      the ReLUs, J = Phi(mu/s) their expected slopes, d1 the variances of layer 2's dropped inputs),
                      so Var z_k gains w_k^T Cov(h2) w_k minus its diagonal; floored at the last layer's own
                      mask variance, (p/q) sum_j w_kj^2 E[h_j^2], a lower bound by the law of total variance
  delta               fastdropout_nb.nn.DeltaVariance (chapter 04, "Every mask's covariance, carried to the logits"): the
                      logits' variance with every mask's covariance, the law of total variance from the output down
                      with each hidden layer linearised at its expected slopes Phi(mu/s); covfix plus the input masks'
                      covariance (Var z = sum_l rho_l sum_i (T_l)_ki^2 E[a_{l-1,i}^2], T_l the logits' Jacobian with
                      respect to layer l's dropped inputs); run with --flush-denormal --threads 2. The committed runs
                      (delta, delta_test) were trained without the ReLUs' residual variance, and so is this variant:
                      DeltaVariance(model, residual=False)
  meanonly            each layer sees only its own dropout noise: the incoming variance is set to 0 after
                      every activation (as in Wang & Manning's code, which propagates the means only)
  sample              the expected softmax cross-entropy by 20 Gaussian samples of the logits (independent)
                      instead of the unscented points
  fullcov             20 samples of the logits with their full covariance across classes, W diag(d) W^T,
                      drawn as W (sqrt(d) * eps) over the last hidden layer (the paper: "sampling from the
                      input Gaussian directly")
  noinput             no input dropout (p_input 0, Wang & Manning's code default)
  gauss               Wang & Manning's *sampled* fast dropout (their section 2.1, "sampling from the Gaussian") in every
                      hidden layer: each unit's input is drawn once from N(mu, s^2), the Gaussian of its dropped-out sum
                      given the layer's (sampled) input, and passed through the ReLU; the next layer's mean and variance are
                      computed from that sample. Units downstream of one sample share it, so the covariance that flows
                      across layers is kept, but not the one within a layer (two units see the same masks on their
                      inputs; independent per-unit samples take that as 0); the output layer keeps the expected
                      (unscented) cross-entropy over its own dropout. Two matrix products per layer, like fast dropout;
                      one Gaussian number per unit instead of one Bernoulli mask per input. Predictions: moment propagation.
  tanh, sigmoid       those activations (moment formulas of chapter 04)

  python benchmarks/mnist_fast_dropout_variants.py NAME [--epochs 20] [--lr 0.05] --data-dir DATA --out-dir results/variants
  --test trains on all 60 000 training images and scores the test set instead (tag NAME_test), for a variant already
  chosen on the validation split, at an epoch count fixed beforehand (no early stopping on the test set).
  (covfix was run with --flush-denormal)
  python benchmarks/mnist_fast_dropout_variants.py NAME --layers-only --out-dir results/variants   (from saved weights)
  Training checkpoints every epoch to OUT_DIR/NAME.ckpt and resumes from it, so --epochs can be raised later.
  python benchmarks/mnist_fast_dropout_variants.py --time-step covfix --flush-denormal --data-dir DATA --out-dir results/variants
  python benchmarks/mnist_fast_dropout_variants.py --time-step delta_test --flush-denormal --data-dir DATA --out-dir results/variants
  python benchmarks/mnist_fast_dropout_variants.py --merge results/variants/*.json --out reports/mnist_fast_dropout_variants.json
"""
import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fastdropout_nb.nn import (_real_and_fast, DeltaVariance, FastDropoutLinear, FastDropoutMLP, count_errors, fast_dropout_cross_entropy,
                               objective_gap, train_mlp, variance_ratio_by_layer)
from fastdropout_nb.fastdropout_protocols import mnist_tensors

FIXABLE = ('hidden4', 'hidden10', 'output6', 'covfix', 'delta', 'sample', 'fullcov', 'noinput', 'gauss')   # ReLU, plain propagation
VARIANTS = ('hidden4', 'hidden10', 'output6', 'covfix', 'delta', 'meanonly', 'sample', 'fullcov', 'noinput', 'tanh', 'sigmoid', 'gauss')


class MeanOnly(nn.Module):
    "Wrap an activation: pass its output mean on with variance 0 (the next layer then sees only its own dropout noise)."
    def __init__(self, act): super().__init__(); self.a = act
    def forward(self, x):
        m, _ = self.a(x); return (m, torch.zeros_like(m))


class FullCovLogits(nn.Module):
    "Samples of the logits of `model` with their full covariance across classes (for training; `model` is trained)."
    def __init__(self, model, n_samples=20): super().__init__(); self.inner, self.n = model, n_samples
    def forward(self, x):
        last, body = self.inner.layers[-1], self.inner.layers[:-1]
        m, v = body(x); q = 1 - last.p
        d = (last.var_scale * last.p / q) * m * m + v / q                 # the variance of each dropped input
        eps = torch.randn((self.n,) + tuple(m.shape), dtype=m.dtype, device=m.device)
        return F.linear(m, last.weight, last.bias) + (d.clamp_min(1e-12).sqrt() * eps) @ last.weight.t()


class CovCorrected(nn.Module):
    "Logit moments of a 784-H-H-K ReLU `model` with the output variance corrected for the last hidden layer's covariance."
    def __init__(self, model): super().__init__(); self.inner = model
    def forward(self, x):
        l1, a1, l2, a2, l3 = self.inner.layers
        hm1, hv1 = a1(l1(x))
        m2, v2 = l2((hm1, hv1))
        h2 = a2((m2, v2)); mz, vz = l3(h2)
        q2, q3 = 1 - l2.p, 1 - l3.p
        d1 = (l2.p / q2) * hm1 * hm1 + hv1 / q2                               # variances of layer 2's dropped inputs
        J = torch.special.ndtr(m2 / v2.clamp_min(1e-12).sqrt())                  # expected ReLU slopes
        t = (l3.weight[None] * J[:, None, :]) @ l2.weight                        # (B, K, H1): d z_k / d u1_i
        full = (t * t * d1[:, None, :]).sum(-1)
        diag = (J * J * v2) @ (l3.weight ** 2).t()
        floor = (l3.p / q3) * (h2[0] ** 2 + h2[1]) @ (l3.weight ** 2).t()
        return mz, torch.maximum(vz + full - diag, floor)


class GaussianSampled(nn.Module):
    "Train a ReLU `FastDropoutMLP` by sampled fast dropout: each hidden unit's input drawn from its Gaussian, once per example."
    def __init__(self, model): super().__init__(); self.inner = model
    def forward(self, x):
        if not self.training: return self.inner(x)          # predictions: the deterministic moment propagation
        *hidden, last = [m for m in self.inner.layers if isinstance(m, FastDropoutLinear)]
        h = x
        for lin in hidden:
            m, v = lin(h)                                   # h is a sample, so v is this layer's own dropout only
            h = F.relu(m + v.clamp_min(1e-12).sqrt() * torch.randn_like(m))
        return last(h)                                      # (mean, var) of the logits: the expected cross-entropy


def make_variant(name):
    "The model to keep, the module to train and the loss, for variant `name` (seed 0)."
    if name not in VARIANTS: raise ValueError(f"variant must be one of {VARIANTS}; got {name!r}")
    torch.manual_seed(0)
    act = name if name in ('tanh', 'sigmoid') else 'relu'
    model = FastDropoutMLP((784, 1200, 1200, 10), 0.0 if name == 'noinput' else 0.2, 0.5, activation=act)
    lins = [m for m in model.layers if isinstance(m, FastDropoutLinear)]
    if name.startswith('hidden'):
        for m in lins[1:]: m.var_scale, m.var_scale_rule = float(name[len('hidden'):]), 'mean'
    if name.startswith('output'): lins[-1].var_scale, lins[-1].var_scale_rule = float(name[len('output'):]), 'mean'
    if name == 'meanonly':
        model.layers = nn.Sequential(*[m if isinstance(m, FastDropoutLinear) else MeanOnly(m) for m in model.layers])
    train_model, loss_fn = model, None
    if name == 'sample':
        def loss_fn(out, t): return fast_dropout_cross_entropy(*out, t, method='sample', n_samples=20)
    if name == 'covfix': train_model = CovCorrected(model)
    if name == 'delta': train_model = DeltaVariance(model, residual=False)      # the rule of the committed runs
    if name == 'gauss': train_model = GaussianSampled(model)
    if name == 'fullcov':
        train_model = FullCovLogits(model, 20)
        def loss_fn(zs, t): return F.cross_entropy(zs.reshape(-1, zs.shape[-1]), t.repeat(zs.shape[0]))
    return model, train_model, loss_fn


def layer_rows(model, Xtr):
    return variance_ratio_by_layer(model, Xtr[:500], n_samples=200)


@torch.no_grad()
def covfix_ratio(model, X, n_samples=200, seed=0):
    """Median over logits and rows of `X` of real dropout's logit variance (MC, the weights shared) over the
    propagated one, over the `CovCorrected` one and over `delta_moments`'s (ReLU nets with the plain propagation only)."""
    real, _ = _real_and_fast(model); real.train()
    torch.manual_seed(seed)
    v_real = torch.stack([real(X) for _ in range(n_samples)]).var(0)
    v_prop, v_fix, v_delta = model(X)[1], CovCorrected(model)(X)[1], DeltaVariance(model, residual=False)(X)[1]
    return dict(propagated=float((v_real / v_prop).median()), corrected=float((v_real / v_fix).median()),
                delta=float((v_real / v_delta).median()), n_samples=n_samples, n=len(X))


def step_seconds(X, y, out_dir, weights, n=20):
    "Median seconds of a forward and backward pass of covfix, delta, plain fast dropout and real (MC) dropout on the batch `X`, `y`."
    from fastdropout_nb.arrays import no_checks
    from fastdropout_nb.nn import default_loss
    model, _, _ = make_variant('covfix'); model.load_state_dict(torch.load(Path(out_dir) / f'{weights}.pt'))
    real = _real_and_fast(model)[0].train()                     # the real dropout net with the same weights
    res = {}
    with no_checks():
        for name, net, loss in (('covfix', CovCorrected(model), default_loss), ('delta', DeltaVariance(model, residual=False), default_loss),
                                ('fast_dropout', model, default_loss), ('mc_dropout', real, F.cross_entropy)):
            times = []
            for i in range(n + 3):
                t0 = time.perf_counter(); loss(net(X), y).backward(); times.append(time.perf_counter() - t0)
            res[name] = sorted(times[3:])[n // 2]
    res['ratio'] = res['covfix'] / res['fast_dropout']; res['delta_ratio'] = res['delta'] / res['fast_dropout']
    res['delta_over_mc'] = res['delta'] / res['mc_dropout']
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('name', nargs='?')
    ap.add_argument('--epochs', type=int, default=20)
    ap.add_argument('--lr', type=float, default=0.05)
    ap.add_argument('--data-dir', default='../shared/data')
    ap.add_argument('--out-dir', default='results/variants')
    ap.add_argument('--layers-only', action='store_true', help="recompute variance_ratio_by_layer from the saved weights")
    ap.add_argument('--merge', nargs='*', help='JSON files of single variants to merge into --out')
    ap.add_argument('--out')
    ap.add_argument('--time-step', metavar='WEIGHTS', help='seconds per training step (batch 100) of covfix, delta, plain fast dropout and real dropout, '
                    "with the weights saved by a run (e.g. 'covfix': OUT_DIR/covfix.pt), median of 20 after 3 warm-up steps")
    ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--test', action='store_true', help='train on all 60 000 images and score the test set (tag NAME_test)')
    ap.add_argument('--flush-denormal', action='store_true',
                    help='flush denormal floats to zero (covfix: 7x faster on a CPU, where its tiny variance products are denormal)')
    a = ap.parse_args(argv)
    if a.time_step:
        torch.set_num_threads(a.threads); torch.set_flush_denormal(a.flush_denormal)
        X, y = (t[:100] for t in mnist_tensors(a.data_dir)[:2])
        print(json.dumps(dict(step_seconds(X, y, a.out_dir, a.time_step), flush_denormal=a.flush_denormal, threads=a.threads))); return
    if a.merge:
        rows = {json.loads(Path(f).read_text())['name']: json.loads(Path(f).read_text()) for f in a.merge}
        Path(a.out).write_text(json.dumps(rows, indent=1)); return
    torch.set_num_threads(a.threads)
    if a.flush_denormal: torch.set_flush_denormal(True)
    Xtr, ytr, Xte, yte = mnist_tensors(a.data_dir)
    Xtr, ytr, Xva, yva = (Xtr, ytr, Xte, yte) if a.test else (Xtr[:-10000], ytr[:-10000], Xtr[-10000:], ytr[-10000:])
    out = Path(a.out_dir); out.mkdir(parents=True, exist_ok=True)
    tag = a.name + (f'_lr{a.lr:g}' if a.lr != 0.05 else '') + ('_test' if a.test else '')
    model, train_model, loss_fn = make_variant(a.name)
    if a.layers_only:
        r = json.loads((out / f'{tag}.json').read_text())
        model.load_state_dict(torch.load(out / f'{tag}.pt'))
        r['layers'] = layer_rows(model, Xtr)
        if a.name in FIXABLE: r['logit_var_ratio_covfix'] = covfix_ratio(model, Xtr[:500])
        (out / f'{tag}.json').write_text(json.dumps(r)); print(json.dumps(r['layers'])); return
    t0 = time.time()
    ev = lambda m: dict(test_errors=count_errors(model, Xva, yva, method='moment'))
    hist = train_mlp(train_model, Xtr, ytr, a.epochs, lr=a.lr, lr_decay=0.99, batch_size=100, momentum=0.9, seed=0,
                     evaluate=ev, progress=False, checkpoint=out / f'{tag}.ckpt', **(dict(loss_fn=loss_fn) if loss_fn else {}))
    where = 'the test set (trained on all 60 000 training images)' if a.test else 'validation (the last 10 000 training images)'
    r = dict(name=tag, evaluated_on=where, epochs=len(hist), lr=a.lr,
             curve=[h['test_errors'] for h in hist], loss=[h['loss'] for h in hist],
             train_loss_two_ways=objective_gap(model, Xtr[:10000], ytr[:10000]), layers=layer_rows(model, Xtr),
             logit_var_ratio_covfix=covfix_ratio(model, Xtr[:500]) if a.name in FIXABLE else None,
             seconds=time.time() - t0, torch=torch.__version__, threads=a.threads, command='python ' + ' '.join(sys.argv),
             flush_denormal=a.flush_denormal)
    torch.save(model.state_dict(), out / f'{tag}.pt')
    (out / f'{tag}.json').write_text(json.dumps(r)); print(json.dumps(r))


if __name__ == '__main__':
    main()
