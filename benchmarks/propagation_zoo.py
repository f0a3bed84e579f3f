"""The zoo of chapter 04b: six ordinary dropout nets trained on 8×8 digits, their moment-propagated twins scored
against Monte Carlo dropout (2000 masks) on the test digits; and a conv net trained by fast dropout through
`moment_propagation` against the same net trained with real dropout. Writes reports/propagation_zoo.json.

    OMP_NUM_THREADS=1 python benchmarks/propagation_zoo.py [--seeds 3] [--masks 2000] [--epochs 60]
"""
import argparse, json, platform, sys, time
from pathlib import Path
import torch
from fastdropout_nb.distill import train_classifier, mc_predict, scores
from fastdropout_nb.distillation_protocols import digits_split
from fastdropout_nb.propagation import zoo_models, propagation_scores, moment_propagation, fast_dropout_fit, mc_average

def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument('--seeds', type=int, default=3); ap.add_argument('--masks', type=int, default=2000)
    ap.add_argument('--epochs', type=int, default=60); ap.add_argument('--out', default='reports/propagation_zoo.json')
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    data = digits_split(0); (Xtr, ytr), (Xte, yte) = data['train'], data['test']
    report = dict(command=('OMP_NUM_THREADS=1 python benchmarks/propagation_zoo.py ' + ' '.join(argv if argv is not None else sys.argv[1:])).strip(),
                  machine=f"{platform.processor() or platform.machine()}, torch {torch.__version__}, 1 thread",
                  n_train=len(Xtr), n_test=len(Xte), masks=a.masks, epochs=a.epochs, zoo={}, fast_dropout={})
    for name, make in zoo_models().items():
        torch.manual_seed(0); net = make()
        train_classifier(net, Xtr, ytr, epochs=a.epochs, lr=2e-3, seed=0, progress=False)
        t0 = time.time(); r = propagation_scores(net, Xte, a.masks, seed=0)
        with torch.no_grad(): r['error'] = 100.0 * float((net(Xte).argmax(1) != yte).double().mean())
        report['zoo'][name] = r; print(name, r, f'{time.time() - t0:.0f} s', flush=True)
    for seed in range(a.seeds):
        rows = {}
        for how in ('real', 'fast'):
            torch.manual_seed(seed); net = zoo_models()['mnist_example']()
            if how == 'real': train_classifier(net, Xtr, ytr, epochs=a.epochs, lr=2e-3, seed=seed, progress=False)
            else: fast_dropout_fit(net, Xtr, ytr, epochs=a.epochs, lr=2e-3, seed=seed)
            with torch.no_grad():
                probs = dict(standard=net(Xte).softmax(-1), propagated=moment_propagation(net, 'softmax')(Xte),
                             mc=mc_average(net, Xte, 100, seed)[2])
            rows[how] = {k: scores(v, yte) for k, v in probs.items()}
        report['fast_dropout'][str(seed)] = rows; print('seed', seed, rows, flush=True)
    Path(a.out).write_text(json.dumps(report, indent=1) + '\n')

if __name__ == '__main__': main()
