"""Open the offline docs in a real browser: are the equations typeset and the plots loaded?

`fastdropout-nb docs` builds every notebook into HTML with a local MathJax 3. This test builds
them into a temporary folder and opens each page in headless Chromium, after MathJax has run
(`--dump-dom` with a virtual-time budget), then checks the rendered page:

* no raw TeX is left (`$` or `$$` in the text outside code), and MathJax made `mjx-container`
  elements, without TeX errors (`mjx-merror`), with its web fonts loaded from the local copy;
* every `<img>` is a data URI that the browser decoded (natural width > 0);
* a screenshot (1200 x 2000) of each page is saved next to the build, to look at; three pages (the
  index with the README's figures, the chapter `00_gaussian` with its equations, the experiment page
  `10_lr_table` with its figures) are also shot whole into `_docs/screenshots/` (or
  `$FASTDROPOUT_NB_SCREENSHOTS`), and are checked for their figures and equations.

By default it builds and checks only those three pages (`tests/test_docs_build.py` processes every
notebook without a browser); `FASTDROPOUT_NB_BROWSER_PAGES=all` opens every page (about three times the
time). It needs `/usr/bin/chromium` (Debian package `chromium`) and MathJax (from the cache, or npm);
it is skipped where either is missing, as on CI unless chromium was installed.
"""
import json, os, re, shutil, subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which('chromium') or ('/usr/bin/chromium' if Path('/usr/bin/chromium').exists() else None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (Debian: apt-get install chromium)")

FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync',
         '--virtual-time-budget=10000', '--window-size=1200,2000']

# Pages shot whole (window height in px), and what each is checked for: (images at least, typeset maths).
SHOWCASE = {'index': (4600, 3, False), '00_gaussian': (4000, 1, True), '10_lr_table': (3800, 1, True)}
SHOTS = Path(os.environ.get('FASTDROPOUT_NB_SCREENSHOTS') or ROOT / '_docs' / 'screenshots')

# Added to a copy of each page: once MathJax has typeset and the fonts settled, record what the
# browser saw (image sizes, font states) as attributes of <body>, which --dump-dom then shows.
PROBE = """<script>
window.addEventListener('load', () => {
  const report = () => document.fonts.ready.then(() => {
    const b = document.body;
    b.setAttribute('data-probe-imgs', JSON.stringify([...document.images].map(i => [i.src.slice(0, 30), i.naturalWidth])));
    b.setAttribute('data-probe-fonts', JSON.stringify([...document.fonts].map(f => f.family + ':' + f.status)));
    b.setAttribute('data-probe-done', '1');
  });
  const s = window.MathJax && window.MathJax.startup;
  (s && s.promise ? s.promise : Promise.resolve()).then(report, report);
});
</script>"""


def _notebooks():
    "The three pages of `SHOWCASE`; with `FASTDROPOUT_NB_BROWSER_PAGES=all`, every notebook."
    from fastdropout_nb.docs import doc_notebooks
    nbs = doc_notebooks(ROOT / 'nbs')
    return nbs if os.environ.get('FASTDROPOUT_NB_BROWSER_PAGES') == 'all' else [p for p in nbs if p.stem in SHOWCASE]


@pytest.fixture(scope='module')
def site(tmp_path_factory):
    from fastdropout_nb import docs
    try: mathjax = docs.find_mathjax()
    except RuntimeError as e: pytest.skip(f"no MathJax to test with: {e}")
    out = tmp_path_factory.mktemp('docs')
    docs.build_docs(out=out, root=ROOT, mathjax=mathjax, notebooks=_notebooks(), progress=None)
    return out


def _strip(html, tags):
    return re.sub(rf'<({tags})\b.*?</\1>', ' ', html, flags=re.S | re.I)


def _text(html):
    "The visible prose of `html`: no scripts, styles, code, or tags."
    return re.sub(r'<[^>]+>', ' ', _strip(html, 'script|style|pre|code|textarea'))


@pytest.mark.parametrize('nb', _notebooks(), ids=lambda p: p.stem)
def test_page_renders(site, nb):
    from fastdropout_nb.docs import page_name
    page = site / page_name(nb)
    src = page.read_text(encoding='utf-8')
    probe = page.with_name('_probe_' + page.name)
    probe.write_text(src.replace('</body>', PROBE + '\n</body>', 1), encoding='utf-8')
    shot = site / (page.stem + '.png')
    r = subprocess.run([CHROMIUM, *FLAGS, f'--user-data-dir={site / "_chromium"}', f'--screenshot={shot}',
                        '--dump-dom', probe.as_uri()], capture_output=True, text=True, timeout=180)
    dom = r.stdout
    assert 'data-probe-done="1"' in dom, f"the page did not finish loading:\n{r.stderr[-3000:]}"
    assert shot.exists() and shot.stat().st_size > 10_000, "no screenshot"
    body = re.search(r'<body[^>]*>', dom)[0]
    attr = lambda k: json.loads(re.search(rf'{k}="([^"]*)"', body)[1].replace('&quot;', '"'))

    # Equations: typeset, no raw TeX left, no TeX errors, fonts from the local copy.
    has_math = '$' in _text(src)
    left = _text(dom)
    assert '$$' not in left and '$' not in left, f"raw TeX left in {page.name}: {left[max(0, left.find('$') - 80):][:200]!r}"
    fonts = attr('data-probe-fonts')
    assert not [f for f in fonts if f.endswith(':error')], f"fonts failed to load: {fonts}"
    if has_math:
        assert dom.count('<mjx-container') > 0, "MathJax produced no mjx-container"
        assert '<mjx-merror' not in dom, "MathJax reports a TeX error"
        assert any(f.startswith('MJX') and f.endswith(':loaded') for f in fonts), f"no MathJax font loaded: {fonts}"

    # Plots: every image is an embedded data URI that decoded.
    imgs = attr('data-probe-imgs')
    for src_start, width in imgs:
        assert src_start.startswith('data:image/'), f"image not embedded: {src_start}"
        assert width > 0, f"image did not load: {src_start}"

    if nb.stem in SHOWCASE:                      # a whole-page screenshot, to look at
        height, min_imgs, maths = SHOWCASE[nb.stem]
        assert len(imgs) >= min_imgs, f"{page.name} shows {len(imgs)} images, expected at least {min_imgs}"
        assert not maths or dom.count('<mjx-container') > 0, f"{page.name} has no typeset equations"
        SHOTS.mkdir(parents=True, exist_ok=True)
        whole = SHOTS / (page.stem + '.png')
        flags = [f for f in FLAGS if not f.startswith('--window-size')] + [f'--window-size=1200,{height}']
        subprocess.run([CHROMIUM, *flags, f'--user-data-dir={site / "_chromium"}', f'--screenshot={whole}', probe.as_uri()],
                       capture_output=True, text=True, timeout=180)
        assert whole.exists() and whole.stat().st_size > 10_000, f"no screenshot {whole}"
    probe.unlink()
