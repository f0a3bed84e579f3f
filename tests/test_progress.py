"""Progress bars (appendix `progress`, tqdm): drawn on a terminal, silent in logs.

A child process trains a tiny net with `train_mlp`, distils it with `distill`, trains it with `train_classifier`
and predicts with `mc_predict` (all with their default `progress=None`), once with standard error on a
pseudo-terminal and once on a pipe.
"""
import os
import subprocess
import sys

import pytest

CHILD = r"""
import torch
from torch import nn
from fastdropout_nb.nn import train_mlp
from fastdropout_nb.distill import distill, mc_predict, train_classifier
torch.manual_seed(0)
X, y = torch.randn(64, 5), torch.randint(0, 3, (64,))
net = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 3))
train_mlp(net, X, y, epochs=3, batch_size=16, lr=0.1)
distill(net, nn.Linear(5, 3), X, epochs=2, batch_size=16)
train_classifier(net, X, y, epochs=2, batch_size=16)
mc_predict(net, X, 5, batch_size=16)
print('child done')
"""


def _run(stderr_tty, env_extra=None):
    env = {k: v for k, v in os.environ.items() if k != 'FASTDROPOUT_PROGRESS'}
    env.update(env_extra or {})
    if not stderr_tty:
        r = subprocess.run([sys.executable, '-c', CHILD], capture_output=True, text=True, env=env, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
        return r.stdout, r.stderr
    import fcntl, pty, struct, termios
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack('HHHH', 24, 100, 0, 0))   # a terminal has a size (tqdm draws to its width)
    try:
        p = subprocess.Popen([sys.executable, '-c', CHILD], stdout=subprocess.PIPE, stderr=slave, env=env)
        os.close(slave)
        chunks = []
        while True:
            try: data = os.read(master, 4096)
            except OSError: break                      # the child closed the terminal
            if not data: break
            chunks.append(data)
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, b''.join(chunks).decode(errors='replace')[-3000:]
        return out.decode(), b''.join(chunks).decode(errors='replace')
    finally:
        os.close(master)


@pytest.mark.skipif(sys.platform == 'win32', reason='needs a pseudo-terminal')
def test_bars_draw_on_a_terminal():
    out, err = _run(stderr_tty=True)
    assert 'child done' in out
    assert '\r' in err and 'train' in err and '3/3' in err and 'distill' in err and '2/2' in err, err[-2000:]
    assert 'loss' in err
    assert 'MC-5 predict' in err and '4/4' in err, err[-2000:]


def test_bars_are_silent_in_logs():
    out, err = _run(stderr_tty=False)
    assert 'child done' in out
    assert err.strip() == '', err[-2000:]


def test_environment_variable_forces_bars_into_a_log():
    out, err = _run(stderr_tty=False, env_extra={'FASTDROPOUT_PROGRESS': '1'})
    assert '3/3' in err and '2/2' in err
