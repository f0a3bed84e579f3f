"""Dropout distillation on MNIST (Bulò et al. 2016, Table 1): LeNet or LeNetAll, one seed, written as JSON.

Runs `fastdropout_nb.distillation_protocols.mnist_table` (the paper protocol as chapter 07b states it: teacher trained
with SGD for 20 + 10 epochs, distilled into a copy of itself on the training inputs with pixels zeroed
at probability 0.2 for 20 + 10 epochs; test error of standard, MC-100 and distilled prediction).
`fastdropout-nb reproduce distill --full` runs both networks (and the digits rows) as resumable cells;
this script runs one network at a time, for a CPU session or a single GPU job.

Usage: python benchmarks/distill_mnist.py --network last|all [--seed 0] [--mc-repeats 5] [--threads N]
                                          [--protocol as_written|caffe|summed] [--teacher-epochs N]
                                          [--data-dir D] [--checkpoint-dir C] --out reports/distill_mnist_lenet_seed0.json
--protocol names the teacher's protocol (chapter 07b, `TEACHER_PROTOCOLS`; default 'as_written', the text's
schedule: same numbers and checkpoint names as before the option existed). Under another protocol the teacher is
`train_teacher`'s, resumed from the checkpoint `benchmarks/mnist_teacher_protocols.py` writes into the same
--checkpoint-dir (teacher-NET-PROTOCOL-seedK.pt), stopped after --teacher-epochs of its schedule (default: all);
the student is distilled as in the paper either way. The report records protocol, teacher epochs and the command.
Reports of another protocol go to a folder of their own, e.g. reports/distill_mnist_protocols/lenet_caffe_seed0.json
(chapter 13 reads the as-written rows from reports/distill_mnist_*_seed*.json).
With --checkpoint-dir, the teacher's training and the distillation write a checkpoint after every epoch
and a rerun of the same command resumes from it (same numbers as an uninterrupted run).
With --merge, a rerun over finished checkpoints adds the fields OUT lacks (e.g. `moment`, added later)
and keeps OUT's own (its timing is the training run's); fields in both that differ are listed under
`rerun_differs`, so the rerun doubles as a reproducibility check.
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
from fastdropout_nb.distillation_protocols import mnist_table  # noqa: E402


RUN_FIELDS = {'seconds', 'device', 'machine', 'date', 'torch', 'mc_repeats', 'rerun_differs', 'merged', '_run', 'command'}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--network', choices=['last', 'all'], required=True, help="'last' = LeNet, 'all' = LeNetAll")
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--mc-repeats', type=int, default=5)
    ap.add_argument('--threads', type=int, default=None)
    ap.add_argument('--data-dir', default=None)
    ap.add_argument('--checkpoint-dir', default=None, help='checkpoint every epoch here and resume from it')
    ap.add_argument('--protocol', default='as_written', help="the teacher's TEACHER_PROTOCOLS entry: as_written, summed, caffe")
    ap.add_argument('--teacher-epochs', type=int, default=None, help="stop the teacher after this epoch of its protocol (default: all)")
    ap.add_argument('--merge', action='store_true', help='add missing fields to an existing OUT, keep its own')
    ap.add_argument('--out', required=True)
    a = ap.parse_args(argv)
    if a.threads: torch.set_num_threads(a.threads)
    t0 = time.time()
    r = mnist_table(a.network, quick=False, seed=a.seed, data_dir=a.data_dir, mc_repeats=a.mc_repeats,
                    checkpoint_dir=a.checkpoint_dir, protocol=a.protocol, teacher_epochs=a.teacher_epochs)
    r.update(seconds=time.time() - t0, seed=a.seed, mc_repeats=a.mc_repeats, torch=torch.__version__,
             device='cuda' if torch.cuda.is_available() else f'cpu ({os.cpu_count()} cores, {torch.get_num_threads()} threads)',
             machine=f'{platform.machine()} {platform.system()}', date=time.strftime('%Y-%m-%d'),
             command=typed_command('benchmarks/distill_mnist.py', argv))
    if a.merge and os.path.exists(a.out):
        with open(a.out) as f: old = json.load(f)
        differs = {k: [old[k], v] for k, v in r.items() if k in old and k not in RUN_FIELDS and old[k] != v}
        r = {**r, **old, 'rerun_differs': differs, 'merged': time.strftime('%Y-%m-%d')}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    with open(a.out, 'w') as f: json.dump(r, f, indent=1)
    print(json.dumps(r, indent=1))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
