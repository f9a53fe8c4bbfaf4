"""The ablation page (14) and the GPU walkthroughs (30, 31): the promises they make that test_notebooks.py cannot see.

- Quick mode is chosen by the page itself when there is no GPU, and the GPU settings (the same cells, bigger) make
  valid configurations with the paper's values; the GPU check mode (`make gpu-check`, CYCLEGAN_EDU_GPU_CHECK) shortens
  them as promised, and the pages' hidden last cells write the JSON that the check reads.
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


def test_walkthrough_gpu_mode_uses_the_papers_settings(monkeypatch):
    "Page 30's settings cell with QUICK = False, then its training config: the paper's values, and a valid config."
    monkeypatch.delenv('CYCLEGAN_EDU_GPU_CHECK', raising=False)
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


def test_walkthrough_gpu_check_mode_is_shortened(monkeypatch, tmp_path):
    "Page 30 with QUICK = False and CYCLEGAN_EDU_GPU_CHECK set: GPU settings on the built-in task at 256², 1 + 1 epochs."
    monkeypatch.setenv('CYCLEGAN_EDU_GPU_CHECK', str(tmp_path))
    nb = _nb('30_horse2zebra.ipynb')
    ns = {'QUICK': False, 'os': __import__('os'), 'MODE': 'GPU mode, H100'}
    exec(_cell_defining(nb, r'^if QUICK:.*\n\s+S = dict'), ns)
    S = ns['S']
    assert ns['CHECK'] and ns['MODE'].startswith('GPU mode, H100 (GPU check')
    assert (S['dataset'], S['size'], S['load_size'], S['netG'], S['ngf'], S['n_epochs'], S['n_epochs_decay']) == \
           ('toy', 256, 256, 'resnet_9blocks', 64, 1, 1)
    assert (ns['FIRST_MINUTES'], ns['MINUTES'], ns['NAME']) == (0.25, 4, 'gpu_check_toy')
    written = []
    def write_toy_dataset(root, **kw):  # records the call and makes the four empty folders
        written.append(kw)
        for d in ('trainA', 'trainB', 'testA', 'testB'): (root / d).mkdir(parents=True)
        return root
    def download_dataset(*a, **kw): raise AssertionError('the GPU check must not download')
    ns.update(Path=Path, tempfile=__import__('tempfile'), write_toy_dataset=write_toy_dataset, download_dataset=download_dataset)
    exec(_cell_defining(nb, r'^TMP = '), ns)
    assert written == [dict(n_train=150, n_test=64, size=256)] and ns['TMP'] is not None
    ns.update(CycleGANConfig=CycleGANConfig, RUNS=Path('checkpoints'))
    exec(_cell_defining(nb, r'^cfg = CycleGANConfig\(dataroot').split('\nfirst = Trainer')[0], ns)
    cfg = ns['cfg']
    assert cfg.fast and cfg.crop_size == 256 and cfg.total_epochs == 2 and cfg.max_minutes == 0.25


def test_gpu_check_mode_needs_the_variable_and_a_gpu(monkeypatch):
    "CHECK is off without the variable, and quick mode (no GPU) wins over it, on both pages."
    for name in ('30_horse2zebra.ipynb', '32_fast_gpu.ipynb'):
        settings = _cell_defining(_nb(name), r'^CHECK = ')
        for env, quick, check in [(None, False, False), ('/tmp/x', True, False), ('/tmp/x', False, True)]:
            if env: monkeypatch.setenv('CYCLEGAN_EDU_GPU_CHECK', env)
            else: monkeypatch.delenv('CYCLEGAN_EDU_GPU_CHECK', raising=False)
            ns = {'QUICK': quick, 'os': __import__('os'), 'MODE': 'm'}
            exec(settings, ns)
            assert ns['CHECK'] is check, (name, env, quick)


def test_fast_walkthrough_gpu_check_mode_is_shortened(monkeypatch, tmp_path):
    "Page 32 with QUICK = False: GPU mode's variants and sizes; with CYCLEGAN_EDU_GPU_CHECK set, shorter timings."
    settings = _cell_defining(_nb('32_fast_gpu.ipynb'), r'^CHECK = ')
    monkeypatch.delenv('CYCLEGAN_EDU_GPU_CHECK', raising=False)
    gpu = {'QUICK': False, 'os': __import__('os'), 'MODE': 'GPU mode, H100'}
    exec(settings, gpu)
    monkeypatch.setenv('CYCLEGAN_EDU_GPU_CHECK', str(tmp_path))
    chk = {'QUICK': False, 'os': __import__('os'), 'MODE': 'GPU mode, H100'}
    exec(settings, chk)
    G, C = gpu['S'], chk['S']
    assert not gpu['CHECK'] and chk['CHECK'] and 'GPU check' in chk['MODE']
    assert (G['size'], G['ngf'], G['n_blocks'], G['iters'], G['windows']) == (256, 64, 9, 20, 5)
    assert (C['size'], C['ngf'], C['n_blocks'], C['variants']) == (256, 64, 9, G['variants'])
    assert (C['iters'], C['warmup'], C['windows'], C['batches'], C['toy']) == (10, 3, 2, (1, 4), dict(size=64, ngf=32, n=200))


def _hidden_check_cell(name):
    cell = _cell_defining(_nb(name), r"^if os.environ.get\('CYCLEGAN_EDU_GPU_CHECK'\):\n")
    assert 'hide' in run_nbs.directives(cell)
    return cell


def test_train_walkthrough_check_cell_writes_its_numbers(monkeypatch, tmp_path):
    "Page 30's last, hidden cell: with CYCLEGAN_EDU_GPU_CHECK set it writes the numbers the page printed as JSON; else nothing."
    from types import SimpleNamespace as NS
    cell = _hidden_check_cell('30_horse2zebra.ipynb')
    monkeypatch.delenv('CYCLEGAN_EDU_GPU_CHECK', raising=False)
    ns = {'os': __import__('os'), 'json': json, 'Path': Path}  # from the page's import cell
    exec(cell, ns)   # Colab: the variable is not set, nothing happens (and nothing of the page is needed)
    monkeypatch.setenv('CYCLEGAN_EDU_GPU_CHECK', str(tmp_path))
    gt = {'AtoB_psnr': 21.5, 'BtoA_psnr': 16.0, 'identity_psnr': 6.9, 'AtoB_l1': 0.05}
    ns.update(MODE='GPU mode, H100 (GPU check: built-in task, shortened)', DEVICE='NVIDIA H100 80GB HBM3',
              first=NS(total_iters=12), second=NS(total_iters=300), rate=41.5, gt=gt,
              worst={'TorchScript': 0.0, 'ONNX': 2e-6})
    exec(cell, ns)
    out = json.loads((tmp_path / '30_horse2zebra.json').read_text())
    assert set(out) == {'mode', 'device', 'iters_first', 'iters_total', 'it_s', 'AtoB_psnr', 'BtoA_psnr', 'identity_psnr',
                        'export_max_abs_diff'}
    assert (out['iters_first'], out['iters_total'], out['it_s'], out['AtoB_psnr'], out['export_max_abs_diff']) == (12, 300, 41.5, 21.5, 2e-6)
    assert out['device'] == 'NVIDIA H100 80GB HBM3' and 'GPU check' in out['mode']


def test_fast_walkthrough_check_cell_writes_its_numbers(monkeypatch, tmp_path):
    "Page 32's last, hidden cell: both speed tables (skipped rows included) and the quality runs, as JSON."
    cell = _hidden_check_cell('32_fast_gpu.ipynb')
    monkeypatch.setenv('CYCLEGAN_EDU_GPU_CHECK', str(tmp_path))
    row = lambda b, img_s: {'plan': 'p', 'batch': b, 'skipped': None, 'it_s': img_s / b, 'img_s': img_s, 'finite': True}
    rows = {'official': row(1, 10.0), 'cuda_graphs': {'plan': 'p', 'batch': 1, 'skipped': 'needs a GPU'}, 'fast': row(1, 40.0)}
    brows = {'official': row(1, 8.0), 'fast@4': row(4, 80.0)}
    runs = {'batch 1, lr 2e-4 (official)': {'steps': 400, 'seconds': 30.0, 'AtoB_psnr': 20.0, 'BtoA_psnr': 15.0,
                                            'identity_psnr': 6.9, 'plan': 'p', 'G_A': object(), 'G_B': object()}}
    ns = {'os': __import__('os'), 'json': json, 'Path': Path, 'rows': rows, 'brows': brows, 'runs': runs, 'device': 'cuda',
          'describe_device': lambda d: 'NVIDIA H100 80GB HBM3 (79 GiB), PyTorch 2.11, CUDA 13.0'}
    exec(cell, ns)
    out = json.loads((tmp_path / '32_fast_gpu.json').read_text())
    assert set(out) == {'device', 'training', 'batch', 'quality'} and out['device'].startswith('NVIDIA H100')
    keys = {'variant', 'batch', 'it_s', 'img_s', 'vs_official', 'skipped', 'finite'}
    assert all(set(r) == keys for r in out['training'] + out['batch'])
    by = {r['variant']: r for r in out['training']}
    assert by['fast']['vs_official'] == 4.0 and by['cuda_graphs']['skipped'] == 'needs a GPU' and by['cuda_graphs']['it_s'] is None
    assert [r['vs_official'] for r in out['batch']] == [1.0, 10.0]
    assert out['quality'] == {'batch 1, lr 2e-4 (official)': {'steps': 400, 'seconds': 30.0, 'AtoB_psnr': 20.0, 'BtoA_psnr': 15.0}}


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
