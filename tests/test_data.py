"""Heavier checks of `fastdropout_nb.data` (chapter 06): every loader against the shared data,
downloads through pooch from a local HTTP server (a good file, a corrupted file, a transfer cut
short and retried, mock canonical archives), and Hypothesis fuzzing of the name and path arguments.

The shared data folder is looked for beside the repository (`../shared/data`, as in CI); tests
that need it are skipped when it is absent. The only network address used is 127.0.0.1.
Set FASTDROPOUT_NB_SLOW=1 to also run the slow tests (IMDB canonical repack, IMDB features).
"""
import contextlib, dataclasses, functools, gzip, hashlib, http.server, io, os, shutil, socket
import tarfile, threading, zipfile
from pathlib import Path

import numpy as np
import pooch
import pytest
import scipy.sparse as sp
from hypothesis import given, strategies as st

from fastdropout_nb import data as D

SHARED = Path(__file__).resolve().parents[1].parent / 'shared' / 'data'
HAVE_SHARED = (SHARED / 'SHA256SUMS').is_file()
needs_shared = pytest.mark.skipif(not HAVE_SHARED, reason=f'shared data not found at {SHARED}')
slow = pytest.mark.skipif(os.environ.get('FASTDROPOUT_NB_SLOW') != '1', reason='slow; set FASTDROPOUT_NB_SLOW=1')


# ---------------------------------------------------------------------------------------------
# A local HTTP server (127.0.0.1 only)

class _Handler(http.server.SimpleHTTPRequestHandler):
    requests = []
    cut_short = {}                                   # path -> how many more responses to stop halfway
    def log_message(self, *a): pass
    def do_GET(self):
        type(self).requests.append(self.path)
        if self.cut_short.get(self.path, 0) > 0:     # promise every byte, send half, hang up
            self.cut_short[self.path] -= 1
            data = Path(self.translate_path(self.path)).read_bytes()
            self.send_response(200); self.send_header('Content-Length', str(len(data))); self.end_headers()
            self.wfile.write(data[:len(data) // 2]); self.wfile.flush()
            self.close_connection = True
            return
        return super().do_GET()

@contextlib.contextmanager
def serve(folder):
    "Serve `folder` on 127.0.0.1 (free port) in a thread; yield the base URL."
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(_Handler, directory=str(folder)))
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try: yield f'http://127.0.0.1:{srv.server_address[1]}'
    finally:
        srv.shutdown(); srv.server_close()

def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def leftovers(root):
    "Staging folders, downloads or temporary files left in a data directory."
    return [p for p in Path(root).rglob('*') if p.name.startswith(('.staging-', '.downloads', 'tmp'))]

@pytest.fixture(scope='module')
def www(tmp_path_factory):
    "A web root with `good/` (the shared data, as a mirror) and `bad/` (a tampered copy of MPQA)."
    if not HAVE_SHARED: pytest.skip('needs the shared data')
    root = tmp_path_factory.mktemp('www')
    (root / 'good').symlink_to(SHARED, target_is_directory=True)
    bad = root / 'bad'
    for rel in ['mpqa/mpqa.pos', 'mpqa/mpqa.neg']:
        (bad / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SHARED / rel, bad / rel)
    b = bytearray((bad / 'mpqa/mpqa.pos').read_bytes()); b[100] ^= 1                  # one flipped bit
    (bad / 'mpqa/mpqa.pos').write_bytes(bytes(b))
    with serve(root) as url:
        yield {'good': url + '/good', 'bad': url + '/bad', 'root': root, 'url': url}

@pytest.fixture(autouse=True)
def one_retry(monkeypatch):
    "One retry (after pooch's pause of 1 s) instead of two."
    monkeypatch.setattr(D, 'DOWNLOAD_RETRIES', 1)


# ---------------------------------------------------------------------------------------------
# data_dir, registry, names

def test_data_dir_order(monkeypatch, tmp_path):
    monkeypatch.setenv('FASTDROPOUT_NB_DATA', str(tmp_path / 'env'))
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'xdg'))
    assert D.data_dir(tmp_path / 'arg') == tmp_path / 'arg'
    assert D.data_dir() == tmp_path / 'env'
    monkeypatch.delenv('FASTDROPOUT_NB_DATA')
    assert D.data_dir() == Path(pooch.os_cache('fastdropout_nb')) / 'data' == tmp_path / 'xdg' / 'fastdropout_nb' / 'data'
    with pytest.raises(TypeError): D.data_dir(3)

@given(st.text(min_size=1).filter(lambda s: '\x00' not in s))
def test_data_dir_explicit_path_wins(path):
    assert D.data_dir(path) == Path(path).expanduser()

VALID = {n.lower() for n in D.REGISTRY}

@given(st.one_of(st.text().filter(lambda s: s.lower() not in VALID), st.integers(), st.none(), st.binary()))
def test_bad_names_list_the_valid_ones(name):
    for call in (lambda: D.fetch(name, '/nonexistent', download=False), lambda: D.verify(name, '/nonexistent'),
                 lambda: D.load_text(name, '/nonexistent', download=False),
                 lambda: D.load_uci(name, '/nonexistent', download=False)):
        with pytest.raises(ValueError, match='valid names are: '):
            call()
    with pytest.raises(ValueError, match=r"RT-2k, IMDB, RTs, subj, AthR, CR, MPQA$"):
        D.load_text(name, '/nonexistent', download=False)

@given(st.sampled_from(sorted(D.REGISTRY)), st.randoms())
def test_names_are_case_insensitive(name, rnd):
    mixed = ''.join(c.upper() if rnd.random() < 0.5 else c.lower() for c in name)
    with pytest.raises(FileNotFoundError, match=repr(name)):
        D.fetch(mixed, '/nonexistent/data', download=False)

def test_text_names_are_table_1():
    assert D.TEXT_DATASETS == ('RT-2k', 'IMDB', 'RTs', 'subj', 'AthR', 'CR', 'MPQA')
    with pytest.raises(ValueError, match='valid names'): D.load_text('MNIST', '/nonexistent', download=False)

@needs_shared
def test_registry_hashes_are_the_shared_sha256sums():
    sums = {l.split('  ', 1)[1]: l.split('  ', 1)[0] for l in (SHARED / 'SHA256SUMS').read_text().split('\n') if l}
    for spec in D.REGISTRY.values():
        for rel, h, *_ in spec.files:
            if rel not in D._MANIFESTS: assert sums[rel] == h, rel; continue
            lines = sorted((f'{h}  {p}' for p, h in sums.items() if p.rsplit('/', 1)[0] in D._MANIFESTS[rel]), key=lambda l: l.split('  ')[1])
            assert hashlib.sha256(''.join(l + '\n' for l in lines).encode()).hexdigest() == h

@needs_shared
def test_every_shared_file_verifies():
    for name in D.REGISTRY: assert D.verify(name, SHARED) == [], name


# ---------------------------------------------------------------------------------------------
# loaders against the shared data

COUNTS = {'RT-2k': (1000, 1000, None), 'IMDB': (25000, 25000, (25000, 25000)), 'RTs': (5331, 5331, None),
          'subj': (5000, 5000, None), 'AthR': (799, 628, (857, 570)), 'CR': (2407, 1368, None),
          'MPQA': (3312, 7294, None)}

@functools.lru_cache(maxsize=None)
def text_set(name): return D.load_text(name, SHARED, download=False)

@needs_shared
@pytest.mark.parametrize('name', list(COUNTS))
def test_text_loader_counts(name):
    ds = text_set(name)
    n1, n0, split = COUNTS[name]
    assert isinstance(ds, D.TextDataset) and ds.name == name and len(ds) == n1 + n0
    assert ds.labels.dtype == np.int64 and (int(ds.labels.sum()), int((ds.labels == 0).sum())) == (n1, n0)
    assert all(isinstance(t, str) for t in ds.texts)
    if split:
        assert ds.protocol == 'split' and tuple(map(len, ds.split)) == split
        tr, te = ds.split
        assert len(np.intersect1d(tr, te)) == 0 and len(np.union1d(tr, te)) == len(ds)
        assert len(ds.train[0]) == split[0] and len(ds.test[1]) == split[1]
    else:
        assert ds.protocol == 'cv10' and ds.split is None
        with pytest.raises(ValueError, match='no fixed split'): ds.train

@needs_shared
def test_imdb_details():
    ds = text_set('IMDB')
    tr, te = ds.split
    assert ds.labels[tr].sum() == 12500 and ds.labels[te].sum() == 12500
    r = ds.meta['rating']
    assert set(r[ds.labels == 1]) == {7, 8, 9, 10} and set(r[ds.labels == 0]) == {1, 2, 3, 4}
    # the official training-set rating histograms (shared README)
    assert np.bincount(r[tr], minlength=11)[[1, 2, 3, 4, 7, 8, 9, 10]].tolist() == [5100, 2284, 2420, 2696, 2496, 3009, 2263, 4732]
    ids = ds.meta['id']
    for part in (tr, te):
        for lab in (0, 1):
            sel = part[ds.labels[part] == lab]
            assert ids[sel].tolist() == list(range(12500))

@needs_shared
def test_sentence_sets_are_latin1_records():
    rts = D.load_rts(SHARED, download=False)
    assert sum(t.count('\x85') for t in rts.texts) == 23        # cp1252 ellipsis bytes stay inside their records
    assert rts.texts[0].startswith('the rock is destined')
    raw = (SHARED / 'rt-polarity/rt-polarity.pos').read_bytes()
    assert '\n'.join(rts.texts[:5331]) + '\n' == raw.decode('latin-1')   # lossless
    subj = D.load_subj(SHARED, download=False)
    assert subj.classes == ('objective', 'subjective') and subj.texts[0].startswith('smart and alert')

@needs_shared
def test_rt2k_folds():
    ds = D.load_rt2k(SHARED, download=False)
    assert np.bincount(ds.folds).tolist() == [200] * 10
    for f in range(10): assert ds.labels[ds.folds == f].sum() == 100
    assert all(Path(n).name[2] == str(f) for n, f in zip(ds.meta['files'], ds.folds))   # cv123_... is in fold 1

@needs_shared
def test_athr_headers():
    s, a, n = (D.load_athr(SHARED, download=False, headers=h) for h in ('18828', 'all', 'none'))
    assert s.labels.tolist() == a.labels.tolist() == n.labels.tolist()
    for ts, ta, tn in zip(s.texts, a.texts, n.texts):
        body = ta.partition('\n\n')[2]
        assert tn == body and ts.endswith(body) and len(tn) <= len(ts) <= len(ta)
        head = ts[:len(ts) - len(body)]
        assert all(l.split(':')[0] in ('From', 'Subject') or l[:1] in ' \t' for l in head.strip('\n').split('\n') if l)
    assert all(t.startswith('From: ') and '\nSubject: ' in t.partition('\n\n')[0] for t in s.texts)
    assert sum(not t.startswith('From: ') for t in a.texts) == 106      # reordered to From, Subject
    with pytest.raises(ValueError, match='headers must be one of'): D.load_athr(SHARED, download=False, headers='x')

def test_strip_newsgroup_header():
    msg = ('From: a@b.c (A)\nOrganization: X\nSubject: long\n  continued\nLines: 3\nReferences: <1>\n\tfolded\n\n'
           'body line\n\nSubject: not a header\n')
    assert D.strip_newsgroup_header(msg) == 'From: a@b.c (A)\nSubject: long\n  continued\n\nbody line\n\nSubject: not a header\n'
    assert D.strip_newsgroup_header(msg, ()) == 'body line\n\nSubject: not a header\n'
    assert D.strip_newsgroup_header('Subject: s\nX: y\nFrom: f\nFrom: again\n\nb') == 'From: f\nSubject: s\n\nb'
    assert D.strip_newsgroup_header('no blank line') == 'no blank line'

@needs_shared
def test_athr_mat():
    m = D.load_athr_mat(SHARED, download=False)
    assert sp.isspmatrix_csr(m.X) and m.X.shape == (1427, 22178) and m.X.nnz == 227707
    assert set(np.unique(m.X.data)) == {1.0} and m.y.sum() == 799 and set(m.meta['y_pm1']) == {-1, 1}

@needs_shared
def test_images_and_uci():
    mn = D.load_mnist(SHARED, download=False)
    Xtr, ytr = mn.train
    assert Xtr.shape == (60000, 28, 28) and mn.test[0].shape == (10000, 28, 28) and Xtr.dtype == np.uint8
    assert np.bincount(mn.test[1]).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    us = D.load_usps(SHARED, download=False)
    assert us.X.shape == (11000, 16, 16) and np.bincount(us.y).tolist() == [1100] * 10
    # gnd k is digit k-1: each USPS class mean is closest to the MNIST mean of the same digit, once each
    # MNIST image is cropped to its bounding box and scaled to 16 x 16 as USPS images are
    from scipy.ndimage import zoom
    def box16(im):
        r, c = np.nonzero(im.max(1))[0], np.nonzero(im.max(0))[0]
        b = im[r[0]:r[-1] + 1, c[0]:c[-1] + 1].astype(float)
        return zoom(b, (16 / b.shape[0], 16 / b.shape[1]), order=1)[:16, :16]
    def unit(a):
        a = a.reshape(10, -1) - a.reshape(10, -1).mean(1, keepdims=True)
        return a / np.linalg.norm(a, axis=1, keepdims=True)
    mn_means = np.stack([np.mean([box16(im) for im in Xtr[ytr == k][:200]], 0) for k in range(10)])
    us_means = np.stack([us.X[us.y == k].mean(0) for k in range(10)])
    corr = unit(us_means) @ unit(mn_means).T
    assert corr.argmax(1).tolist() == list(range(10)) and corr.diagonal().min() > 0.9
    h = D.load_uci('hepatitis', SHARED, download=False)
    assert h.X.shape == (155, 19) and h.y.sum() == 123 and np.isnan(h.X).sum() == 167
    lv = D.load_uci('liver', SHARED, download=False)
    assert lv.X.shape == (345, 5) and lv.task == 'regression' and set(lv.meta['selector']) == {1, 2}
    ho = D.load_uci('housing', SHARED, download=False)
    assert ho.X.shape == (506, 13) and ho.y[0] == 24.0 and ho.y.max() == 50.0
    cpu = D.load_uci('cpu', SHARED, download=False)
    assert cpu.X.shape == (209, 6) and cpu.y[0] == 198 and cpu.meta['vendor'][0] == 'adviser'
    so = D.load_uci('soybean', SHARED, download=False)
    assert so.X.shape == (683, 35) and len(so.classes) == 19 and np.bincount(so.y).max() == 92
    ctg = D.load_uci('cardio', SHARED, download=False)
    assert ctg.X.shape == (2126, 21) and np.bincount(ctg.y).tolist() == [1655, 295, 176] and ctg.feature_names[0] == 'LB'
    assert ctg.X[0, 0] == 120.0 and ctg.X[1, 1] == 4 / (632 - 5)     # LB, and AC per second = 4 accelerations / (e - b)

def test_cardio_reader_refuses_other_files(tmp_path, monkeypatch):
    "A file that is not the CTG workbook is a ValueError naming cardio; so are record counts other than the published."
    path = tmp_path / D.REGISTRY['cardio'].files[0][0]
    path.parent.mkdir(parents=True)
    path.write_bytes(b'not an Excel file' * 100)
    with pytest.raises(ValueError, match=r'cardio: cannot read sheet "Data"'): D._read_cardio(tmp_path)
    if HAVE_SHARED:                                   # the real workbook against altered expectations: counts are checked
        shutil.copyfile(SHARED / 'uci/cardiotocography/CTG.xls', path)
        assert len(D._read_cardio(tmp_path)) == 2126
        spec = D.REGISTRY['cardio']
        monkeypatch.setitem(D.REGISTRY, 'cardio', dataclasses.replace(spec, counts=spec.counts[:2] + (('suspect', 296),)))
        with pytest.raises(ValueError, match='cardio: wrong record counts.*suspect: expected 296, found 295'):
            D._read_cardio(tmp_path)


# ---------------------------------------------------------------------------------------------
# small parsers

def test_parsers():
    assert D.split_records(b'a\r\nb\x85c\n') == ['a\r', 'b\x85c']
    idx = b'\x00\x00\x08\x03' + (2).to_bytes(4, 'big') + (1).to_bytes(4, 'big') + (3).to_bytes(4, 'big') + bytes(range(6))
    assert D.read_idx(idx).tolist() == [[[0, 1, 2]], [[3, 4, 5]]]
    with pytest.raises(ValueError, match='header says'): D.read_idx(idx[:-1])

def test_textdataset_validation():
    with pytest.raises(ValueError, match='labels must be 0 or 1'): D.TextDataset('t', ['a'], [2])
    with pytest.raises(ValueError, match='1 texts but labels'): D.TextDataset('t', ['a'], [0, 1])
    with pytest.raises(ValueError, match='protocol must be one of'): D.TextDataset('t', ['a'], [0], protocol='cv5')
    with pytest.raises(ValueError, match="needs split"): D.TextDataset('t', ['a'], [0], protocol='split')
    ds = D.TextDataset('t', ['a', 'b', 'c'], [0, 1, 1], split=([0, 2], [1]), protocol='split')
    texts, labels = ds.train
    assert texts == ['a', 'c'] and labels.tolist() == [0, 1] and ds.test[0] == ['b']


# ---------------------------------------------------------------------------------------------
# fetch: downloads through pooch from 127.0.0.1, corruption, offline

@needs_shared
def test_a_complete_data_directory_never_touches_the_network(monkeypatch):
    def no_network(*a, **k): raise AssertionError('the network was used')
    monkeypatch.setattr(pooch, 'create', no_network)
    monkeypatch.setattr(socket.socket, 'connect', no_network)
    for name in D.REGISTRY: assert D.fetch(name, SHARED) == SHARED / D.REGISTRY[name].folder       # download=True
    assert len(D.load_cr(SHARED)) == 3775 and len(D.load_uci('soybean', SHARED)) == 683 and len(D.load_athr(SHARED)) == 1427

def test_download_bar(www, tmp_path, monkeypatch, capsys):
    "A download draws a tqdm bar over its bytes when bars are on, and nothing otherwise."
    monkeypatch.setenv('FASTDROPOUT_PROGRESS', '1')
    D.fetch('USPS', tmp_path / 'a', base_url=www['good'])
    err = capsys.readouterr().err
    assert 'download USPS.mat' in err and '100%' in err and 'M/1.50M' in err, err[-500:]
    monkeypatch.setenv('FASTDROPOUT_PROGRESS', '0')
    D.fetch('USPS', tmp_path / 'b', base_url=www['good'])
    assert capsys.readouterr().err == ''

@pytest.mark.parametrize('name', ['MPQA', 'RTs', 'subj', 'CR', 'AthR-mat', 'hepatitis', 'liver', 'housing', 'CPU', 'soybean', 'USPS', 'cardio'])
def test_good_files_are_installed(www, tmp_path, name):
    folder = D.fetch(name, tmp_path, base_url=www['good'])
    assert folder == tmp_path / D.REGISTRY[name].folder and D.verify(name, tmp_path) == []
    assert leftovers(tmp_path) == []
    n = len(_Handler.requests)
    D.fetch(name, tmp_path, base_url=www['good'])                 # present and verified: no download
    assert len(_Handler.requests) == n
    D._READERS[name](tmp_path)

def test_only_the_missing_file_is_downloaded(www, tmp_path):
    D.fetch('RTs', tmp_path, base_url=www['good'])
    (tmp_path / 'rt-polarity/rt-polarity.neg').unlink()
    n = len(_Handler.requests)
    D.fetch('RTs', tmp_path, base_url=www['good'])
    assert _Handler.requests[n:] == ['/good/rt-polarity/rt-polarity.neg']

def test_a_bad_hash_is_a_clear_error_and_leaves_nothing(www, tmp_path):
    with pytest.raises(ValueError) as e: D.fetch('MPQA', tmp_path, base_url=www['bad'])
    want = D.REGISTRY['MPQA'].files[0][1]
    got = hashlib.sha256((www['root'] / 'bad/mpqa/mpqa.pos').read_bytes()).hexdigest()
    assert 'MPQA: checksum mismatch for mpqa/mpqa.pos' in str(e.value) and want in str(e.value) and got in str(e.value)
    assert list(tmp_path.iterdir()) == []                         # no data file, no temporary, no staging folder

def test_an_interrupted_transfer_is_retried(www, tmp_path):
    path = '/good/cr/custrev.pos'
    _Handler.cut_short[path] = 1                                  # the first response stops halfway
    n = len(_Handler.requests)
    D.fetch('CR', tmp_path, base_url=www['good'])
    assert _Handler.requests[n:].count(path) == 2 and D.verify('CR', tmp_path) == [] and leftovers(tmp_path) == []

def test_a_transfer_that_always_breaks_fails_cleanly(www, tmp_path):
    _Handler.cut_short['/good/cr/custrev.pos'] = 2                # both attempts (one retry) stop halfway
    with pytest.raises(ConnectionError, match=r'missing .*custrev\.pos.*Downloading failed'):
        D.fetch('CR', tmp_path, base_url=www['good'])
    assert list(tmp_path.iterdir()) == []

def test_offline_messages(tmp_path):
    with pytest.raises(FileNotFoundError) as e: D.fetch('CR', tmp_path, download=False)
    msg = str(e.value)
    assert str(tmp_path / 'cr' / 'custrev.pos') in msg and 'datasmall_NB_ACL12.zip' in msg and 'FASTDROPOUT_NB_DATA' in msg
    with pytest.raises(ConnectionError) as e: D.fetch('CR', tmp_path, base_url=f'http://127.0.0.1:{free_port()}')
    assert str(tmp_path / 'cr' / 'custrev.pos') in str(e.value) and 'refused' in str(e.value)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(FileNotFoundError, match=r'athr/20news-bydate-test/alt\.atheism'):
        D.fetch('AthR', tmp_path, download=False)

def test_local_corruption_is_never_overwritten(www, tmp_path):
    D.fetch('CR', tmp_path, base_url=www['good'])
    p = tmp_path / 'cr/custrev.neg'
    p.write_bytes(p.read_bytes()[:-1])
    with pytest.raises(ValueError, match=rf'checksum mismatch for {p}: expected sha256 8f29d7fa\w+, got \w+'):
        D.fetch('CR', tmp_path, base_url=www['good'])
    with pytest.raises(ValueError, match='checksum mismatch'): D.load_cr(tmp_path)
    assert p.stat().st_size == (SHARED / 'cr/custrev.neg').stat().st_size - 1

def test_a_folder_set_is_not_fetched_from_a_mirror(www, tmp_path):
    with pytest.raises(ValueError, match='folder set'): D.fetch('AthR', tmp_path, base_url=www['good'])
    assert list(tmp_path.iterdir()) == []

@needs_shared
def test_local_athr_corruption_is_refused(tmp_path):
    shutil.copytree(SHARED / 'athr', tmp_path / 'athr', ignore=shutil.ignore_patterns('*.mat'))
    assert D.verify('AthR', tmp_path) == []
    victim = sorted((tmp_path / 'athr/20news-bydate-train/alt.atheism').iterdir())[3]
    victim.write_bytes(b'')
    with pytest.raises(ValueError, match=r'checksum mismatch for .*athr/20news-bydate: expected sha256 d37ad097'):
        D.verify('AthR', tmp_path)


# ---------------------------------------------------------------------------------------------
# files built from downloads (MNIST's canonical gzip files, a zip member, AthR's and IMDB's archives),
# against mock archives served on 127.0.0.1

def _tar(path, members, mode='w:gz'):
    with tarfile.open(path, mode) as tf:
        for name, data in members.items():
            ti = tarfile.TarInfo(name); ti.size = len(data); tf.addfile(ti, io.BytesIO(data))

def _with_files(monkeypatch, name, *entries):
    monkeypatch.setitem(D.REGISTRY, name, dataclasses.replace(D.REGISTRY[name], files=entries))

@needs_shared
def test_mnist_canonical_gzip_is_checked_by_its_md5(tmp_path, monkeypatch):
    "A recompressed gzip wrapper (as on the canonical server): pooch checks its md5, verify accepts it, the loader reads it."
    data, web = tmp_path / 'data', tmp_path / 'web'
    web.mkdir()
    entries = D.REGISTRY['MNIST'].files
    for rel, *_ in entries[:3]:                                   # three files already here (verified)
        (data / rel).parent.mkdir(parents=True, exist_ok=True); shutil.copyfile(SHARED / rel, data / rel)
    rel, want = entries[3][:2]
    (web / 'labels.gz').write_bytes(gzip.compress(gzip.decompress((SHARED / rel).read_bytes()), compresslevel=1, mtime=12345))
    md5 = 'md5:' + hashlib.md5((web / 'labels.gz').read_bytes()).hexdigest()
    with serve(web) as url:
        _with_files(monkeypatch, 'MNIST', *entries[:3], (rel, want, url + '/labels.gz', 'md5:' + '0' * 32))
        with pytest.raises(ValueError, match=r'MD5 hash of downloaded file .* does not match'): D.fetch('MNIST', data)
        assert leftovers(data) == [] and not (data / rel).exists()
        _with_files(monkeypatch, 'MNIST', *entries[:3], (rel, want, url + '/labels.gz', md5))
        D.fetch('MNIST', data)
    assert pooch.file_hash(data / rel) != want and D.verify('MNIST', data) == [] and len(D.load_mnist(data)) == 70000

@needs_shared
def test_zip_member(tmp_path, monkeypatch):
    web = tmp_path / 'web'; web.mkdir()
    rel, want, *_ = D.REGISTRY['soybean'].files[0]
    with zipfile.ZipFile(web / 'weka.zip', 'w') as z: z.writestr('data/soybean.arff', (SHARED / rel).read_bytes())
    with zipfile.ZipFile(web / 'other.zip', 'w') as z: z.writestr('data/iris.arff', b'@relation iris\n')
    with serve(web) as url:
        _with_files(monkeypatch, 'soybean', (rel, want, url + '/other.zip', None, 'data/soybean.arff'))
        with pytest.raises(ValueError, match="soybean: .*other.zip.*data/soybean.arff"): D.fetch('soybean', tmp_path / 'data')
        assert list((tmp_path / 'data').iterdir()) == []
        _with_files(monkeypatch, 'soybean', (rel, want, url + '/weka.zip', None, 'data/soybean.arff'))
        D.fetch('soybean', tmp_path / 'data')
    assert D.verify('soybean', tmp_path / 'data') == [] and leftovers(tmp_path / 'data') == []

@needs_shared
def test_athr_from_its_archive(tmp_path, monkeypatch):
    web = tmp_path / 'web'; web.mkdir()
    members = {}
    for d in D._MANIFESTS['athr/20news-bydate']:
        for p in sorted((SHARED / d).iterdir()): members[d.split('/', 1)[1] + '/' + p.name] = p.read_bytes()
    members['20news-bydate-train/sci.space/1'] = b'another group, ignored'
    _tar(web / '20news-bydate.tar.gz', members)
    members['20news-bydate-train/alt.atheism/49960'] += b'\nP.S. altered\n'
    _tar(web / 'altered.tar.gz', members)
    _tar(web / 'evil.tar.gz', {'20news-bydate-train/alt.atheism/../../../../evil': b'x'})
    rel, want, *_ = D.REGISTRY['AthR'].files[0]
    with serve(web) as url:
        for bad, msg in [('altered', 'checksum mismatch for athr/20news-bydate built from'), ('evil', 'unsafe path')]:
            h = 'sha256:' + pooch.file_hash(web / f'{bad}.tar.gz')
            _with_files(monkeypatch, 'AthR', (rel, want, f'{url}/{bad}.tar.gz', h, 'athr'))
            with pytest.raises(ValueError, match=msg): D.fetch('AthR', tmp_path / 'data')
            assert list((tmp_path / 'data').iterdir()) == [] and not list(tmp_path.rglob('evil'))
        h = 'sha256:' + pooch.file_hash(web / '20news-bydate.tar.gz')
        _with_files(monkeypatch, 'AthR', (rel, want, url + '/20news-bydate.tar.gz', h, 'athr'))
        D.fetch('AthR', tmp_path / 'data')
    assert D.verify('AthR', tmp_path / 'data') == [] and not (tmp_path / 'data/athr/20news-bydate-train/sci.space').exists()
    assert leftovers(tmp_path / 'data') == [] and len(D.load_athr(tmp_path / 'data')) == 1427

@slow
@needs_shared
def test_canonical_imdb_repack_is_exact(tmp_path, monkeypatch):
    "A mock aclImdb_v1.tar.gz (extra unsup/feat members, other order and owners) repacks to the registry's bytes."
    src = {}
    with tarfile.open(SHARED / 'imdb/aclImdb_v1_labeled.tar.gz') as tf:
        for m in tf:
            if m.isfile(): src[m.name] = tf.extractfile(m).read()
    src['aclImdb/train/unsup/0_0.txt'] = b'unlabelled'
    src['aclImdb/train/labeledBow.feat'] = b'0:1\n'
    web = tmp_path / 'web'; web.mkdir()
    with tarfile.open(web / 'aclImdb_v1.tar.gz', 'w:gz', compresslevel=1) as tf:
        for name in sorted(src, reverse=True):
            ti = tarfile.TarInfo(name); ti.size = len(src[name]); ti.mtime = 1e9; ti.uname = 'someone'
            tf.addfile(ti, io.BytesIO(src[name]))
    rel, want, *_ = D.REGISTRY['IMDB'].files[0]
    with serve(web) as url:
        _with_files(monkeypatch, 'IMDB', (rel, want, url + '/aclImdb_v1.tar.gz', 'sha256:' + pooch.file_hash(web / 'aclImdb_v1.tar.gz'), 'imdb'))
        D.fetch('IMDB', tmp_path / 'data')
    assert D.verify('IMDB', tmp_path / 'data') == [] and leftovers(tmp_path / 'data') == []


# ---------------------------------------------------------------------------------------------
# NBSVM features

def test_nbsvm_features_basics():
    Xtr, Xte = D.nbsvm_features(['Good , GOOD !', "it's n't bad"], ['good bad unseen !'])
    vec = D.nbsvm_vectorizer().fit(['Good , GOOD !', "it's n't bad"])
    assert {'good', ',', '!', 'good ,', ', good', 'good !', "it's", "n't", "it's n't"} <= set(vec.vocabulary_)
    for X in (Xtr, Xte): assert sp.isspmatrix_csr(X) and X.dtype == np.float64 and set(X.data) <= {1.0}
    assert Xtr.shape[1] == Xte.shape[1] and Xte.nnz == 3               # good, bad, !; 'unseen' is not in the vocabulary
    assert D.nbsvm_features(['a b'])[1] is None
    with pytest.raises(TypeError): D.nbsvm_features('a single string')

@given(st.lists(st.text(alphabet=st.sampled_from('ab .,!\'-\n\x85é'), max_size=30), min_size=1, max_size=8),
       st.lists(st.text(alphabet=st.sampled_from('abc .!'), max_size=30), max_size=5))
def test_nbsvm_features_fuzz(train, test):
    try: Xtr, Xte = D.nbsvm_features(train, test)
    except ValueError as e:                                              # sklearn: only empty vocabularies
        assert 'empty vocabulary' in str(e); return
    assert Xtr.shape[0] == len(train) and Xte.shape == (len(test), Xtr.shape[1])
    assert set(np.unique(Xtr.data)) <= {1.0} and Xtr.has_canonical_format
    vec = D.nbsvm_vectorizer().fit(train)
    for i, t in enumerate(test):
        toks = [w.lower() for w in __import__('re').findall(D.NBSVM_TOKEN_PATTERN, t)]
        grams = set(toks) | {' '.join(p) for p in zip(toks, toks[1:])}
        assert Xte[i].nnz == len(grams & set(vec.vocabulary_))

@needs_shared
def test_nbsvm_features_athr_split():
    ds = D.load_athr(SHARED, download=False)
    Xtr, Xte = D.nbsvm_features(*[p[0] for p in (ds.train, ds.test)])
    assert Xtr.shape[0] == 857 and Xte.shape == (570, Xtr.shape[1]) and 300 < Xtr.nnz / 857 < 1000

@slow
@needs_shared
def test_nbsvm_features_imdb():
    ds = text_set('IMDB')
    Xtr, Xte = D.nbsvm_features(ds.train[0], ds.test[0])
    assert Xtr.shape[0] == Xte.shape[0] == 25000 and sp.isspmatrix_csr(Xtr)


# ---------------------------------------------------------------------------------------------
# token ids for sequence models

def test_token_ids_pad_unknown_and_order():
    voc = D.build_vocab(["b a a", "c a b"], min_count=1)
    assert voc == {'a': 2, 'b': 3, 'c': 4}                        # by count, ties by first appearance
    ids = D.encode_tokens(["a z b", "c"], voc)
    assert ids.dtype == np.int64 and ids.tolist() == [[2, D.UNK_ID, 3], [4, D.PAD_ID, D.PAD_ID]]
    assert D.encode_tokens(["a b c a"], voc, max_len=2).tolist() == [[2, 3]]
    for kw, name in [(dict(texts="a b", vocab=voc), 'texts'), (dict(texts=["a"], vocab=voc, max_len=0), 'max_len')]:
        with pytest.raises(ValueError, match=name): D.encode_tokens(**kw)
    with pytest.raises(ValueError, match='min_count'): D.build_vocab(["a"], min_count=0)


@needs_shared
def test_rts_token_ids():
    rts = D.load_rts(SHARED, download=False)
    voc = D.build_vocab(rts.texts[:1000], min_count=2)
    ids = D.encode_tokens(rts.texts[:1000], voc)
    n = (ids != D.PAD_ID).sum(1)
    assert (n > 0).all() and ids.max() == len(voc) + 1 and (ids[ids != D.PAD_ID] != D.UNK_ID).mean() > 0.8
