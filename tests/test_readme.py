"""README.md is generated from nbs/index.ipynb by tools/make_readme.py: it must match what the tool writes now, keep
the developer commands in its Developing section, and carry no inline image data."""
import importlib.util, re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location('make_readme', ROOT / 'tools' / 'make_readme.py')
make_readme = importlib.util.module_from_spec(_spec); _spec.loader.exec_module(make_readme)
README = (ROOT / 'README.md').read_text(encoding='utf-8')


def test_readme_matches_index():
    bad = make_readme.out_of_date(ROOT)
    assert not bad, f"{', '.join(bad)} out of date with nbs/index.ipynb: run python tools/make_readme.py and commit"


def test_readme_says_it_is_generated():
    assert README.splitlines()[0] == make_readme.HEADER


def test_readme_developing_section():
    m = re.search(r'^## Developing\n(.*?)(?=^## |\Z)', README, re.M | re.S)
    assert m, "README.md has no '## Developing' section: add it to nbs/index.ipynb and run python tools/make_readme.py"
    assert 'make demo' in m.group(1) and 'make test' in m.group(1), "the Developing section must give `make demo` and `make test`"


def test_readme_has_no_inline_images():
    assert 'data:image' not in README and 'base64' not in README
    for target in re.findall(r'!\[[^\]]*\]\(([^)\s]+)\)', README):
        if not re.match(r'[a-z]+:', target): assert (ROOT / target).is_file(), f"README shows {target}, which does not exist"


def test_render_rules(tmp_path):
    "The tool's rules on a small notebook: hidden cells dropped, slow code dropped but outputs kept, links and mermaid fixed."
    import base64, json
    png = base64.b64encode(b'\x89PNG\r\n\x1a\nfake').decode()
    cells = [
        {'cell_type': 'markdown', 'id': 'm1', 'metadata': {}, 'source': '# T\n\nSee [toy](08_toy.ipynb), [web](https://x.org)\n\n```{mermaid}\nflowchart LR\n```'},
        {'cell_type': 'code', 'id': 'h1', 'metadata': {}, 'execution_count': None, 'source': '#| hide\nsecret = 1', 'outputs': []},
        {'cell_type': 'code', 'id': 'c1', 'metadata': {}, 'execution_count': None, 'source': '1 + 1',
         'outputs': [{'output_type': 'execute_result', 'metadata': {}, 'execution_count': None, 'data': {'text/plain': '2'}}]},
        {'cell_type': 'code', 'id': 's1', 'metadata': {}, 'execution_count': None, 'source': '#| slow\ntrain()',
         'outputs': [{'output_type': 'stream', 'name': 'stdout', 'text': 'done\n'},
                     {'output_type': 'display_data', 'metadata': {}, 'data': {'image/png': png, 'text/plain': '<Figure>'}}]},
    ]
    (tmp_path / 'nbs').mkdir()
    (tmp_path / 'nbs' / 'index.ipynb').write_text(json.dumps({'cells': cells, 'metadata': {}, 'nbformat': 4, 'nbformat_minor': 5}))
    text, images = make_readme.render(tmp_path)
    assert text == (f"{make_readme.HEADER}\n\n# T\n\nSee [toy](nbs/08_toy.ipynb), [web](https://x.org)\n\n```mermaid\nflowchart LR\n```"
                    "\n\n```python\n1 + 1\n```\n\n```\n2\n```\n\n```\ndone\n```\n\n![](nbs/images/index_s1.png)\n")
    assert images == {'nbs/images/index_s1.png': b'\x89PNG\r\n\x1a\nfake'}
    assert make_readme.out_of_date(tmp_path) == ['README.md', 'nbs/images/index_s1.png']
