"""MNIST teachers under a teacher protocol (chapter 07b, `TEACHER_PROTOCOLS`): test error after every epoch, as JSON.

Trains the standard-dropout teacher `lenet(NETWORK)` (LeNet: 'last', LeNetAll: 'all') on the 60 000 MNIST training
images with `fastdropout_nb.distillation_protocols.train_teacher` under PROTOCOL and seed K, and records after every
epoch the test error (%) of standard (weight-scaled) prediction on the 10 000 test images, the last batch's loss and
the epoch's seconds. The report OUT is rewritten after every epoch, so a run stopped at any point leaves the epochs it
reached; it records the protocol's fields, machine, torch, date and the command.

Usage: python benchmarks/mnist_teacher_protocols.py --network last|all --protocol NAME --seed K
           [--epochs N] [--threads 1] [--data-dir DATA] --checkpoint-dir DIR --out reports/mnist_teachers/NET_PROTOCOL_seedK.json
With --checkpoint-dir, training writes a checkpoint after every epoch and a rerun of the same command resumes from it
(same numbers as a run never stopped). --epochs N stops after epoch N of the protocol's schedule (default: all of
it); a later run with a larger N resumes from the same checkpoint and goes on.
"""
import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _typed import typed_command  # noqa: E402
from fastdropout_nb.distill import scores, standard_predict  # noqa: E402
from fastdropout_nb.distillation_protocols import PAPER_MNIST, teacher_protocol, train_teacher  # noqa: E402
from fastdropout_nb.fastdropout_protocols import mnist_tensors  # noqa: E402

NETS = {'last': 'LeNet', 'all': 'LeNetAll'}


class _Reached(Exception):
    "Raised after the epoch --epochs asks to stop at (its checkpoint is already written)."


def _checkpointed(path):
    "The epoch records in the checkpoint at `path` ([] when there is none)."
    return list(torch.load(path, map_location='cpu', weights_only=False)['history']) if path and path.exists() else []


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--network', choices=sorted(NETS), required=True, help="'last' = LeNet, 'all' = LeNetAll")
    ap.add_argument('--protocol', required=True, help='a key of TEACHER_PROTOCOLS: as_written, summed, caffe')
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--epochs', type=int, default=None, help="stop after this epoch (default: the protocol's last)")
    ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--data-dir', default=None)
    ap.add_argument('--checkpoint-dir', default=None, help='checkpoint every epoch here and resume from it')
    ap.add_argument('--out', required=True)
    a = ap.parse_args(argv)
    P = teacher_protocol(a.protocol)
    if a.epochs is not None and not 1 <= a.epochs <= P['epochs']:
        raise ValueError(f"--epochs must lie in 1..{P['epochs']} (protocol {a.protocol!r}); got {a.epochs}")
    torch.set_num_threads(a.threads)
    Xtr, ytr, Xte, yte = mnist_tensors(a.data_dir)
    Xtr, Xte = Xtr.view(-1, 1, 28, 28), Xte.view(-1, 1, 28, 28)
    ck = None if a.checkpoint_dir is None else Path(a.checkpoint_dir) / f'teacher-{a.network}-{a.protocol}-seed{a.seed}.pt'
    if ck is not None: ck.parent.mkdir(parents=True, exist_ok=True)
    history, stop = _checkpointed(ck), a.epochs or P['epochs']
    report = dict(network=NETS[a.network], protocol=a.protocol, protocol_fields={k: list(v) if isinstance(v, tuple) else v
                                                                                 for k, v in P.items()},
                  seed=a.seed, epochs_planned=P['epochs'], paper=PAPER_MNIST[a.network]['standard'],
                  prediction='standard (weight scaling), 10 000 test images',
                  command=typed_command('benchmarks/mnist_teacher_protocols.py', argv),
                  machine=f'{platform.machine()} {platform.system()}, {os.cpu_count()} cores, {a.threads} thread(s)',
                  torch=torch.__version__)

    def write():
        err = [r['test_error'] for r in history]
        report.update(epochs_reached=len(history), test_error=err, loss=[r['loss'] for r in history],
                      seconds=[r['seconds'] for r in history], final=err[-1] if err else None,
                      best=min(err) if err else None, date=time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()))
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(a.out).with_suffix('.tmp')
        tmp.write_text(json.dumps(report, indent=1) + '\n', encoding='utf-8'); os.replace(tmp, a.out)

    def on_epoch(rec):
        history.append(rec); write()
        print(f"epoch {rec['epoch']}: test error {rec['test_error']:.2f} %, loss {rec['loss']:.4f}, {rec['seconds']:.0f} s", flush=True)
        if rec['epoch'] >= stop: raise _Reached

    evaluate = lambda m: dict(test_error=scores(standard_predict(m, Xte, batch_size=1000), yte)['error'])
    if len(history) < stop:
        try: train_teacher(Xtr, ytr, a.network, a.protocol, seed=a.seed, checkpoint=ck, progress=on_epoch, evaluate=evaluate)
        except _Reached: pass
    if ck is not None: history[:] = _checkpointed(ck)   # what the checkpoint holds is what was reached
    write()
    print(json.dumps({k: report[k] for k in ('network', 'protocol', 'seed', 'epochs_reached', 'final', 'best')}))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
