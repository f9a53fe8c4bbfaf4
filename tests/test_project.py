"""Project-level checks: the library is in sync with the notebooks, the notebooks are clean, nbdev's doc
processing runs on every notebook, and every page has a Colab badge and install cell that resolve from settings.ini.
Each check runs on a copy of the project, so it never changes the working tree."""
import configparser, importlib, json, shutil, subprocess, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
IGNORE = shutil.ignore_patterns('.venv', 'venv', '.git', '_proc', '_docs', '__pycache__', '*.egg-info', 'checkpoints',
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


def test_docs_processing(project_copy):
    "nbdev's doc processing (what nbdev_docs runs before Quarto) succeeds on every notebook."
    _run([sys.executable, '-c', 'from nbdev.quarto import proc_nbs; proc_nbs()'], project_copy)
    out = {p.name for p in (project_copy / '_proc').glob('*.ipynb')}
    missing = sorted({p.name for p in NOTEBOOKS} - out)
    assert not missing, f"proc_nbs produced no page for {missing}"
    for f in ('_quarto.yml', 'nbdev.yml', 'styles.css', 'sidebar.yml'):
        assert (project_copy / '_proc' / f).exists(), f


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
    import ast
    bad = []
    for py in sorted((ROOT / 'cyclegan_edu').glob('*.py')):
        for node in ast.walk(ast.parse(py.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module or ''] if isinstance(node, ast.ImportFrom) else []
            bad += [f"{py.name}: {n}" for n in names if n.split('.')[0] in ('nbdev', 'execnb', 'fastcore')]
    assert not bad, bad


def test_ci_runs_make_test():
    "(README's Developing section gives `make demo` and `make test`: tests/test_readme.py checks it.)"
    assert (ROOT / '.ci' / 'run').read_text().strip().splitlines()[-1] == 'make test'
