"FID/KID statistics against independent computations, evaluate_generator, the Inception download, and the eval CLI."
import csv
import json
import subprocess
from pathlib import Path
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

pytest.importorskip('torchmetrics', reason="FID/KID need the eval extras: pip install 'cyclegan_edu[eval]'")

from cyclegan_edu.core import seed_everything
from cyclegan_edu.evaluate import (eval_main, evaluate_generator, frechet_distance, image_features, inception_extractor,
                                   kernel_inception_distance, load_images)
from cyclegan_edu.models import define_G


def fid_numpy(x, y):
    "Independent FID from sample statistics: symmetric square roots by eigendecomposition."
    m1, m2, s1, s2 = x.mean(0), y.mean(0), np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    w, v = np.linalg.eigh(s1)
    r1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    return ((m1 - m2) ** 2).sum() + np.trace(s1 + s2) - 2 * np.sqrt(np.clip(np.linalg.eigvalsh(r1 @ s2 @ r1), 0, None)).sum()


def mean_color(images):
    "A tiny feature extractor: per-channel mean and std of uint8 images → (N, 6)."
    x = images.float() / 255
    return torch.cat([x.mean((2, 3)), x.std((2, 3))], 1)


def test_frechet_distance_two_gaussians():
    rng = np.random.default_rng(0)
    d, m, s = 6, 0.7, np.linspace(0.5, 1.5, 6)
    x, y = rng.normal(size=(20000, d)), m + s * rng.normal(size=(20000, d))
    closed = d * m ** 2 + ((1 - s) ** 2).sum()                 # N(0, I) vs N(m·1, diag(s²))
    ours = frechet_distance(x, y)
    assert ours == pytest.approx(fid_numpy(x, y), rel=1e-9)
    assert ours == pytest.approx(closed, rel=0.03)
    # correlated covariances (non-commuting): still equal to the independent computation
    a, b = rng.normal(size=(d, d)), rng.normal(size=(d, d))
    x2, y2 = rng.normal(size=(3000, d)) @ a, rng.normal(size=(3000, d)) @ b + 1
    assert frechet_distance(torch.from_numpy(x2).float(), y2) == pytest.approx(fid_numpy(x2.astype(np.float32), y2), rel=1e-5)
    assert frechet_distance(x, x) == pytest.approx(0, abs=1e-9)


def test_kid_matches_numpy_and_is_unbiased():
    rng = np.random.default_rng(1)
    d = 8
    x, y = rng.normal(size=(200, d)), 0.5 + rng.normal(size=(200, d))
    k = lambda a, b: (a @ b.T / d + 1) ** 3
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    want = ((kxx.sum() - np.trace(kxx)) + (kyy.sum() - np.trace(kyy))) / (200 * 199) - 2 * kxy.sum() / 200 ** 2
    assert kernel_inception_distance(x, y, subsets=1, subset_size=200)[0] == pytest.approx(want, rel=1e-9)
    # same distribution: independent small samples average to 0 (within 3 standard errors); FID is always > 0
    kids = [kernel_inception_distance(rng.normal(size=(30, d)), rng.normal(size=(30, d)), subsets=1, subset_size=30)[0]
            for _ in range(40)]
    assert abs(np.mean(kids)) < 3 * np.std(kids) / np.sqrt(len(kids)), (np.mean(kids), np.std(kids))
    assert min(kids) < 0 < max(kids)
    assert frechet_distance(rng.normal(size=(30, d)), rng.normal(size=(30, d))) > 0.5
    mean, std = kernel_inception_distance(x, y, subsets=20, subset_size=50, seed=3)
    assert mean > 10 * std / np.sqrt(20) and (mean, std) == kernel_inception_distance(x, y, subsets=20, subset_size=50, seed=3)


def test_statistics_reject_bad_features():
    x = np.zeros((10, 4))
    with pytest.raises(ValueError, match='feature sizes differ'): frechet_distance(x, np.zeros((10, 5)))
    with pytest.raises(ValueError, match=r'\(N, D\)'): frechet_distance(np.zeros(10), x)
    with pytest.raises(ValueError, match='NaN'): kernel_inception_distance(x + np.nan, x)
    with pytest.raises(ValueError, match='smaller set'): kernel_inception_distance(x, x, subset_size=11)


@pytest.fixture
def folders(tmp_path):
    "testA/ (5 bluish images, one of another size) and testB/ (6 reddish ones)."
    rng = np.random.default_rng(0)
    for d, base, n in (('testA', (40, 60, 200), 5), ('testB', (200, 60, 40), 6)):
        (tmp_path / d).mkdir()
        for i in range(n):
            size = (40, 32) if (d, i) == ('testA', 4) else (32, 32)
            a = np.clip(np.array(base) + rng.normal(0, 30, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
            Image.fromarray(a).save(tmp_path / d / f'{i}.png')
    return tmp_path


def test_evaluate_generator_with_custom_extractor(folders):
    seed_everything(0)
    G = define_G(3, 3, ngf=4, netG='resnet_6blocks').eval()
    res = evaluate_generator(G, folders / 'testA', folders / 'testB', feature_extractor=mean_color, batch_size=2)
    assert set(res) == {'n_fake', 'n_real', 'fid', 'kid_mean', 'kid_std'}
    assert (res['n_fake'], res['n_real']) == (5, 6)
    assert np.isfinite([res['fid'], res['kid_mean'], res['kid_std']]).all() and res['fid'] > 0
    # wiring: with the identity "generator", the result is exactly the statistics of the two folders' features
    ident = evaluate_generator(nn.Identity(), folders / 'testA', folders / 'testB', mean_color, nc=3, metrics=('fid',))
    f_A, f_B = image_features(folders / 'testA', mean_color), image_features(folders / 'testB', mean_color)
    assert ident['fid'] == pytest.approx(frechet_distance(f_B, f_A), rel=1e-12) and 'kid_mean' not in ident
    assert ident['fid'] > 0.5                                       # blue vs red: far apart (0.77)
    same = evaluate_generator(nn.Identity(), folders / 'testB', folders / 'testB', mean_color, nc=3)
    assert same['fid'] == pytest.approx(0, abs=1e-8)
    assert evaluate_generator(nn.Identity(), folders / 'testA', folders / 'testB', mean_color, nc=3, max_images=3)['n_real'] == 3
    with pytest.raises(ValueError, match="unknown metrics"): evaluate_generator(G, folders / 'testA', folders / 'testB', mean_color, metrics=('lpips',))


def test_load_images_errors(tmp_path):
    (tmp_path / 'empty').mkdir()
    with pytest.raises(FileNotFoundError, match='no images in'): load_images(tmp_path / 'empty')
    with pytest.raises(FileNotFoundError, match='not found'): load_images(tmp_path / 'missing')
    with pytest.raises(ValueError, match='empty'): load_images([])
    with pytest.raises(ValueError, match=r'\(N, C, H, W\)'): load_images(torch.zeros(3, 8, 8))
    assert [im.size for im in load_images(torch.zeros(2, 1, 8, 12))] == [(12, 8)] * 2   # grayscale tensors → RGB


# --- Inception: a random-weights file with the real layout, served from 127.0.0.1 -------------------------------------

@pytest.fixture(scope='module')
def inception_file(tmp_path_factory):
    "A weights file with the FID Inception's keys and shapes but random (seeded) weights, in float16 (~48 MB)."
    pytest.importorskip('torch_fidelity', reason="the Inception extractor needs torch-fidelity: pip install 'cyclegan_edu[eval]'")
    import torch_fidelity.feature_extractor_inceptionv3 as tfi
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tfi, 'load_state_dict_from_url', lambda *a, **k: {})
        mp.setattr(tfi.FeatureExtractorInceptionV3, 'load_state_dict', lambda self, sd, strict=True: None)
        net = tfi.FeatureExtractorInceptionV3('inception-v3-compat', ['2048'])
    torch.manual_seed(0)
    for m in net.modules():
        if isinstance(m, nn.Conv2d): nn.init.kaiming_normal_(m.weight)      # keeps activations alive through 90 layers
    path = tmp_path_factory.mktemp('inception') / 'weights-inception-test.pth'
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in net.state_dict().items()}, path)
    return path


@pytest.fixture
def server(local_server, inception_file):
    "The shared local server (conftest.py) serving the weights file; yields its base URL."
    local_server.files['/' + inception_file.name] = inception_file.read_bytes()
    return local_server.base


def test_inception_download_and_features(server, inception_file, tmp_path):
    old = torch.hub._hub_dir  # None unless set_dir was called: restore exactly that
    torch.hub.set_dir(str(tmp_path / 'hub'))
    try:
        with pytest.raises(RuntimeError, match='Without internet: download that file'):
            inception_extractor(device='cpu', url=f'{server}/missing.pth')          # HTTP 404
        assert not list((tmp_path / 'hub').rglob('*.pth'))
        fx = inception_extractor(device='cpu', url=f'{server}/{inception_file.name}')
        cached = tmp_path / 'hub' / 'checkpoints' / 'weights-inception-2015-12-05-6726825d.pth'
        assert cached.read_bytes() == inception_file.read_bytes()
        imgs = torch.stack([torch.zeros(3, 40, 40, dtype=torch.uint8), torch.full((3, 40, 40), 200, dtype=torch.uint8)])
        f = fx(imgs)
        assert f.shape == (2, 2048) and f.dtype == torch.float64 and torch.isfinite(f).all()
        assert (f[0] - f[1]).abs().max() > 0
        inception_extractor(device='cpu', url='http://127.0.0.1:9/never-used.pth')   # cached now: no download
    finally: torch.hub._hub_dir = old
    bad = tmp_path / 'cut.pth'; bad.write_bytes(inception_file.read_bytes()[:1000])
    with pytest.raises(RuntimeError, match='incomplete'): inception_extractor(weights_path=bad)


# --- the command line ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def run_folder(tmp_path_factory):
    "A run folder as the trainer writes it (config.json + official-style latest_net_G_*.pth), tiny generators."
    run = tmp_path_factory.mktemp('checkpoints') / 'toy_run'; run.mkdir()
    cfg = dict(input_nc=3, output_nc=3, ngf=4, ndf=4, netG='resnet_6blocks', netD='basic', norm='instance', no_dropout=True,
               direction='AtoB', crop_size=16, load_size=16, dataroot='toy', name='toy_run')
    (run / 'config.json').write_text(json.dumps(cfg))
    seed_everything(0)
    for k in ('G_A', 'G_B'): torch.save(define_G(3, 3, ngf=4, netG='resnet_6blocks').state_dict(), run / f'latest_net_{k}.pth')
    return run


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, '-c', 'import sys; from cyclegan_edu.evaluate import eval_main; sys.exit(eval_main())', *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=300)


def test_cli_end_to_end(run_folder, inception_file, tmp_path):
    out = _cli('--checkpoint', run_folder, '--dataroot', 'toy', '--direction', 'both', '--num_test', 3, '--batch_size', 3,
               '--device', 'cpu', '--inception_weights', inception_file, '--output', tmp_path / 'res.json')
    assert out.returncode == 0, out.stderr
    data = json.loads((tmp_path / 'res.json').read_text())
    assert data['toy_size'] == 16 and data['metrics'] == ['fid', 'kid', 'gt']       # size from the run's config.json
    rows = data['rows']
    assert [r['direction'] for r in rows] == ['AtoB', 'BtoA']
    for r in rows:
        assert {'n_fake', 'n_real', 'fid', 'kid_mean', 'kid_std', 'psnr', 'l1', 'identity_psnr', 'identity_l1'} <= set(r)
        assert (r['n_fake'], r['n_real']) == (3, 3) and np.isfinite([r['fid'], r['kid_mean'], r['psnr']]).all()
    lines = out.stdout.splitlines()
    assert lines[0].split()[:4] == ['direction', 'n_fake', 'n_real', 'fid'] and lines[1].startswith('AtoB')
    assert 'strongly biased' in out.stderr                                          # 3 images: warned

    out = _cli('--checkpoint', run_folder, '--dataroot', 'toy', '--metrics', 'gt', '--direction', 'BtoA', '--num_test', 8,
               '--output', 'res.csv', cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    table = list(csv.DictReader(open(tmp_path / 'res.csv')))
    assert list(table[0]) == ['direction', 'psnr', 'l1', 'identity_psnr', 'identity_l1'] and table[0]['direction'] == 'BtoA'
    assert 'wrote res.csv' in out.stdout


def test_cli_bad_inputs(run_folder, tmp_path, capsys):
    data = tmp_path / 'data'; (data / 'testA').mkdir(parents=True)
    Image.new('RGB', (16, 16)).save(data / 'testA' / 'a.png')
    def fails(*args):
        with pytest.raises(SystemExit) as e: eval_main(['--checkpoint', str(run_folder), *map(str, args)])
        return str(e.value.code)
    assert 'testB not found' in fails('--dataroot', data) and "found: ['testA']" in fails('--dataroot', data)
    (data / 'testB').mkdir()
    assert 'no images in' in fails('--dataroot', data)                             # empty folder
    assert 'unknown metric lpips' in fails('--dataroot', 'toy', '--metrics', 'fid,lpips')
    assert 'needs --dataroot toy' in fails('--dataroot', data, '--metrics', 'gt')
    assert '.json or .csv' in fails('--dataroot', 'toy', '--output', 'x.txt')
    assert 'not a folder' in fails('--dataroot', tmp_path / 'nowhere')
    with pytest.raises(SystemExit) as e: eval_main(['--checkpoint', str(tmp_path / 'nope'), '--dataroot', 'toy'])
    assert 'not found' in str(e.value.code)
    single = run_folder / 'latest_net_G_A.pth'
    with pytest.raises(SystemExit) as e: eval_main(['--checkpoint', str(single), '--dataroot', 'toy', '--metrics', 'gt', '--direction', 'both'])
    assert 'single generator' in str(e.value.code)
    out = _cli('--checkpoint', run_folder, '--dataroot', data)                    # exit status and message in a real process
    assert out.returncode == 1 and out.stderr.startswith('cyclegan_edu_eval: error:') and 'Traceback' not in out.stderr


# --- the command line: every user error is one line, and --output is checked before the slow work ----------------------

def _fails(*args):
    "Run eval_main in-process; return the one-line message it exits with (status 1)."
    with pytest.raises(SystemExit) as e: eval_main([*map(str, args)])
    msg = str(e.value.code)
    assert msg.startswith('cyclegan_edu_eval: error: ') and '\n' not in msg, msg
    return msg


def test_cli_output_is_checked_before_any_work(run_folder, tmp_path):
    "A bad --output is reported even with a checkpoint that does not exist: it is checked first, before anything slow."
    nope = tmp_path / 'no_such_run'
    assert 'does not exist; create it first' in _fails('--checkpoint', nope, '--dataroot', 'toy', '--output', tmp_path / 'out' / 'r.json')
    (tmp_path / 'r.json').mkdir()
    assert 'is a folder: give a file name' in _fails('--checkpoint', nope, '--dataroot', 'toy', '--output', tmp_path / 'r.json')
    (tmp_path / 'f').write_text('x')
    assert 'is a file, not a folder' in _fails('--checkpoint', nope, '--dataroot', 'toy', '--output', tmp_path / 'f' / 'r.json')
    old = tmp_path / 'old.csv'; old.write_text('earlier results')
    assert 'already exists: pass --overwrite' in _fails('--checkpoint', nope, '--dataroot', 'toy', '--output', old)
    assert old.read_text() == 'earlier results'                                     # refused, not touched
    assert '--checkpoint' in _fails('--checkpoint', nope, '--dataroot', 'toy', '--output', old, '--overwrite')  # now the next check


@pytest.mark.skipif(not Path('/sys').is_dir(), reason='needs a folder nobody can write into (/sys on Linux)')
def test_cli_unwritable_output_folder(run_folder):
    msg = _fails('--checkpoint', run_folder, '--dataroot', 'toy', '--output', '/sys/results.json')
    assert 'cannot write into /sys' in msg


def test_cli_overwrite_replaces_and_says_so(run_folder, tmp_path):
    out = tmp_path / 'res.csv'; out.write_text('earlier results')
    r = _cli('--checkpoint', run_folder, '--dataroot', 'toy', '--metrics', 'gt', '--num_test', 4, '--output', out, '--overwrite')
    assert r.returncode == 0, r.stderr
    assert 'replaced the previous file' in r.stdout and out.read_text().startswith('direction,psnr')


def test_cli_other_user_errors_are_one_line(run_folder, inception_file, tmp_path):
    base = ('--checkpoint', run_folder, '--dataroot', 'toy')
    if torch.cuda.device_count() < 8: assert 'cuda:7' in _fails(*base, '--device', 'cuda:7')
    assert 'not a device name' in _fails(*base, '--device', 'gpu0')
    assert '--batch_size 0' in _fails(*base, '--batch_size', 0)
    assert '--toy_size 30' in _fails(*base, '--toy_size', 30)
    assert '--max_image_pixels -1' in _fails(*base, '--max_image_pixels', -1)
    (tmp_path / 'ckpt.pth').write_bytes(b'not a checkpoint')
    assert 'ckpt.pth' in _fails('--checkpoint', tmp_path / 'ckpt.pth', '--dataroot', 'toy', '--metrics', 'gt')
    data = tmp_path / 'data'
    for d in ('testA', 'testB'): (data / d).mkdir(parents=True); Image.new('RGB', (16, 16)).save(data / d / 'a.png')
    (data / 'testA' / 'b.png').write_bytes(b'')                                   # an unreadable image
    assert 'weights file' in _fails('--checkpoint', run_folder, '--dataroot', data, '--inception_weights', tmp_path / 'none.pth')
    assert 'b.png: the file is empty' in _fails('--checkpoint', run_folder, '--dataroot', data, '--metrics', 'kid',
                                                '--device', 'cpu', '--inception_weights', inception_file)
    r = _cli('--checkpoint', run_folder, '--dataroot', 'toy', '--output', tmp_path / 'missing' / 'r.json')   # a real process
    assert r.returncode == 1 and r.stderr.count('\n') == 1 and 'Traceback' not in r.stderr
    assert r.stderr.startswith('cyclegan_edu_eval: error: --output')
