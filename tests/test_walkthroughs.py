"""The ablation page (14) and the GPU walkthroughs (30, 31): the promises they make that test_notebooks.py cannot see.

- Quick mode is chosen by the page itself when there is no GPU, and the GPU settings (the same cells, bigger) make
  valid configurations with the paper's values.
- Every cell that needs the internet is explained by the markdown right above it.
- The internet cells themselves run: offline, against stand-ins a setup cell puts where the page looks for them
  (small generators in the official pretrained layout in the model cache, a tiny horse2zebra folder, randomly
  initialised Inception weights in PyTorch's hub cache). The numbers they give are meaningless; the code path is
  what is tested.
"""
import json, re, sys
from pathlib import Path
from unittest import mock

import nbformat
import pytest
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'tools'))
import run_nbs  # noqa: E402

from cyclegan_edu.config import CycleGANConfig  # noqa: E402
from cyclegan_edu.models import define_G  # noqa: E402


def _nb(name):
    return nbformat.read(ROOT / 'nbs' / name, as_version=4)


def _code(nb):
    return [c for c in nb.cells if c.cell_type == 'code']


def _cell_defining(nb, pattern):
    "The source of the first code cell matching `pattern` (a regex, multiline)."
    return next(c.source for c in _code(nb) if re.search(pattern, c.source, re.M))


# ---------------------------------------------------------------------------------------------------------------
# Quick mode and the GPU settings

def test_quick_mode_is_chosen_without_a_gpu():
    assert re.search(r'^QUICK = not torch\.cuda\.is_available\(\)', _cell_defining(_nb('30_horse2zebra.ipynb'), r'^QUICK ='), re.M)
    assert re.search(r'^GPU = torch\.cuda\.is_available\(\)', _cell_defining(_nb('14_whatif.ipynb'), r'^GPU ='), re.M)


def test_walkthrough_gpu_mode_uses_the_papers_settings():
    "Page 30's settings cell with QUICK = False, then its training config: the paper's values, and a valid config."
    nb = _nb('30_horse2zebra.ipynb')
    ns = {'QUICK': False, 'os': __import__('os')}
    exec(_cell_defining(nb, r'^if QUICK:.*\n\s+S = dict'), ns)
    S = ns['S']
    assert (S['size'], S['load_size'], S['netG'], S['ngf'], S['n_epochs'], S['n_epochs_decay']) == (256, 286, 'resnet_9blocks', 64, 100, 100)
    assert ns['MINUTES'] > ns['FIRST_MINUTES'] > 0 and ns['NAME'] == 'horse2zebra'
    train = _cell_defining(nb, r'^cfg = CycleGANConfig\(dataroot')
    ns.update(CycleGANConfig=CycleGANConfig, root=Path('datasets/horse2zebra'), RUNS=Path('checkpoints'))
    exec(train.split('\nfirst = Trainer')[0], ns)
    cfg = ns['cfg']
    assert cfg.fast and cfg.max_minutes == ns['FIRST_MINUTES'] and cfg.batch_size == 1 and cfg.ndf == 64
    assert cfg.total_epochs == 200 and cfg.lambda_identity == 0.5 and cfg.pool_size == 50


def test_whatif_gpu_settings_make_valid_runs():
    "Page 14 with GPU = True: the same experiments, larger; each makes a valid config (Trainer replaced by a recorder)."
    nb = _nb('14_whatif.ipynb')
    ns = {'torch': torch}
    exec(_cell_defining(nb, r'^GPU =').replace('GPU = torch.cuda.is_available()', 'GPU = True'), ns)
    assert ns['S']['iters'] > 10 * 150 and len(ns['S']['ablation_seeds']) == 3
    made = []
    class Recorder:
        def __init__(self, cfg, **kw): made.append(cfg)
        def fit(self): pass
    ns.update(CycleGANConfig=CycleGANConfig, Trainer=Recorder, Path=Path, tempfile=__import__('tempfile'))
    exec(_cell_defining(nb, r'^def train\('), ns)
    for name, change in ns['EXPERIMENTS'].items(): ns['train'](name, 0, **change)
    assert [(c.lambda_identity, c.pool_size, c.lambda_A) for c in made] == [(0.5, 50, 10.0), (0.0, 50, 10.0), (0.5, 0, 10.0), (0.5, 50, 0.0)]
    assert {(c.crop_size, c.ngf) for c in made} == {(64, 32)}


def test_walkthrough_outputs_say_their_mode():
    "The stored outputs of page 30 name the mode that produced them."
    text = json.dumps([c.get('outputs', []) for c in _code(_nb('30_horse2zebra.ipynb'))])
    assert 'quick mode, CPU' in text or 'GPU mode' in text


@pytest.mark.parametrize('name', ['30_horse2zebra.ipynb', '31_pretrained.ipynb'])
def test_internet_cells_are_explained(name):
    cells = _nb(name).cells
    marked = [i for i, c in enumerate(cells) if c.cell_type == 'code' and 'internet' in run_nbs.directives(c.source)]
    assert marked, f'{name} has no #| internet cell'
    for i in marked:
        above = cells[i - 1]
        assert above.cell_type == 'markdown' and 'internet' in above.source.lower(), \
            f'{name}: the markdown right above cell {i} must say that it needs the internet and why it may not have run'


# ---------------------------------------------------------------------------------------------------------------
# The internet cells, run offline against stand-ins

def _official_file(path: Path, ngf: int = 8, seed: int = 0):
    "A generator file in the official pretrained layout (with the pre-0.4 instance-norm statistics), small."
    torch.manual_seed(seed)
    G = define_G(3, 3, ngf=ngf, netG='resnet_9blocks')
    sd = G.state_dict()
    for name, m in G.named_modules():
        if isinstance(m, nn.InstanceNorm2d):
            sd[f'{name}.running_mean'], sd[f'{name}.running_var'] = torch.zeros(m.num_features), torch.ones(m.num_features)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(sd, path)


def _with_setup(name: str, setup: str, dest: Path) -> Path:
    "A copy of notebook `name` with a setup cell after its install cell."
    nb = _nb(name)
    nb.cells.insert(3, nbformat.v4.new_code_cell(setup, id='test-setup'))
    path = dest / name
    nbformat.write(nb, path)
    return path


TINY_H2Z = '''
import random
from pathlib import Path
from PIL import Image
random.seed(0)
for d in ('trainA', 'trainB', 'testA', 'testB'):
    (Path('datasets/horse2zebra') / d).mkdir(parents=True)
    for i in range(3):
        Image.new('RGB', (64, 48), tuple(random.randrange(256) for _ in range(3))).save(f'datasets/horse2zebra/{d}/{i}.jpg')
'''


def _run(path, **kw):
    try: return run_nbs.run_notebook(path, **kw)
    except run_nbs.NotebookError as e: pytest.fail(str(e), pytrace=False)


def test_pretrained_walkthrough_internet_cells_offline(tmp_path, monkeypatch):
    "Page 31 with its internet cells: stand-in pretrained files in the cache, a tiny horse2zebra, a walkthrough-1 run."
    for name in ('horse2zebra', 'zebra2horse', 'style_monet', 'style_vangogh', 'style_cezanne', 'style_ukiyoe'):
        _official_file(tmp_path / 'cache' / 'pretrained' / f'{name}.pth')
    _official_file(tmp_path / 'run.pth', seed=1)
    monkeypatch.setenv('CYCLEGAN_EDU_CACHE', str(tmp_path / 'cache'))
    setup = TINY_H2Z + (f"import shutil\nPath('checkpoints/horse2zebra').mkdir(parents=True)\n"
                        f"shutil.copy({str(tmp_path / 'run.pth')!r}, 'checkpoints/horse2zebra/latest_net_G_A.pth')\n")
    res = _run(_with_setup('31_pretrained.ipynb', setup, tmp_path), flags=('internet',))
    assert res.run == len(_code(_nb('31_pretrained.ipynb'))) + 1 and not res.skipped


def _fake_inception_weights(path: Path):
    "Randomly initialised weights with the layout of FID's Inception file (torch-fidelity's FeatureExtractorInceptionV3)."
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    torch.manual_seed(0)
    with mock.patch.object(FeatureExtractorInceptionV3, 'load_state_dict', lambda self, sd: None), \
         mock.patch('torch.load', return_value={}):
        net = FeatureExtractorInceptionV3('inception-v3-compat', ['2048'], feature_extractor_weights_path='unused')
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)


@pytest.mark.slow  # ~60 s of Inception on a CPU; the FID code itself is tested in test_evaluate.py
def test_train_walkthrough_fid_cell_offline(tmp_path, monkeypatch):
    "Page 30 in quick mode with its FID cell, the Inception weights replaced by random ones in the hub cache."
    pytest.importorskip('torch_fidelity')
    from cyclegan_edu.evaluate import INCEPTION_URL
    _fake_inception_weights(tmp_path / 'torch' / 'hub' / 'checkpoints' / INCEPTION_URL.rsplit('/', 1)[-1])
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    res = _run(ROOT / 'nbs' / '30_horse2zebra.ipynb', flags=('internet',))
    assert not res.skipped
