"""`fastdropout-nb reproduce lr --jobs N` and the Dask backend: the same table, cell for cell, as one process.

The data directory is empty, so the quick LR table runs on scikit-learn's bundled data sets only
(breast cancer, digits); the text sets are skipped. Timing fields differ from run to run and are
left out of the comparison; everything else (accuracies, counts, iterations, chosen
hyperparameters) must be identical.
"""
import json, os, signal, subprocess, sys, time

import pytest

CMD = [sys.executable, '-c', 'import sys; from fastdropout_nb.cli import main; sys.exit(main())', 'reproduce', 'lr', '--quick']
TIMING = ('fit_seconds', 'search_seconds')
pytestmark = pytest.mark.skipif(os.name != 'posix', reason="uses POSIX process groups")


def _cmd(out, data, *extra): return CMD + ['--out', str(out), '--data-dir', str(data), *extra]


def _cells(out):
    "Every stored cell of the quick LR table, without its timings: {file name: value}."
    strip = lambda v: {k: x for k, x in v.items() if k not in TIMING}
    return {p.name: strip(json.loads(p.read_text())['value']) for p in sorted((out / 'lr-quick').glob('*.json'))}


def _accuracy_table(out):
    "The accuracy part of lr.md (its header names the date and its last table the timings)."
    md = (out / 'lr.md').read_text()
    return md[md.index('| method |'):md.index('| fit time per fold')]


@pytest.fixture(scope='module')
def one_process(tmp_path_factory):
    out, data = tmp_path_factory.mktemp('jobs1'), tmp_path_factory.mktemp('empty-data')
    r = subprocess.run(_cmd(out, data, '--jobs', '1'), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return out, data


def test_two_processes_stopped_midway_resume_to_the_same_table(one_process, tmp_path):
    ref, data = one_process
    out = tmp_path / 'jobs2'
    proc = subprocess.Popen(_cmd(out, data, '--jobs', '2'), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and len(list(out.glob('lr-quick/*.json'))) < 5:
        time.sleep(0.05)
    assert proc.poll() is None, f"the run ended before it could be stopped: {proc.stderr.read().decode()[-2000:]}"
    os.killpg(proc.pid, signal.SIGKILL); proc.wait()                 # the command and its worker processes
    before = {p.name: p.stat().st_mtime_ns for p in out.glob('lr-quick/*.json')}
    assert 5 <= len(before) < len(_cells(ref)) and not (out / 'lr.md').exists()

    r = subprocess.run(_cmd(out, data, '--jobs', '2'), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    after = {p.name: p.stat().st_mtime_ns for p in out.glob('lr-quick/*.json')}
    assert all(after[n] == t for n, t in before.items()), "a stored cell was recomputed"
    assert _cells(out) == _cells(ref)
    assert _accuracy_table(out) == _accuracy_table(ref)


def test_dask_local_cluster_gives_the_same_cells(one_process, tmp_path):
    distributed = pytest.importorskip('distributed')
    from fastdropout_nb.experiments import ResultStore, lr_cells
    ref, data = one_process
    plan = [('breast-cancer', None, ['plain LR', 'closed form'])]
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host='127.0.0.1',
                                  dashboard_address='127.0.0.1:0') as cluster:
        got = lr_cells(ResultStore(tmp_path), quick=True, data_dir=data, plan=plan, progress=lambda s: None,
                       backend='dask', scheduler=cluster.scheduler_address)
    assert sorted(got) == [('breast-cancer', 'closed form'), ('breast-cancer', 'plain LR')]
    mine = _cells(tmp_path)
    assert len(mine) == 5 * 2
    assert mine == {n: v for n, v in _cells(ref).items() if n.startswith(('breast-cancer__plain_LR__', 'breast-cancer__closed_form__'))}
