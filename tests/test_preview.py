"""The documentation site, previewed without Quarto and checked in a real browser (tools/preview.py).

On a copy of the project, nbdev's doc processing writes the pages, nbconvert renders them with their stored outputs,
and headless Chromium opens each one: no page may fail to load, show a broken image, link to a missing page or
anchor, show a raw `#|` directive, leave `$` math split by markdown, or show a traceback, error or warning.
Screenshots of every page go to $CYCLEGAN_EDU_PREVIEW_DIR (default: _preview/, git-ignored).
The last tests feed the checker small broken pages, to show that each check really fails."""
import base64, struct, sys, zlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'tools'))
import preview  # noqa: E402

CHROMIUM = preview.find_chromium()
needs_chromium = pytest.mark.skipif(
    not CHROMIUM, reason='no Chromium or Chrome binary found (chromium, chromium-browser, google-chrome); '
                         'install one (Debian/Ubuntu: apt-get install chromium; `make test` does it when run as root)')


@pytest.fixture(scope='module')
def site(tmp_path_factory):
    return preview.build_site(preview.copy_project(tmp_path_factory.mktemp('site') / 'project'))


def test_docs_processing(site):
    "nbdev's doc processing (what nbdev_docs runs before Quarto) makes a page of every notebook."
    nbs = {p.name for p in (ROOT / 'nbs').glob('*.ipynb')}
    made = {p.name for p in site.folder.glob('*.ipynb')}
    assert not nbs - made, f'proc_nbs produced no page for {sorted(nbs - made)}'
    for f in ('_quarto.yml', 'nbdev.yml', 'styles.css', 'sidebar.yml'):
        assert (site.folder / f).exists(), f
    assert len(site.pages) == len(made)


@needs_chromium
def test_pages_render_cleanly(site, capsys):
    shots = preview.preview_dir()
    problems = site.problems + preview.check_pages(site.folder, site.pages, shots, CHROMIUM)
    with capsys.disabled():
        print(f'\n  site preview: {len(site.pages)} screenshots in {shots}/')
    assert not problems, f'{len(problems)} problems in the rendered pages:\n' + '\n'.join(problems)


# ---------------------------------------------------------------------------------------------------------------
# The checker, on synthetic pages: a clean one passes, and each kind of breakage fails on its own page.

def _png() -> bytes:
    "A valid 1x1 PNG."
    def chunk(kind, data): return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))
    return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', 1, 1, 8, 2, 0, 0, 0))
            + chunk(b'IDAT', zlib.compress(b'\x00\xff\x00\x00')) + chunk(b'IEND', b''))


SYNTHETIC = {
    'good.html': r'''<h1 class="title">Good page</h1><h2>A Section</h2>
        <p>Inline $\alpha + \beta$, display $$\sum_i x_i^2$$, a price of $5 and $HOME stay fine.</p>
        <img src="ok.png"><img src="DATA_PNG">
        <img src="https://example.invalid/badge.svg">
        <a href="other.html#the-part">there</a> <a href="#a-section">here</a> <a href="https://example.invalid/x">out</a>
        <pre>x = 1  # a comment | with a bar</pre><p>Inline code <code>#| export</code> explains a directive.</p>
        <div class="jp-OutputArea-output" data-mime-type="application/vnd.jupyter.stderr"><pre>100%|###| 3/3</pre></div>''',
    'other.html': '<h2>The part</h2><p>Target page.</p>',
    'broken_image.html': '<p>An image:</p><img src="missing.png">',
    'broken_data_image.html': '<img src="data:image/png;base64,AAAA">',
    'missing_anchor.html': '<a href="other.html#no-such-part">there</a>',
    'missing_page.html': '<a href="gone.html">gone</a>',
    'raw_directive_code.html': '<pre>#| hide\nx = 1</pre>',
    'raw_directive_prose.html': '<p>#| export</p>',
    'split_math.html': r'<p>The loss $\mathcal L = a</p><ul><li>b\lambda_{idt}$ and more</li></ul>',
    'traceback.html': '<div class="jp-OutputArea-output"><pre>Traceback (most recent call last):\n  File "x", line 1\n'
                      'ZeroDivisionError: division by zero</pre></div>',
    'warning.html': '<div class="jp-OutputArea-output" data-mime-type="application/vnd.jupyter.stderr">'
                    '<pre>x.py:6: UserWarning: Detected call of `lr_scheduler.step()` first</pre></div>',
}
EXPECTED = {  # page -> the words its (only) problem must contain
    'broken_image.html': 'broken image missing.png', 'broken_data_image.html': 'broken image data:image/png',
    'missing_anchor.html': 'missing anchor: other.html#no-such-part', 'missing_page.html': 'missing page: gone.html',
    'raw_directive_code.html': 'raw #| directive: #| hide', 'raw_directive_prose.html': 'raw #| directive: #| export',
    'split_math.html': 'unbalanced $ math', 'traceback.html': 'traceback in output: ZeroDivisionError',
    'warning.html': 'warning on stderr', 'not_served.html': 'did not load',
}


@needs_chromium
def test_checker_detects_each_problem(tmp_path):
    for name, body in SYNTHETIC.items():
        body = body.replace('DATA_PNG', 'data:image/png;base64,' + base64.b64encode(_png()).decode())
        (tmp_path / name).write_text(f'<!DOCTYPE html><html><head><meta charset="utf-8"></head><body>{body}</body></html>')
    (tmp_path / 'ok.png').write_bytes(_png())
    pages = [preview.Page(n, n) for n in [*SYNTHETIC, 'not_served.html']]
    problems = preview.check_pages(tmp_path, pages, tmp_path / 'shots', CHROMIUM)
    for name in ('good.html', 'other.html'):
        assert not [p for p in problems if p.startswith(name)], problems
    for name, words in EXPECTED.items():
        found = [p for p in problems if p.startswith(name + ':')]
        assert len(found) == 1 if name != 'split_math.html' else len(found) == 2, (name, found)
        assert all(words in p for p in found), (name, words, found)
    assert (tmp_path / 'shots' / 'good.png').stat().st_size > 1000


@needs_chromium
@pytest.mark.skipif(not preview.find_mathjax(), reason='no local MathJax (Debian package libjs-mathjax)')
def test_checker_detects_tex_errors(tmp_path):
    head = ('<script type="text/x-mathjax-config">MathJax.Hub.Config({tex2jax: {inlineMath: [["$", "$"]]}});</script>'
            f'<script src="{preview.MATHJAX_URL}"></script>')
    (tmp_path / 'tex.html').write_text(f'<html><head>{head}</head><body><p>Good $x^2$, bad $\\frac{{a$.</p></body></html>')
    problems = preview.check_pages(tmp_path, [preview.Page('tex.html')], None, CHROMIUM)
    assert len(problems) == 1 and 'TeX error' in problems[0], problems


def test_pandoc_style_names():
    assert preview._html_name('09_train.ipynb') == 'train.html' and preview._html_name('index.ipynb') == 'index.html'
    pages = {'09_train.ipynb': 'train.html'}
    html = '<a href="09_train.ipynb#the-loop">x</a> <a href="https://cyclegan-edu.github.io/cyclegan_edu/core.html#to_unit">y</a>'
    out = preview._rewrite_links(html, 'https://cyclegan-edu.github.io/cyclegan_edu/', pages)
    assert out == '<a href="train.html#the-loop">x</a> <a href="core.html#to_unit">y</a>'
