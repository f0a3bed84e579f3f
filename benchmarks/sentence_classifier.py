"""Sentence classifiers with dropout on the paper's sentence sets (RT sentences and subj): a small transformer and an
LSTM, predicted by the standard pass, MC dropout (100 sampled nets), moment propagation (where chapter 04b propagates
the net; otherwise its refusal is recorded) and distilled students (the same architecture, started from the teacher,
and for the transformer a smaller one started afresh).

Each set is split once at random (seed 0) into 90 % training and 10 % test sentences, of which the first 3000
and 500 are used (the `train` and `test` settings; `None` uses them all); the vocabulary (tokens seen at
least twice) is fitted on the training part (`data.build_vocab`, `data.encode_tokens`, 48 tokens at most). A teacher is
trained with its dropouts sampling, then every method predicts the test sentences. The reference is MC with
`ref_masks` other sampled nets (its own noise: the KL between two such references is recorded as `kl_ref_ref`).
Per method: accuracy, NLL, KL(reference ‖ method), argmax agreement with the reference, and the seconds per test
sentence (1 thread, wall clock: for the one-pass predictors the least of five rounds that call them in turn, for
MC one run; `cost_vs_standard` the ratio to the standard pass of the same net).
Distillation uses the training sentences as unlabelled inputs, with `target='mc'` (one sampled net per example per step).

The report is written after every (set, net) unit; a rerun with the same settings keeps finished units (resumable),
and runs for different sets (`--sets RTs` and `--sets subj` side by side) merge their units into one report.

    python benchmarks/sentence_classifier.py --out reports/sentence_classifier.json
    python benchmarks/sentence_classifier.py --quick --out /tmp/q.json      # a small case (tests)
    python benchmarks/sentence_classifier.py --sets RTs subj --nets transformer --redo --out reports/sentence_classifier.json
                                                                            # those units again, the others kept
"""
import argparse, copy, datetime, json, platform, sys, time
from pathlib import Path
import numpy as np
import torch
from torch import nn
from fastdropout_nb import data as FD
from fastdropout_nb.distill import distill, mc_predict, standard_predict, train_classifier, scores

MAX_LEN, CLASSES = 48, 2
SHARED = Path(__file__).resolve().parents[1].parent / 'shared' / 'data'
FULL = dict(train=3000, test=500, epochs=4, distill_epochs=2, masks=100, ref_masks=100, width=32, layers=2, p=0.2)
QUICK = dict(train=600, test=100, epochs=1, distill_epochs=1, masks=10, ref_masks=20, width=32, layers=1, p=0.2)


class TransformerClassifier(nn.Module):
    "Token and position embeddings, dropout, `layers` nn.TransformerEncoderLayer (dropout p), mean over tokens, dropout, linear."
    def __init__(self, vocab, width=64, layers=2, heads=4, p=0.2):
        super().__init__()
        self.emb, self.pos = nn.Embedding(vocab, width, padding_idx=FD.PAD_ID), nn.Embedding(MAX_LEN, width)
        layer = nn.TransformerEncoderLayer(width, heads, 2 * width, dropout=p, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.drop_in, self.drop, self.head = nn.Dropout(p), nn.Dropout(p), nn.Linear(width, CLASSES)
    def forward(self, ids):
        pad = ids == FD.PAD_ID
        h = self.enc(self.drop_in(self.emb(ids) + self.pos.weight[:ids.shape[1]]), src_key_padding_mask=pad)
        keep = (~pad).unsqueeze(-1).to(h.dtype)
        return self.head(self.drop((h * keep).sum(1) / keep.sum(1).clamp_min(1)))


class LSTMClassifier(nn.Module):
    "Token embeddings, dropout, a 2-layer nn.LSTM (dropout p between its layers), mean over the sentence's steps, dropout, linear."
    def __init__(self, vocab, width=64, p=0.2):
        super().__init__()
        self.emb = nn.Embedding(vocab, width, padding_idx=FD.PAD_ID)
        self.rnn = nn.LSTM(width, width, num_layers=2, dropout=p, batch_first=True)
        self.drop_in, self.drop, self.head = nn.Dropout(p), nn.Dropout(p), nn.Linear(width, CLASSES)
    def forward(self, ids):
        h = self.rnn(self.drop_in(self.emb(ids)))[0]
        keep = (ids != FD.PAD_ID).unsqueeze(-1).to(h.dtype)
        return self.head(self.drop((h * keep).sum(1) / keep.sum(1).clamp_min(1)))


def split(name, s):
    "Token ids and labels of one set: a random 90/10 split (seed 0), the vocabulary fitted on the training part."
    ds = FD.load_text(name, SHARED if (SHARED / 'SHA256SUMS').is_file() else None, download=False)
    idx = np.random.default_rng(0).permutation(len(ds))
    n_test = len(ds) // 10
    tr, te = idx[n_test:][:s['train']], idx[:n_test][:s['test']]
    (xtr, ytr), (xte, yte) = ds.subset(tr), ds.subset(te)
    vocab = FD.build_vocab(xtr, min_count=2)
    ids = lambda t: torch.from_numpy(FD.encode_tokens(t, vocab, MAX_LEN))
    return dict(x_train=ids(xtr), y_train=torch.from_numpy(ytr), x_test=ids(xte), y_test=torch.from_numpy(yte), vocab=len(vocab) + 2)


def kl(p, q): return float((p * (p.clamp_min(1e-12).log() - q.clamp_min(1e-12).log())).sum(1).mean())


def timed(f):
    t0 = time.perf_counter(); out = f(); return out, time.perf_counter() - t0


def interleaved(fs, rounds=5):
    """The least wall time of each one-pass predictor in `fs` ({name: f}) over `rounds` rounds that call them in turn,
    so that the machine's other load, which comes and goes, falls on all of them alike."""
    best = {k: float('inf') for k in fs}
    with torch.no_grad():
        for _ in range(rounds):
            for k, f in fs.items(): best[k] = min(best[k], timed(f)[1])
    return best


def row(probs, seconds, ref, y):
    sc = scores(probs, y)
    return dict(accuracy=1 - sc['error'] / 100, nll=sc['nll'], kl_to_mc=kl(ref, probs),
                agreement=float((probs.argmax(1) == ref.argmax(1)).double().mean()), seconds_per_example=seconds / len(y))


def moments(net, x):
    "moment_propagation's E[softmax] of the net's logits, or the reason it refuses the net."
    from fastdropout_nb.propagation import moment_propagation
    try: mp = moment_propagation(net, output='softmax')
    except ValueError as e: return None, 0.0, str(e).split(' Supported:')[0]
    with torch.no_grad():
        try: return mp(x), (lambda: mp(x)), None
        except ValueError as e: return None, None, str(e).split(' Supported:')[0]


def unit(name, family, s, log=print):
    "Train the teacher of `family` on set `name`, then every method on its test sentences: {method: row}."
    d = split(name, s)
    x, y = d['x_test'], d['y_test']
    torch.manual_seed(0)
    make = (lambda w, l: TransformerClassifier(d['vocab'], w, l, p=s['p'])) if family == 'transformer' else \
           (lambda w, l: LSTMClassifier(d['vocab'], w, p=s['p']))
    teacher, t_train = timed(lambda: train_classifier(make(s['width'], s['layers']), d['x_train'], d['y_train'],
                                                       epochs=s['epochs'], lr=1e-3, batch_size=64, seed=0, progress=False))
    ref = mc_predict(teacher, x, s['ref_masks'], seed=10_001, batch_size=256)
    ref2 = mc_predict(teacher, x, s['ref_masks'], seed=10_002, batch_size=256)
    mc, t_mc = timed(lambda: mc_predict(teacher, x, s['masks'], seed=1, batch_size=256))
    preds = dict(standard=(standard_predict(teacher, x, batch_size=256), lambda: standard_predict(teacher, x, batch_size=256)))
    mp, run_mp, refused = moments(teacher, x)
    if mp is not None: preds['moments'] = (mp, run_mp)
    students = dict(distilled=(copy.deepcopy(teacher), 'a copy of the teacher'))
    if family == 'transformer':
        torch.manual_seed(1)
        students['distilled_small'] = (make(s['width'] // 2, 1), f"width {s['width'] // 2}, 1 layer, fresh init")
    extra = {}
    for key, (student, what) in students.items():
        student, t_d = timed(lambda: distill(teacher, student, d['x_train'], epochs=s['distill_epochs'], lr=1e-3,
                                             batch_size=64, seed=0, progress=False))
        preds[key] = (standard_predict(student, x, batch_size=256), lambda st=student: standard_predict(st, x, batch_size=256))
        extra[key] = dict(student=what, train_seconds=t_d, parameters=sum(q.numel() for q in student.parameters()))
    t = interleaved({k: f for k, (_, f) in preds.items()})
    rows = dict(standard=row(preds['standard'][0], t['standard'], ref, y), **{f"mc_{s['masks']}": row(mc, t_mc, ref, y)})
    rows['moments'] = row(mp, t['moments'], ref, y) if mp is not None else dict(refused=refused)
    for key in students: rows[key] = dict(row(preds[key][0], t[key], ref, y), **extra[key])
    for r in rows.values():
        if 'seconds_per_example' in r: r['cost_vs_standard'] = r['seconds_per_example'] / rows['standard']['seconds_per_example']
    out = dict(methods=rows, kl_ref_ref=kl(ref, ref2), train_seconds=t_train, n_train=len(d['y_train']), n_test=len(y),
               vocab=d['vocab'], parameters=sum(q.numel() for q in teacher.parameters()))
    log(f"{name}/{family}: " + ', '.join(f"{k} acc {r['accuracy']:.3f}" if 'accuracy' in r else f"{k} refused"
                                          for k, r in rows.items()))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--out', default='reports/sentence_classifier.json')
    ap.add_argument('--quick', action='store_true', help='a small case: 600 training / 100 test sentences, 1 epoch')
    ap.add_argument('--sets', nargs='+', default=['RTs', 'subj']); ap.add_argument('--nets', nargs='+', default=['transformer', 'lstm'])
    ap.add_argument('--redo', action='store_true', help='recompute the chosen units even where OUT has them')
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    s = dict(QUICK if a.quick else FULL)
    out = Path(a.out)
    old = json.loads(out.read_text()) if out.exists() else {}
    units = old.get('units', {}) if old.get('settings') == s else {}
    cmd = 'python benchmarks/sentence_classifier.py' + ''.join(f' {x}' for x in (argv if argv is not None else sys.argv[1:]))
    for name in a.sets:
        for family in a.nets:
            if f'{name}/{family}' in units and not a.redo: continue    # finished in an earlier run with these settings
            done = dict(unit(name, family, s), command=cmd)
            old = json.loads(out.read_text()) if out.exists() else {}   # another process may have written other units
            units = {**(old.get('units', {}) if old.get('settings') == s else {}), **units, f'{name}/{family}': done}
            report = dict(command='python benchmarks/sentence_classifier.py --out reports/sentence_classifier.json (each unit: its own command)', machine=f"{platform.machine()}, torch {torch.__version__}, 1 thread",
                          date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'), settings=s, units=units)
            out.write_text(json.dumps(report, indent=1))
    return json.loads(out.read_text())


if __name__ == '__main__':
    main()
