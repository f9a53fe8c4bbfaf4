"""Project-level checks: the library is in sync with the notebooks, the notebooks are clean, every page has a Colab
badge and install cell that resolve from settings.ini and a place in the site's sidebar, and the site's settings
point at the notebooks. Checks that run nbdev commands use a copy of the project, so they never change the working
tree. (nbdev's doc processing and the rendered pages are checked in test_preview.py.)"""
import ast, configparser, importlib, json, re, shutil, subprocess, sys, warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
IGNORE = shutil.ignore_patterns('.venv', 'venv', '.git', '_proc', '_docs', '_preview', '__pycache__', '*.egg-info', 'checkpoints',
                                'datasets', '.pytest_cache', '.ipynb_checkpoints', 'build', 'dist')
CFG = configparser.ConfigParser(delimiters=['=']); CFG.read(ROOT / 'settings.ini'); CFG = CFG['DEFAULT']
NOTEBOOKS = sorted((ROOT / 'nbs').glob('*.ipynb'))


@pytest.fixture(scope='module')
def project_copy(tmp_path_factory):
    dst = tmp_path_factory.mktemp('proj') / 'p'
    shutil.copytree(ROOT, dst, ignore=IGNORE)
    return dst


def _files(d: Path, pattern: str) -> dict:
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.glob(pattern)) if p.is_file()}


def _run(cmd, cwd):
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"{cmd[0]} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def _assert_command_changes_nothing(project, cmd, pattern, fix):
    before = _files(project, pattern)
    _run([BIN / cmd], project)
    after = _files(project, pattern)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"{cmd} changes {changed}: {fix}"


def test_library_in_sync_with_notebooks(project_copy):
    _assert_command_changes_nothing(project_copy, 'nbdev_export', 'cyclegan_edu/**/*.py',
                                    "the library is out of sync with nbs/; run nbdev_export and commit")


def test_notebooks_clean(project_copy):
    _assert_command_changes_nothing(project_copy, 'nbdev_clean', 'nbs/**/*.ipynb', "run nbdev_clean and commit")


@pytest.mark.parametrize('nb', NOTEBOOKS, ids=lambda p: p.name)
def test_page_has_badge_and_colab_install(nb):
    cells = json.loads(nb.read_text())['cells']
    first = ''.join(cells[0]['source'])
    assert first.startswith('# ') and '\n> ' in first, f"{nb.name}: the first cell must be '# Title' and '> summary'"
    badge = (f"https://colab.research.google.com/github/{CFG['user']}/{CFG['repo']}/blob/{CFG['branch']}/"
             f"{CFG['nbs_path']}/{nb.name}")
    text = ''.join(''.join(c['source']) for c in cells[:4])
    assert badge in text, f"{nb.name}: no Colab badge pointing to {badge}"
    assert f"git+{CFG['git_url']}.git" in text and "'google.colab' in sys.modules" in text, f"{nb.name}: no Colab install cell"


def test_notebooks_small():
    big = [(p.name, p.stat().st_size) for p in NOTEBOOKS if p.stat().st_size > 1_000_000]
    assert not big, f"notebooks over 1 MB: {big}"


def _colab_guard(node) -> bool:
    return isinstance(node, ast.If) and 'google.colab' in ast.unparse(node.test)


@pytest.mark.parametrize('nb', NOTEBOOKS, ids=lambda p: p.name)
def test_doc_build_runs_only_imports(nb):
    "nbdev's doc build executes every cell that imports anything: such a cell must hold imports only (and Colab guards)."
    from execnb.nbio import read_nb
    from nbdev.process import extract_directives
    from nbdev.processors import _do_eval  # the predicate nbdev_docs itself uses
    mixed = []
    for cell in read_nb(nb).cells:
        if cell.cell_type != 'code': continue
        cell.directives_ = extract_directives(cell, remove=False)
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')  # nbdev warns about exactly the cells this test reports
            if not _do_eval(cell) or cell.directives_.keys() & {'export', 'exports', 'exporti', 'exec_doc'}: continue
        code = [n for tree in cell.parsed_() for n in (tree.body if isinstance(tree, ast.Module) else [tree])]
        if not all(isinstance(n, (ast.Import, ast.ImportFrom)) or _colab_guard(n) for n in code):
            mixed.append(f"{cell.get('id')}: {cell.source.splitlines()[0][:60]!r}")
    assert not mixed, (f"{nb.name}: cells that import and also run code, which nbdev_docs would execute while building the "
                       f"site (move the imports into an import-only cell): {mixed}")


def test_console_scripts_resolve():
    for spec in CFG['console_scripts'].split():
        name, target = spec.split('=')
        mod, fn = target.split(':')
        assert callable(getattr(importlib.import_module(mod), fn)), spec


def test_public_imports():
    from cyclegan_edu.models import (GANLoss, ImagePool, NLayerDiscriminator, PixelDiscriminator, ResnetBlock,
                                     ResnetGenerator, define_D, define_G, init_weights)
    assert ResnetGenerator().model[26].out_channels == 3


def test_library_needs_no_dev_packages():
    "The installed library must not import nbdev, execnb or fastcore (users pip install it next to their own packages)."
    bad = []
    for py in sorted((ROOT / 'cyclegan_edu').glob('*.py')):
        for node in ast.walk(ast.parse(py.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module or ''] if isinstance(node, ast.ImportFrom) else []
            bad += [f"{py.name}: {n}" for n in names if n.split('.')[0] in ('nbdev', 'execnb', 'fastcore')]
    assert not bad, bad


def test_readme_developing_section_has_the_two_commands():
    "The two set-up commands live in README's `## Developing` section, and CI runs exactly `make test`."
    text = (ROOT / 'README.md').read_text()
    m = re.search(r'^## Developing\s*$(.*?)(?=^## |\Z)', text, flags=re.M | re.S)
    assert m, "README.md needs a '## Developing' section"
    assert 'make demo' in m.group(1) and 'make test' in m.group(1), "README's Developing section must show `make demo` and `make test`"
    assert (ROOT / '.ci' / 'run').read_text().strip().splitlines()[-1] == 'make test'


def _sidebar_files(entries) -> list:
    "Every file a Quarto sidebar `contents` list names (entries are file names, or dicts with href/contents)."
    out = []
    for e in entries if isinstance(entries, list) else [entries]:
        if isinstance(e, str): out.append(e)
        elif isinstance(e, dict):
            if 'href' in e: out.append(e['href'])
            if 'file' in e: out.append(e['file'])
            out += _sidebar_files(e.get('contents', []))
    return out


def test_sidebar_lists_every_page_once():
    import yaml
    side = yaml.safe_load((ROOT / 'nbs' / 'sidebar.yml').read_text())['website']['sidebar']['contents']
    listed = _sidebar_files(side)
    pages = [p.relative_to(ROOT / 'nbs').as_posix() for p in NOTEBOOKS]
    missing = [p for p in pages if p not in listed]
    twice = sorted({f for f in listed if listed.count(f) > 1})
    gone = [f for f in listed if not (ROOT / 'nbs' / f).exists()]
    assert not missing, f"nbs/sidebar.yml does not list {missing}: add each page to its section"
    assert not twice, f"nbs/sidebar.yml lists {twice} more than once"
    assert not gone, f"nbs/sidebar.yml lists files that do not exist: {gone}"
    assert CFG.getboolean('custom_sidebar'), \
        "settings.ini must say custom_sidebar = True, or nbdev_docs replaces nbs/sidebar.yml with a flat list"


def test_site_source_links_point_to_the_notebooks():
    "Quarto's 'View source' / 'Report an issue' links: the site renders from a copy of nbs/, so repo-subdir is nbs."
    import yaml
    site = yaml.safe_load((ROOT / 'nbs' / '_quarto.yml').read_text())['website']
    assert site.get('repo-subdir') == CFG['nbs_path'], "nbs/_quarto.yml: website: repo-subdir must be the notebooks' folder"
    assert {'source', 'issue'} <= set(site.get('repo-actions', []))
