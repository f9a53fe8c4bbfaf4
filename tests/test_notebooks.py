"""Every page runs as a learner runs it in Colab: top to bottom, in a fresh kernel that starts in an empty folder and
cannot import nbdev, execnb or fastcore (tools/run_nbs.py). Cells are skipped as nbdev_test skips them
(`#| eval: false`, and the settings.ini tst_flags `#| slow`, `#| cuda`, `#| internet`), so this test covers what
nbdev_test covers, and more. Static checks make sure no page needs the development tools or cites team notes."""
import ast, json, re, sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'tools'))
import run_nbs  # noqa: E402

NOTEBOOKS = run_nbs.notebooks()
DEV = run_nbs.BLOCKED


@pytest.mark.parametrize('nb', NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_like_in_colab(nb):
    try: print(run_nbs.run_notebook(nb)); err = None
    except run_nbs.NotebookError as e: err = str(e)
    if err: pytest.fail(f'{err}\n(rerun: python tools/run_nbs.py {nb.relative_to(ROOT)})', pytrace=False)


# ---------------------------------------------------------------------------------------------------------------
# Static checks (fast, no kernel)

def _cells(nb_path):
    return json.loads(nb_path.read_text())['cells']


def _dev_imports(src: str) -> list[str]:
    "Top-level packages among nbdev/execnb/fastcore that this code imports."
    code = '\n'.join(l[:len(l) - len(l.lstrip())] + 'pass' if l.lstrip().startswith(('%', '!')) else l
                     for l in src.splitlines())
    try: tree = ast.parse(code)
    except SyntaxError:  # a cell magic: fall back to a line match
        return re.findall(rf"^\s*(?:from|import)\s+({'|'.join(DEV)})\b", src, flags=re.M)
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import): names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0: names.append(node.module or '')
    return [n.split('.')[0] for n in names if n.split('.')[0] in DEV]


def test_no_page_needs_the_development_tools():
    "Colab has no nbdev or execnb (and another fastcore): no code cell may import them or call nbdev_export."
    bad = []
    for nb in NOTEBOOKS:
        for i, c in enumerate(_cells(nb)):
            if c['cell_type'] != 'code': continue
            src = ''.join(c['source'])
            bad += [f'{nb.name} cell {i}: imports {m}' for m in sorted(set(_dev_imports(src)))]
            if re.search(r'\bnbdev_export\s*\(', src): bad.append(f'{nb.name} cell {i}: calls nbdev_export()')
    assert not bad, 'pages must run without nbdev, execnb and fastcore:\n' + '\n'.join(bad)


TEAM_NOTES = re.compile(r'\.\./shared\b|(?<![\w-])shared/[\w./-]*\.md\b')


def test_no_page_cites_team_notes():
    "Facts a page needs live in the repository (the Reference page), not in notes outside it."
    bad = []
    for nb in NOTEBOOKS:
        for i, c in enumerate(_cells(nb)):
            texts = [''.join(c['source'])] + [''.join(o.get('text', '')) + json.dumps(o.get('data', {}))
                                              for o in c.get('outputs', [])]
            bad += [f'{nb.name} cell {i}: {m.group(0)}' for t in texts for m in TEAM_NOTES.finditer(t)]
    readme = (ROOT / 'README.md').read_text()
    bad += [f'README.md: {m.group(0)}' for m in TEAM_NOTES.finditer(readme)]
    assert not bad, '\n'.join(bad)


def test_static_checks_detect():
    assert _dev_imports('#| hide\nfrom nbdev.showdoc import *\nfrom fastcore.test import *') == ['nbdev', 'fastcore']
    assert _dev_imports("import sys\nif 'google.colab' in sys.modules:\n    %pip install -q x\nimport execnb") == ['execnb']
    assert _dev_imports('%%time\nimport nbdev') == ['nbdev']
    assert _dev_imports('import torch\nfrom cyclegan_edu.core import nbdev_like') == []
    assert TEAM_NOTES.search('see `../shared/REFERENCE.md`') and TEAM_NOTES.search('shared/CHECKPOINTS.md')
    assert not TEAM_NOTES.search('a helper shared with the pretrained models')


# ---------------------------------------------------------------------------------------------------------------
# The runner itself, on small synthetic notebooks

def _write(path, *cells):
    nb = nbformat.v4.new_notebook(cells=list(cells))
    nb.metadata['kernelspec'] = {'name': 'python3', 'language': 'python', 'display_name': 'Python 3'}
    nbformat.write(nb, path)
    return path


def test_runner_is_colab_like(tmp_path):
    "Empty working folder, no nbdev/execnb/fastcore, this checkout's package, PNG figures, nbdev_test's skip rules."
    code, out = nbformat.v4.new_code_cell, nbformat.v4.new_output
    nb = _write(tmp_path / 'probe.ipynb',
        nbformat.v4.new_markdown_cell('# Probe\n> checks the kernel'),
        code("import os, cyclegan_edu\nassert os.listdir('.') == [], os.listdir('.')\nopen('made.txt', 'w').close()\n"
             "print(os.path.dirname(os.path.dirname(os.path.abspath(cyclegan_edu.__file__))))"),
        code("bad = []\nfor m in ('nbdev', 'execnb', 'fastcore', 'fastcore.test', 'nbdev.showdoc'):\n"
             "    try: __import__(m); bad.append(m)\n    except ModuleNotFoundError as e: assert 'not installed in Colab' in str(e)\n"
             "assert not bad, bad"),
        code("#| slow\nraise RuntimeError('slow cells are skipped')", outputs=[out('stream', name='stdout', text='kept\n')]),
        code("#| cuda\nraise RuntimeError('cuda cells are skipped')"),
        code("#|eval: false\nraise RuntimeError('eval: false cells are skipped')"),
        code("import matplotlib.pyplot as plt\nplt.plot([0, 1]); plt.show()"))
    res = run_nbs.run_notebook(nb, store=True)
    assert (res.run, dict(res.skipped)) == (3, {'slow': 1, 'cuda': 1, 'eval: false': 1}), res
    cells = nbformat.read(nb, as_version=4).cells
    assert cells[1].outputs[0]['text'].strip() == str(ROOT)                      # the package under test
    assert cells[3].outputs[0]['text'] == 'kept\n'                                 # skipped: stored output kept
    assert set(cells[6].outputs[0]['data']) == {'image/png', 'text/plain'}       # PNG, not retina/SVG
    assert not (tmp_path / 'made.txt').exists()                                    # ran elsewhere
    assert len(cells) == 7 and not any('_colab_like' in c.source for c in cells)   # the injected cell is not stored
    with pytest.raises(run_nbs.NotebookError, match='slow cells are skipped'):
        run_nbs.run_notebook(nb, flags=('slow',))


def test_runner_names_the_failing_cell(tmp_path):
    code = nbformat.v4.new_code_cell
    nb = _write(tmp_path / 'broken.ipynb', nbformat.v4.new_markdown_cell('# Broken\n> fails'), code('x = 1'),
                code('from fastcore.test import test_eq\ntest_eq(x, 1)'))
    before = nb.read_text()
    with pytest.raises(run_nbs.NotebookError) as e:
        run_nbs.run_notebook(nb, store=True)
    msg = str(e.value)
    assert 'broken.ipynb, cell 2' in msg and 'from fastcore.test import test_eq' in msg, msg
    assert "ModuleNotFoundError: No module named 'fastcore'" in msg and 'not installed in Colab' in msg, msg
    assert nb.read_text() == before  # a failing notebook is never written


def test_runner_reads_skip_rules_like_nbdev():
    assert run_nbs.tst_flags() == run_nbs.settings()['tst_flags'].split()
    d = run_nbs.directives('#| eval: false\n#|slow\n\n#| hide:\nx = 1\n#| cuda')
    assert d == {'eval:': ['false'], 'slow': [], 'hide': []}
    cell = nbformat.v4.new_code_cell('#| internet\nimport urllib')
    assert run_nbs.skip_reason(cell, {'internet'}) == 'internet' and run_nbs.skip_reason(cell, set()) is None
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell('# T\n> s\n\n- skip_exec: true')])
    assert run_nbs.frontmatter(nb)['skip_exec'] is True
