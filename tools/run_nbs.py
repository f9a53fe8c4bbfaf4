"""Run the notebooks the way a learner runs them in Colab, and optionally store their outputs for the docs site.

    python tools/run_nbs.py [NOTEBOOK ...] [--flags slow internet] [--store] [--timeout 600]

With no NOTEBOOK, every notebook in nbs/. Each notebook runs top to bottom in a fresh Python kernel that starts in
an EMPTY temporary folder (Colab's /content is not a checkout of this repository) and in which `nbdev`, `execnb` and
`fastcore` cannot be imported (Colab does not have nbdev; a page must teach with the standard library and torch).
Figures are stored as PNG at 1x, which keeps every notebook small.

The kernel imports the package from this checkout: the repository root goes first on PYTHONPATH, and PYTHONPATH
entries come before installed packages (including an editable install of another checkout).
OMP_NUM_THREADS and the rest of the environment are passed through.

Cells are skipped exactly as `nbdev_test` skips them: `#| eval: false`; cells marked with a flag listed in
settings.ini `tst_flags` (`#| slow`, `#| cuda`, `#| internet`) unless that flag is given with --flags; a whole
notebook whose frontmatter says `skip_exec: true`. (`nbdev_test` also skips a cell calling `nbdev_export()`; here it
runs and fails, as it would in Colab.)

--store writes the outputs back into each notebook and runs nbdev_clean on it. Cells that were skipped keep the
outputs stored before (GPU cells executed on a GPU machine, downloads run where the internet is reachable).
A notebook that fails is never written.

Import it to run one notebook: `run_notebook(path, store=False, flags=(), timeout=600)` returns a `Result`
(seconds, cells run, cells skipped and why) or raises `NotebookError` naming the cell and the exception.
"""
from __future__ import annotations

import argparse, configparser, copy, os, re, shutil, subprocess, sys, tempfile, time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCKED = ('nbdev', 'execnb', 'fastcore')

# Runs in the kernel before the notebook's first cell; never stored in the notebook.
COLAB_CELL = f'''\
def _colab_like():
    import importlib.abc, sys
    blocked = {BLOCKED!r}
    class NotInColab(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            top = name.partition('.')[0]
            if top in blocked:
                raise ModuleNotFoundError(f"No module named {{name!r}}: {{top}} is not installed in Colab, "
                                          "so a page must not import it", name=name)
    for m in [m for m in sys.modules if m.partition('.')[0] in blocked]: del sys.modules[m]
    sys.meta_path.insert(0, NotInColab())
    get_ipython().run_line_magic('config', "InlineBackend.figure_formats = ['png']")
_colab_like(); del _colab_like
'''


def settings(root: Path = ROOT) -> configparser.SectionProxy:
    "The [DEFAULT] section of settings.ini."
    cfg = configparser.ConfigParser(delimiters=['='], interpolation=configparser.BasicInterpolation())
    cfg.read(root / 'settings.ini')
    return cfg['DEFAULT']


def tst_flags(root: Path = ROOT) -> list[str]:
    "The flags (settings.ini `tst_flags`) whose cells are skipped unless enabled."
    return settings(root).get('tst_flags', '').split()


def notebooks(root: Path = ROOT) -> list[Path]:
    "Every notebook under nbs_path, leaving out names and folders that start with '_' or '.' (as nbdev does)."
    nbs = root / settings(root).get('nbs_path', 'nbs')
    return sorted(p for p in nbs.rglob('*.ipynb') if not any(s.startswith(('_', '.')) for s in p.relative_to(nbs).parts))


_DIRECTIVE = re.compile(r'^\s*#\s*\|(.*)$')
_CELL_MAGIC = re.compile(r'^\s*%%\w+')


def directives(source: str) -> dict[str, list[str]]:
    "The leading `#| name args` comments of a code cell, parsed as nbdev does: `#| eval: false` -> {'eval:': ['false']}."
    out = {}
    for line in source.splitlines():
        if not line.strip() or _CELL_MAGIC.match(line): continue
        m = _DIRECTIVE.match(line)
        if not m: break
        s = m.group(1)
        if s.strip().endswith(':'): s = s.replace(':', '')
        if ':' in s: s = s.replace(':', ': ')
        words = s.split()
        if words: out[words[0]] = words[1:]
    return out


def frontmatter(nb) -> dict:
    "The notebook's frontmatter, as nbdev reads it: YAML raw cells, and `- key: value` lines in the title cell."
    import yaml
    fm = {}
    for cell in nb.cells:
        src = cell.source
        if cell.cell_type == 'raw':
            m = re.match(r'^---\s*\n(.*?\S+.*?)\n---\s*$', src.strip() + '\n', flags=re.S)
            if m:
                try: fm.update(yaml.safe_load(m.group(1)) or {})
                except yaml.YAMLError: pass
        elif cell.cell_type == 'markdown' and 'title' not in fm and re.search(r'^#\s+\S', src, flags=re.M):
            fm['title'] = True
            items = re.findall(r'^-\s+(\S.*:.*\S)\s*$', src, flags=re.M)
            if items:
                try: fm.update(yaml.safe_load('\n'.join(items)) or {})
                except yaml.YAMLError: pass
    return fm


def skip_reason(cell, skip_flags) -> str | None:
    "Why nbdev_test would not run this code cell ('eval: false' or the flag), or None."
    d = directives(cell.source)
    if d.get('eval:', [''])[0].lower() == 'false': return 'eval: false'
    return next((f for f in d if f in skip_flags), None)


@dataclass
class Result:
    path: Path
    seconds: float = 0.0
    run: int = 0
    skipped: Counter = field(default_factory=Counter)  # reason -> number of cells
    stored: bool = False
    skipped_notebook: str = ''  # why the whole notebook was skipped, if it was

    def __str__(self):
        if self.skipped_notebook: return f'{self.path.name}: skipped ({self.skipped_notebook})'
        skipped = ', '.join(f'{n} {why}' for why, n in sorted(self.skipped.items()))
        return (f"{self.path.name}: {self.seconds:.1f} s ({self.run} cells run"
                + (f'; skipped: {skipped}' if skipped else '') + ('; outputs stored' if self.stored else '') + ')')


class NotebookError(Exception):
    "A notebook failed: the message names the notebook, the cell and the exception."


_ANSI = re.compile(r'\x1b\[[0-9;]*[A-Za-z]')


def _describe(path, index, cell, ename, evalue, traceback) -> str:
    src = cell.source.strip().splitlines()
    head = '\n'.join('    ' + l for l in src[:4]) + ('\n    ...' if len(src) > 4 else '')
    lines = [l for l in _ANSI.sub('', '\n'.join(traceback)).splitlines() if l.strip().strip('-')]
    cut = next((k for k, l in enumerate(lines) if '_colab_like' in l), None)  # the import blocker's own frame
    tail = (lines[:cut] if cut else lines)[-8:]
    cid = f" (id {cell['id']})" if cell.get('id') else ''
    return (f"{path.name}, cell {index}{cid}:\n{head}\n{ename}: {evalue}"
            + ('\n  traceback (last lines):\n' + '\n'.join('    ' + l for l in tail) if tail else ''))


def _kernel_manager(sockets: str):
    """A kernel manager whose kernel is this Python (whatever kernelspecs the user has installed), talking over
    local IPC sockets in the folder `sockets` (not TCP: nothing listens on a port, and no warning is printed)."""
    from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
    from jupyter_client.manager import KernelManager

    class ThisPython(KernelSpecManager):
        def get_kernel_spec(self, kernel_name, *args, **kw):
            return KernelSpec(argv=[sys.executable, '-m', 'ipykernel_launcher', '-f', '{connection_file}'],
                              display_name='Python 3', language='python', resource_dir='')
    return KernelManager(kernel_name='python3', kernel_spec_manager=ThisPython(), transport='ipc',
                         ip=os.path.join(sockets, 'kernel'), connection_file=os.path.join(sockets, 'kernel.json'))


def _kernel_env(root: Path) -> dict:
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join([str(root)] + [p for p in env.get('PYTHONPATH', '').split(os.pathsep) if p])
    env.pop('MPLBACKEND', None)  # the kernel's own inline backend, as in Colab
    return env


def run_notebook(path, store: bool = False, flags=(), timeout: int = 600, root: Path = ROOT) -> Result:
    """Run the notebook at `path` in a Colab-like kernel from an empty folder; `flags` enables cells marked with
    those settings.ini tst_flags; `timeout` is per cell, in seconds. With `store`, write the outputs back (skipped
    cells keep theirs) and nbdev_clean the file. Raises `NotebookError` on the first failing cell."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    path = Path(path).resolve()
    res = Result(path)
    nb = nbformat.read(path, as_version=4)
    known = tst_flags(root)
    unknown = sorted(set(flags) - set(known))
    if unknown: raise ValueError(f"unknown test flag(s) {unknown}: settings.ini tst_flags lists {known}")
    if str(frontmatter(nb).get('skip_exec', False)).lower() in ('true', '1', 'yes'):
        res.skipped_notebook = 'skip_exec in its frontmatter'; return res
    lang = nb.metadata.get('kernelspec', {}).get('language', 'python')
    if lang != 'python':
        res.skipped_notebook = f'{lang} notebook'; return res

    skip_flags = set(known) - set(flags)
    todo = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != 'code' or not cell.source.strip(): continue
        why = skip_reason(cell, skip_flags)
        if why: res.skipped[why] += 1
        else: todo.append(i)

    run_nb = copy.deepcopy(nb)
    run_nb.cells.insert(0, nbformat.v4.new_code_cell(COLAB_CELL, id='colab-like'))
    workdir = tempfile.mkdtemp(prefix='content-')  # an empty folder, like Colab's /content
    sockets = tempfile.mkdtemp(prefix='kernel-')
    client = NotebookClient(run_nb, km=_kernel_manager(sockets), timeout=timeout, startup_timeout=120,
                            record_timing=False, resources={'metadata': {'path': workdir}})
    start = time.perf_counter()
    try:
        with client.setup_kernel(env=_kernel_env(root), cleanup_kc=True):
            client.execute_cell(run_nb.cells[0], 0, store_history=False)
            for i in todo:
                cell = run_nb.cells[i + 1]
                try: client.execute_cell(cell, i + 1)
                except CellExecutionError as e:
                    err = next((o for o in cell.get('outputs', []) if o.get('output_type') == 'error'), {})
                    raise NotebookError(_describe(path, i, cell, err.get('ename', e.ename), err.get('evalue', e.evalue),
                                                  err.get('traceback', []))) from None
                except CellTimeoutError:
                    raise NotebookError(_describe(path, i, cell, 'Timeout', f'the cell ran longer than {timeout} s', [])) from None
                except DeadKernelError as e:
                    raise NotebookError(_describe(path, i, cell, 'DeadKernelError', f'the kernel died ({e})', [])) from None
                res.run += 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True); shutil.rmtree(sockets, ignore_errors=True)
    res.seconds = time.perf_counter() - start

    if store:
        for i in todo:
            nb.cells[i].outputs = run_nb.cells[i + 1].outputs
            nb.cells[i].execution_count = run_nb.cells[i + 1].execution_count
        nbformat.write(nb, path)
        _nbdev_clean(path, root)
        res.stored = True
    return res


def _nbdev_clean(path: Path, root: Path):
    exe = Path(sys.executable).parent / 'nbdev_clean'
    cmd = [str(exe)] if exe.exists() else [shutil.which('nbdev_clean') or 'nbdev_clean']
    subprocess.run(cmd + ['--fname', str(path)], cwd=root, check=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('notebooks', nargs='*', help='notebooks to run (default: every notebook in nbs/)')
    p.add_argument('--flags', nargs='*', default=[], metavar='FLAG',
                   help=f"also run cells marked with these test flags (settings.ini tst_flags: {' '.join(tst_flags())})")
    p.add_argument('--store', action='store_true', help='write the outputs into the notebooks, then nbdev_clean them')
    p.add_argument('--timeout', type=int, default=600, help='seconds one cell may run (default 600)')
    a = p.parse_args(argv)
    paths = [Path(n) for n in a.notebooks] or notebooks()
    missing = [str(n) for n in paths if not n.is_file()]
    if missing: p.error(f"no such notebook: {', '.join(missing)}")
    failed, start = [], time.perf_counter()
    for nb in paths:
        try: print(run_notebook(nb, store=a.store, flags=a.flags, timeout=a.timeout), flush=True)
        except NotebookError as e:
            failed.append(nb.name)
            print(f'FAILED {e}\n', file=sys.stderr, flush=True)
        except ValueError as e: p.error(str(e))
    total = time.perf_counter() - start
    if failed:
        print(f"{len(failed)} of {len(paths)} notebooks failed ({', '.join(failed)}); {total:.0f} s", file=sys.stderr)
        return 1
    print(f'{len(paths)} notebooks ran without errors in {total:.0f} s')
    return 0


if __name__ == '__main__': sys.exit(main())
