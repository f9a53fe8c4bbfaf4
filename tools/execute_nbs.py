"""Execute notebooks in place so their figures and tables are stored for the docs site (used by deploy.yaml).

    python tools/execute_nbs.py [nbs/09_train.ipynb ...]     # default: every notebook in nbs/

Skips the cells nbdev_test skips (`#| eval: false`, `#| slow`, `#| cuda`, the nbdev_export cell), runs each notebook
in its own folder, stops at the first error, then runs nbdev_clean so the stored outputs stay clean.
"""
import re, subprocess, sys
from pathlib import Path

from execnb.shell import CaptureShell

SKIP = re.compile(r'^#\|\s*(eval:\s*false|slow|cuda)\b', re.M)


def skip(cell) -> bool:
    return cell.cell_type != 'code' or 'nbdev_export(' in cell.source or bool(SKIP.search(cell.source))


def main(paths):
    root = Path(__file__).resolve().parents[1]
    nbs = [Path(p) for p in paths] or sorted((root / 'nbs').glob('*.ipynb'))
    for nb in nbs:
        print(f'executing {nb.name}', flush=True)
        sh = CaptureShell(mpl_format='png')  # not retina: keeps each notebook well under 1 MB
        sh.execute(nb, nb, exc_stop=True, preproc=skip)
    subprocess.run([str(Path(sys.executable).parent / 'nbdev_clean')], cwd=root, check=True)


if __name__ == '__main__': main(sys.argv[1:])
