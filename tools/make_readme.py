"""Write README.md from nbs/index.ipynb, in the spirit of `nbdev_readme` (which needs Quarto).

    python tools/make_readme.py           # write README.md and the figures it shows (nbs/images/index_*.png)
    python tools/make_readme.py --check   # only compare; exit 1 if README.md or those figures are out of date

How cells become Markdown:
- markdown cells are copied; Quarto's ```{mermaid} fences become ```mermaid (GitHub draws those), and relative
  links such as `08_toy.ipynb` become `nbs/08_toy.ipynb` so they work from the repository's front page;
- code cells become ```python blocks (without their `#|` directive lines), followed by their stored outputs:
  short text as a plain block, Markdown (tables) as it is, PNG figures written to nbs/images/index_<cell id>.png
  and linked, so the README never holds base64 data;
- `#| hide` and `#| include: false` cells are left out; for `#| slow` and `#| echo: false` cells only the stored
  outputs are kept (the code behind a slow cell is on the page itself); `#| output: false` drops the outputs.
Only the standard library is used: no Quarto, nbdev or torch needed.
"""
import base64, json, re, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = 'nbs/index.ipynb'
IMAGES = 'nbs/images'
IMAGE_PREFIX = 'index_'
HEADER = ('<!-- README.md is generated from nbs/index.ipynb by tools/make_readme.py: edit the notebook, '
          'then run `python tools/make_readme.py`. -->')
MAX_TEXT_LINES = 20  # longer text outputs are left out of the README

_DIRECTIVE = re.compile(r'^\s*#\|\s*(.*?)\s*$')
_LINK = re.compile(r'(\]\()(?![a-zA-Z][\w+.-]*:|/|#)([^)\s]+)(\))')  # ](relative-target)


def _text(v) -> str: return ''.join(v) if isinstance(v, list) else v


def directives(source: str) -> set:
    "The cell's `#|` directives, normalised: 'hide', 'slow', 'echo: false', …"
    out = set()
    for line in source.splitlines():
        m = _DIRECTIVE.match(line)
        if m: out.add(re.sub(r'\s*:\s*', ': ', m.group(1).lower()))
    return out


def _markdown(source: str) -> str:
    source = re.sub(r'^```\{mermaid\}', '```mermaid', source, flags=re.M)
    return _LINK.sub(lambda m: f'{m.group(1)}nbs/{m.group(2)}{m.group(3)}', source)


def _code(source: str) -> str:
    return '\n'.join(l for l in source.splitlines() if not _DIRECTIVE.match(l)).strip('\n')


def _outputs(cell: dict, images: dict) -> list:
    "Markdown blocks for a code cell's stored outputs; PNGs are added to `images` (path -> bytes)."
    parts, stream, n_img = [], [], 0
    def flush_text(text):
        text = text.strip('\n')
        if text and len(text.splitlines()) <= MAX_TEXT_LINES: parts.append(f'```\n{text}\n```')
    for o in cell.get('outputs', []):
        kind = o.get('output_type')
        if kind == 'stream':
            if o.get('name') == 'stdout': stream.append(_text(o.get('text', '')))
            continue
        if stream: flush_text(''.join(stream)); stream = []
        data = o.get('data', {})
        if kind not in ('execute_result', 'display_data'): continue  # errors are never shown
        if 'image/png' in data:
            n_img += 1
            name = f"{IMAGE_PREFIX}{cell.get('id', 'cell')}{'' if n_img == 1 else f'_{n_img}'}.png"
            images[f'{IMAGES}/{name}'] = base64.b64decode(_text(data['image/png']))
            parts.append(f'![]({IMAGES}/{name})')
        elif 'text/markdown' in data: parts.append(_text(data['text/markdown']).strip('\n'))
        elif 'text/plain' in data: flush_text(_text(data['text/plain']))
    if stream: flush_text(''.join(stream))
    return parts


def render(root: Path = ROOT) -> tuple:
    "README text and the figures it links to ({relative path: PNG bytes}), from the notebook's sources and stored outputs."
    nb = json.loads((Path(root) / NOTEBOOK).read_text(encoding='utf-8'))
    parts, images = [HEADER], {}
    for cell in nb['cells']:
        src = _text(cell.get('source', ''))
        if cell['cell_type'] == 'markdown':
            if src.strip(): parts.append(_markdown(src).strip('\n'))
            continue
        if cell['cell_type'] != 'code': continue
        d = directives(src)
        if d & {'hide', 'include: false'}: continue
        code = _code(src)
        if code and not d & {'slow', 'echo: false'}: parts.append(f'```python\n{code}\n```')
        if 'output: false' not in d: parts += _outputs(cell, images)
    return '\n\n'.join(parts) + '\n', images


def stale_images(root: Path, images: dict) -> list:
    "Generated figures on disk that the README no longer uses."
    return sorted(p.relative_to(root).as_posix() for p in (Path(root) / IMAGES).glob(f'{IMAGE_PREFIX}*.png')
                  if p.relative_to(root).as_posix() not in images)


def out_of_date(root: Path = ROOT) -> list:
    "Files that differ from what `render` produces now (empty when README.md and its figures are current)."
    root = Path(root)
    text, images = render(root)
    readme = root / 'README.md'
    bad = [] if readme.is_file() and readme.read_text(encoding='utf-8') == text else ['README.md']
    bad += [p for p, b in images.items() if not (root / p).is_file() or (root / p).read_bytes() != b]
    return bad + stale_images(root, images)


def main(argv: list) -> int:
    if argv == ['--check']:
        bad = out_of_date()
        if bad: print(f"out of date with {NOTEBOOK}: {', '.join(bad)}; run python tools/make_readme.py", file=sys.stderr)
        return 1 if bad else 0
    if argv: print(__doc__.split('\n\n')[1], file=sys.stderr); return 2
    text, images = render()
    for p in stale_images(ROOT, images): (ROOT / p).unlink()
    for p, b in images.items():
        (ROOT / p).parent.mkdir(parents=True, exist_ok=True)
        if not (ROOT / p).is_file() or (ROOT / p).read_bytes() != b: (ROOT / p).write_bytes(b)
    (ROOT / 'README.md').write_text(text, encoding='utf-8')
    print(f"wrote README.md and {len(images)} figure(s) in {IMAGES}/ from {NOTEBOOK}")
    return 0


if __name__ == '__main__': sys.exit(main(sys.argv[1:]))
