"""Preview the documentation site without Quarto, and check every page in a headless browser.

    python tools/preview.py            # screenshots in _preview/ (or $CYCLEGAN_EDU_PREVIEW_DIR), problems printed

On a copy of the project:
1. nbdev's doc processing (`proc_nbs`, what `nbdev_docs` runs before Quarto) writes the pages into `_proc/`;
2. nbconvert turns each processed page into HTML, its stored outputs included, doing the part of Quarto's work the
   checks depend on: the title block from the frontmatter, the `#| echo/output/include` cell options,
   `output: asis`, Pandoc's heading ids, and links to `.ipynb` files or to the published site turned into links
   between the local pages;
3. the pages are served on 127.0.0.1 and opened one by one in headless Chromium, where a script added to each page
   records broken images, links, raw `#|` directives, `$` math left unbalanced in a paragraph, list item, table
   cell or heading (markdown broke it, e.g. a line starting with `+` inside inline math became a list), and error
   output (tracebacks, errors and warnings on stderr);
4. every internal link must reach an existing page, and its `#anchor` an element id in that page.

External links and images are not fetched (the browser resolves only 127.0.0.1). `python -m pytest tests/test_preview.py`
runs the same checks as a test.
"""
from __future__ import annotations

import argparse, concurrent.futures, html, http.server, json, os, re, shutil, subprocess, sys
import tempfile, threading, time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parents[1]
IGNORE = shutil.ignore_patterns('.venv', 'venv', '.git', '_proc', '_docs', '_preview', '__pycache__', '*.egg-info',
                                'checkpoints', 'datasets', '.pytest_cache', '.ipynb_checkpoints', 'build', 'dist')
CHROMIUM_NAMES = ('chromium', 'chromium-browser', 'google-chrome', 'google-chrome-stable', 'chrome')
REPORT_ATTR = 'data-preview-report'


def preview_dir() -> Path:
    "Where screenshots go: $CYCLEGAN_EDU_PREVIEW_DIR, or _preview/ at the repository root (git-ignored)."
    return Path(os.environ.get('CYCLEGAN_EDU_PREVIEW_DIR') or ROOT / '_preview')


def find_chromium() -> str | None:
    "The Chromium (or Chrome) binary: $CHROMIUM if set, else the first of CHROMIUM_NAMES on PATH."
    if os.environ.get('CHROMIUM'): return shutil.which(os.environ['CHROMIUM'])
    return next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)


MATHJAX_DIRS = ('/usr/share/javascript/mathjax', '/usr/share/mathjax')  # Debian/Ubuntu package libjs-mathjax
MATHJAX_URL = '/_mathjax/MathJax.js?config=TeX-AMS_CHTML-full,Safe'


def find_mathjax() -> Path | None:
    "A local MathJax 2 ($MATHJAX_DIR, or Debian's libjs-mathjax): with it the pages typeset their math, offline."
    dirs = [os.environ['MATHJAX_DIR']] if os.environ.get('MATHJAX_DIR') else MATHJAX_DIRS
    return next((Path(d) for d in dirs if (Path(d) / 'MathJax.js').is_file()), None)


# ---------------------------------------------------------------------------------------------------------------
# The script added to every served page. It runs at the end of <body>, before any math typesetting, and writes
# its findings as JSON into an attribute of <html>, which `chromium --dump-dom` prints.
CHECKER_JS = r"""
(function () {
  const report = {loaded: false, ids: [], links: [], broken_images: [], external_images: 0, problems: []};
  const cellOf = el => { const c = el && el.closest('.jp-Cell'); return c ? c.id.replace(/^cell-id=/, '') : ''; };
  const clip = s => { s = s.replace(/\s+/g, ' ').trim(); return s.length > 120 ? s.slice(0, 117) + '...' : s; };
  const add = (kind, el, text) => report.problems.push({kind: kind, cell: cellOf(el), text: clip(text)});
  const save = () => document.documentElement.setAttribute('%(attr)s', JSON.stringify(report));

  // Heading ids as Pandoc (Quarto) makes them: explicit {#id}, else lower case, only letters, digits, _ - . and
  // spaces, spaces to '-', nothing before the first letter; repeats get -1, -2, ...
  const pandocId = t => {
    let s = t.toLowerCase().replace(/[^\p{L}\p{N}\s_.\-]/gu, '').split(/\s+/).filter(Boolean).join('-');
    return s.replace(/^[^\p{L}]+/u, '') || 'section';
  };
  const heads = [...document.querySelectorAll('h1,h2,h3,h4,h5,h6')].filter(h => !h.classList.contains('title'));
  const used = new Set([...document.querySelectorAll('[id]')].filter(e => !heads.includes(e)).map(e => e.id));
  for (const h of heads) {
    const anchor = h.querySelector('a.anchor-link');
    const text = [...h.childNodes].filter(n => n !== anchor).map(n => n.textContent).join('');
    let id, m = text.match(/\s*\{#([^\s}]+)[^}]*\}\s*$/);
    if (m) {
      id = m[1];
      const last = [...h.childNodes].filter(n => n.nodeType === 3 && n.nodeValue.includes('{#')).pop();
      if (last) last.nodeValue = last.nodeValue.replace(/\s*\{#[^}]*\}\s*$/, '');
    } else {
      const base = pandocId(text); id = base;
      for (let k = 1; used.has(id); k++) id = base + '-' + k;
    }
    used.add(id); h.id = id;
    if (anchor) anchor.setAttribute('href', '#' + id);
  }
  report.ids = [...document.querySelectorAll('[id]')].map(e => e.id);
  report.links = [...document.querySelectorAll('a[href]')].map(a => ({href: a.getAttribute('href'), abs: a.href, cell: cellOf(a)}));

  // Raw `#|` cell directives: at the start of a line of code or output, or anywhere in prose.
  const CODE = 'pre,code,kbd,samp,script,style,textarea';
  for (const pre of document.querySelectorAll('pre'))
    for (const line of pre.textContent.split('\n'))
      if (/^\s*#\s*\|/.test(line)) add('raw #| directive', pre, line);
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode())
    if (/#\s*\|/.test(n.nodeValue) && !n.parentElement.closest(CODE)) add('raw #| directive', n.parentElement, n.nodeValue);

  // Math: a `$` that pairs with no other, paired as Pandoc pairs them (an opening `$` has a non-space after it, a
  // closing one a non-space before it and no digit after it), next to TeX (a command like \alpha, or _{ ^{):
  // math that markdown split, e.g. at a line starting with `+`, which made a list item. `$HOME` or `$5` pass.
  // Only the text a block element holds itself counts (not code, not nested blocks).
  const BLOCKS = 'p,li,td,th,h1,h2,h3,h4,h5,h6,dt,dd,figcaption';
  const NOMATH = CODE + ',.MathJax,.MathJax_Preview,.MathJax_Display,mjx-container';
  const TEX = /\\[A-Za-z]+|[_^]\{/;
  const strayMath = text => {
    const t = text.replace(/\\\$/g, '  ').replace(/\$\$[\s\S]*?\$\$/g, m => ' '.repeat(m.length));
    const stray = []; let open = -1, openFrom = 0, lastEnd = 0;
    for (let i = 0; i < t.length; i++) {
      if (t[i] !== '$') continue;
      const prev = t[i - 1] || ' ', next = t[i + 1] || ' ';
      if (open < 0) { if (/\S/.test(next)) { open = i; openFrom = lastEnd; } else stray.push([i, lastEnd]); }
      else if (/\S/.test(prev) && !/[0-9]/.test(next)) { open = -1; lastEnd = i + 1; }
    }
    if (open >= 0) stray.push([open, openFrom]);
    return stray.some(([k, from]) => {
      const nxt = t.indexOf('$', k + 1);
      return TEX.test(t.slice(from, k)) || TEX.test(t.slice(k + 1, nxt < 0 ? t.length : nxt));
    });
  };
  for (const el of document.querySelectorAll(BLOCKS)) {
    let own = '';
    const w = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
    for (let n = w.nextNode(); n; n = w.nextNode()) {
      const p = n.parentElement;
      if (p.closest(NOMATH) || p.closest(BLOCKS) !== el) continue;
      own += n.nodeValue;
    }
    if (own.includes('$') && strayMath(own)) add('unbalanced $ math in <' + el.tagName.toLowerCase() + '>', el, own);
  }

  // Error output: tracebacks anywhere in an output; errors and warnings on stderr.
  for (const o of document.querySelectorAll('.jp-OutputArea-output, .cell-output, .output_subarea')) {
    const t = o.textContent;
    const stderr = o.getAttribute('data-mime-type') === 'application/vnd.jupyter.stderr' ||
                   o.classList.contains('cell-output-stderr') || o.classList.contains('output_stderr');
    const line = re => (t.split('\n').find(l => re.test(l)) || t);
    if (/Traceback \(most recent call last\)/.test(t)) add('traceback in output', o, line(/\w+(Error|Exception)\b/));
    else if (stderr && /^\s*[\w.]*(Error|Exception)\b.*:/m.test(t)) add('error on stderr', o, line(/(Error|Exception)\b/));
    else if (stderr && /\w*Warning: /.test(t)) add('warning on stderr', o, line(/Warning: /));
  }
  for (const img of document.images) img.loading = 'eager';
  save();

  window.addEventListener('load', () => {
    for (const img of document.images) {
      const src = img.getAttribute('src') || '';
      const local = src.startsWith('data:') || new URL(img.src, location.href).origin === location.origin;
      if (!local) { report.external_images++; continue; }
      if (img.naturalWidth === 0)
        report.broken_images.push({src: src.startsWith('data:') ? src.slice(0, 40) + '... (' + src.length + ' chars)' : src,
                                   cell: cellOf(img)});
    }
    const done = () => {
      for (const e of document.querySelectorAll('.MathJax_Error, .mjx-merror, merror'))
        add('TeX error', e, (e.getAttribute('title') || '') + ' ' + e.textContent);
      report.loaded = true; save();
    };
    if (window.MathJax && MathJax.Hub && MathJax.Hub.Queue) MathJax.Hub.Queue(done); else done();
  });
})();
""" % {'attr': REPORT_ATTR}


@dataclass
class Page:
    html: str                                   # file name in the served folder, e.g. 'train.html'
    label: str = ''                             # how problems name the page, e.g. '09_train.ipynb (train.html)'
    cells: dict = field(default_factory=dict)   # cell id in the HTML -> how problems name that cell
    shot: str = ''                              # screenshot file name without .png (default: the html name's stem)

    def where(self, cell_id: str) -> str:
        return f"{self.label or self.html}" + (f", {self.cells.get(cell_id, f'cell id {cell_id}')}" if cell_id else '')


# ---------------------------------------------------------------------------------------------------------------
# Serving and opening pages

def _handler(folder: Path, mathjax: Path | None = None):
    script = f'<script>{CHECKER_JS}</script>'.encode()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw): super().__init__(*a, directory=str(folder), **kw)

        def translate_path(self, path):
            p = unquote(urlsplit(path).path)
            if mathjax and p.startswith('/_mathjax/'): return str(mathjax / p[len('/_mathjax/'):])
            return super().translate_path(path)

        def do_GET(self):
            path = unquote(urlsplit(self.path).path)
            f = (folder / path.lstrip('/')).resolve()
            if path.endswith('.html') and f.is_file() and f.is_relative_to(folder.resolve()):
                body = f.read_bytes()
                i = body.rfind(b'</body>')
                body = body[:i] + script + body[i:] if i >= 0 else body + script
                self.send_response(200)
                self.send_header('Content-Type', 'text/html; charset=utf-8')
                self.send_header('Content-Length', str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            else: super().do_GET()

        def log_message(self, *a): pass
    return Handler


def open_page(chromium: str, url: str, screenshot: Path | None = None, timeout: int = 90) -> tuple[dict | None, str]:
    "Open `url` in headless Chromium; return (the checker's report or None, Chromium's error text)."
    profile = tempfile.mkdtemp(prefix='chromium-profile-')
    cmd = [chromium, '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--disable-background-networking',
           '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-extensions', '--hide-scrollbars',
           '--mute-audio', f'--user-data-dir={profile}', '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1',
           '--window-size=1280,900', '--virtual-time-budget=5000', '--dump-dom']
    if screenshot: cmd.append(f'--screenshot={screenshot}')
    try:
        r = subprocess.run(cmd + [url], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f'Chromium did not finish within {timeout} s'
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    m = re.search(REPORT_ATTR + r'="([^"]*)"', r.stdout)
    if not m:
        err = [l for l in r.stderr.splitlines() if 'ERROR' in l and 'dbus' not in l.lower()][-3:]
        return None, f'exit status {r.returncode}' + (': ' + ' | '.join(err) if err else '')
    return json.loads(html.unescape(m.group(1))), ''


def check_pages(folder, pages: list[Page], screenshots: Path | None = None, chromium: str | None = None,
                workers: int = 2) -> list[str]:
    """Serve `folder` on 127.0.0.1, open every page in headless Chromium (`workers` at a time) and return the
    problems found, each naming the page (and the cell, where known). Screenshots go to `screenshots`, if given."""
    folder = Path(folder)
    chromium = chromium or find_chromium()
    if not chromium: raise FileNotFoundError('no Chromium binary found (' + ', '.join(CHROMIUM_NAMES) + ')')
    if screenshots: Path(screenshots).mkdir(parents=True, exist_ok=True)
    httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _handler(folder, find_mathjax()))
    threading.Thread(target=httpd.serve_forever, kwargs={'poll_interval': 0.05}, daemon=True).start()
    base = f'http://127.0.0.1:{httpd.server_address[1]}/'
    try:
        def one(page):
            shot = Path(screenshots) / ((page.shot or Path(page.html).stem) + '.png') if screenshots else None
            return open_page(chromium, base + page.html, shot)
        with concurrent.futures.ThreadPoolExecutor(workers) as ex:
            results = list(ex.map(one, pages))
    finally:
        httpd.shutdown(); httpd.server_close()

    problems, ids = [], {}
    for page, (rep, err) in zip(pages, results):
        if rep is None: problems.append(f'{page.where("")}: the page did not load ({err})'); continue
        ids[page.html] = set(rep['ids'])
        if not rep['loaded']: problems.append(f'{page.where("")}: the load event never came (a resource hangs)')
        for img in rep['broken_images']: problems.append(f"{page.where(img['cell'])}: broken image {img['src']}")
        for p in rep['problems']: problems.append(f"{page.where(p['cell'])}: {p['kind']}: {p['text']}")
    for page, (rep, _) in zip(pages, results):
        if rep is None: continue
        seen = set()
        for link in rep['links']:
            u = urlsplit(link['abs'])
            if u.scheme not in ('http', 'https') or u.netloc != urlsplit(base).netloc: continue
            target = unquote(u.path).lstrip('/') or 'index.html'
            if target.endswith('/'): target += 'index.html'
            key = (target, u.fragment)
            if key in seen: continue
            seen.add(key)
            if not (folder / target).is_file():
                problems.append(f"{page.where(link['cell'])}: link to a missing page: {link['href']}")
            elif u.fragment and target.endswith('.html'):
                if target not in ids: continue  # a page that was not checked (or did not load: reported above)
                if unquote(u.fragment) not in ids[target]:
                    problems.append(f"{page.where(link['cell'])}: link to a missing anchor: {link['href']}")
    return problems


# ---------------------------------------------------------------------------------------------------------------
# Building the local site

def copy_project(dst: Path, root: Path = ROOT) -> Path:
    "Copy the project (without virtual environments, git data and build outputs) to `dst`."
    shutil.copytree(root, dst, ignore=IGNORE)
    return dst


def _tag_cells(nbs: Path):
    "Record each cell's index in its metadata, so a problem in a processed page can name the notebook's cell."
    for p in nbs.rglob('*.ipynb'):
        nb = json.loads(p.read_text())
        for i, c in enumerate(nb['cells']): c.setdefault('metadata', {})['preview_cell'] = i
        p.write_text(json.dumps(nb, indent=1))


def _site_url(project: Path) -> str:
    m = re.search(r'site-url:\s*"?([^"\s]+)', (project / 'nbs' / 'nbdev.yml').read_text()) \
        if (project / 'nbs' / 'nbdev.yml').exists() else None
    return m.group(1).rstrip('/') + '/' if m else ''


def _html_name(ipynb_name: str) -> str:
    "nbdev's page name for a notebook: '09_train.ipynb' -> 'train.html'."
    return re.sub(r'^\d+[a-zA-Z0-9]*_', '', ipynb_name.lower()).rsplit('.', 1)[0] + '.html'


_OPTION = re.compile(r'^\s*#\|\s*([\w-]+)\s*:\s*(.*?)\s*$')


def _quarto_like(nb, page_label):
    """Do to a processed notebook what Quarto does before rendering, as far as the checks need: returns the notebook
    (changed in place) and {cell id: label} for naming cells in problems."""
    import nbformat, yaml
    cells, labels, last = [], {}, None
    for c in nb.cells:
        idx = c.metadata.pop('preview_cell', None)
        if idx is not None: last = idx
        src = c.source
        if c.cell_type == 'raw':
            m = re.match(r'^---\s*\n(.*?)\n---\s*$', src.strip() + '\n', flags=re.S)
            if m:  # the frontmatter: Quarto's title block
                fm = yaml.safe_load(m.group(1)) or {}
                head = f'<h1 class="title">{html.escape(str(fm.get("title", "")))}</h1>'
                if fm.get('description'): head += f'\n\n<p class="description">{html.escape(str(fm["description"]))}</p>'
                c = nbformat.v4.new_markdown_cell(head, id=c.get('id') or 'title')
                labels[c.id] = 'the title block (first cell)'
                cells.append(c); continue
        if c.cell_type == 'markdown':
            c.source = re.sub(r'(\]\([^)\s]*\))\{[^}\n]*\}', r'\1', src)  # Pandoc link attributes: {target="_blank"}
            labels[c.id] = f'cell {idx}' if idx is not None else f'a cell after cell {last}'
            cells.append(c); continue
        if c.cell_type != 'code': cells.append(c); continue
        lines, opts = src.splitlines(), {}
        while lines and _OPTION.match(lines[0]):
            k, v = _OPTION.match(lines.pop(0)).groups()
            try: opts[k] = yaml.safe_load(v)
            except yaml.YAMLError: opts[k] = v
        c.source = '\n'.join(lines)
        if idx is not None: labels[c.id] = f'cell {idx}'
        else:
            call = re.match(r'\s*(show_doc\(.*?\))', c.source)
            labels[c.id] = f"nbdev's {call.group(1) if call else 'generated cell'} after cell {last}"
        if opts.get('include') is False: continue
        if opts.get('output') is False: c.outputs = []
        if opts.get('echo') is False: c.metadata.setdefault('tags', []).append('remove_input')
        if opts.get('output') == 'asis':
            md = ''.join(o.get('data', {}).get('text/markdown', '') if 'data' in o else o.get('text', '') for o in c.outputs)
            md = re.sub(r'(\]\([^)\s]*\))\{[^}\n]*\}', r'\1', md)
            if opts.get('echo') is not False:
                c.outputs = []; cells.append(c)
            mdc = nbformat.v4.new_markdown_cell(md, id=c.id + ('-output' if opts.get('echo') is not False else ''))
            labels[mdc.id] = labels[c.id] + ' (its output)'
            cells.append(mdc); continue
        cells.append(c)
    nb.cells = cells
    return nb, labels


def _error_outputs(nb, labels, label) -> list[str]:
    return [f"{label}, {labels.get(c.id, 'a cell')}: error output: {o.get('ename')}: {o.get('evalue')}"
            for c in nb.cells if c.cell_type == 'code' for o in c.get('outputs', []) if o.get('output_type') == 'error']


def _rewrite_links(text: str, site_url: str, pages: dict) -> str:
    "Links as Quarto writes them: to the published site -> relative; `x.ipynb#a` -> the page made from x.ipynb."
    def fix(m):
        url = html.unescape(m.group(2))
        if site_url and url.startswith(site_url): url = url[len(site_url):] or 'index.html'
        u = urlsplit(url)
        if not u.scheme and not u.netloc and u.path.endswith('.ipynb'):
            name = Path(u.path).name
            url = str(Path(u.path).with_name(pages.get(name, _html_name(name)))) + (f'#{u.fragment}' if u.fragment else '')
        return f'{m.group(1)}="{html.escape(url)}"'
    return re.sub(r'\b(href)="([^"]*)"', fix, text)


@dataclass
class Site:
    folder: Path                                   # the served folder (the processed pages and their files)
    pages: list                                    # Page for every notebook
    problems: list = field(default_factory=list)   # found while building (error outputs)
    seconds: dict = field(default_factory=dict)    # step -> seconds


def build_site(project: Path) -> Site:
    "Run nbdev's doc processing in `project` (a copy: it is changed) and write an HTML page for each notebook."
    import nbformat
    from nbconvert import HTMLExporter
    from traitlets.config import Config
    project = Path(project)
    t0 = time.perf_counter()
    _tag_cells(project / 'nbs')
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(project)] + [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p]))
    r = subprocess.run([sys.executable, '-c', 'from nbdev.quarto import proc_nbs; proc_nbs()'], cwd=project, env=env,
                       capture_output=True, text=True, timeout=600)
    if r.returncode: raise RuntimeError(f'proc_nbs failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}')
    t1 = time.perf_counter()
    proc = project / '_proc'
    nbs = {p: nbformat.read(p, as_version=4) for p in sorted(proc.rglob('*.ipynb')) if '.ipynb_checkpoints' not in p.parts}
    out_names = {}
    for p, nb in nbs.items():
        fm = next((c.source for c in nb.cells if c.cell_type == 'raw'), '')
        m = re.search(r'^output-file:\s*(\S+)', fm, flags=re.M)
        out_names[p.name] = m.group(1) if m else _html_name(p.name)
    cfg = Config()
    cfg.TagRemovePreprocessor.enabled = True
    cfg.TagRemovePreprocessor.remove_input_tags = ('remove_input',)
    exporter = HTMLExporter(config=cfg, template_name='lab')
    if find_mathjax(): exporter.mathjax_url = MATHJAX_URL  # served by check_pages
    site_url, pages, problems = _site_url(project), [], []
    for p, nb in nbs.items():
        label = f'{p.relative_to(proc).as_posix()} ({out_names[p.name]})'
        nb, labels = _quarto_like(nb, label)
        problems += _error_outputs(nb, labels, label)
        body, _ = exporter.from_notebook_node(nb)
        out = p.with_name(out_names[p.name])
        out.write_text(_rewrite_links(body, site_url, out_names))
        pages.append(Page(out.relative_to(proc).as_posix(), label, labels, p.stem))
    return Site(proc, pages, problems, {'proc_nbs': t1 - t0, 'nbconvert': time.perf_counter() - t1})


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--out', type=Path, default=None, help='folder for the screenshots and the site '
                   '(default: $CYCLEGAN_EDU_PREVIEW_DIR or _preview/)')
    a = p.parse_args(argv)
    chromium = find_chromium()
    if not chromium: p.error('no Chromium found: install it (Debian/Ubuntu: apt-get install chromium)')
    out = a.out or preview_dir()
    with tempfile.TemporaryDirectory() as tmp:
        site = build_site(copy_project(Path(tmp) / 'project'))
        t = time.perf_counter()
        problems = site.problems + check_pages(site.folder, site.pages, out, chromium)
        shutil.rmtree(out / 'site', ignore_errors=True)
        shutil.copytree(site.folder, out / 'site', ignore=shutil.ignore_patterns('*.ipynb'))
    print(f"{len(site.pages)} pages: proc_nbs {site.seconds['proc_nbs']:.0f} s, nbconvert {site.seconds['nbconvert']:.0f} s, "
          f"browser {time.perf_counter() - t:.0f} s")
    print(f'screenshots: {out}/*.png; pages: {out}/site/')
    for pr in problems: print('PROBLEM', pr)
    return 1 if problems else 0


if __name__ == '__main__': sys.exit(main())
