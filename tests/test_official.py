"""cyclegan_edu_test runs the official README's test.py command lines (only the program name changed) on tiny data
and tiny checkpoints written here in the official file layout, and writes the official results page.

The module is imported as `official` (not `from … import test_main`) so that pytest does not collect `test_main`."""
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

import cyclegan_edu.official as official
from cyclegan_edu.core import tensor_to_pil
from cyclegan_edu.data import get_transform, load_image
from cyclegan_edu.models import define_G

ROOT = Path(__file__).resolve().parents[1]
README_TEST = 'python test.py --dataroot ./datasets/horse2zebra --name horse2zebra --model cycle_gan'
README_PRETRAINED = 'python test.py --dataroot datasets/horse2zebra/testA --name horse2zebra_pretrained --model test --no_dropout'
VISUALS = ('real_A', 'fake_B', 'rec_A', 'real_B', 'fake_A', 'rec_B')


def ours(official_cmd: str) -> list:
    "The official command line with only the program name changed: the arguments after `python test.py`."
    assert official_cmd.startswith('python test.py ')
    return shlex.split(official_cmd)[2:]


def tiny_G(seed: int, nc_in=3, nc_out=3):
    torch.manual_seed(seed)
    return define_G(nc_in, nc_out, ngf=4, netG='resnet_6blocks').eval()


def write_images(folder: Path, n: int, seed: int, size=(20, 24)):
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    for i in range(n):
        a = torch.randint(0, 256, (size[1], size[0], 3), generator=g, dtype=torch.uint8).numpy()
        Image.fromarray(a, 'RGB').save(folder / f'img{i}.png')


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    "An empty working folder with ./datasets/horse2zebra/{testA,testB} (3 and 2 tiny images), as after the official download."
    monkeypatch.chdir(tmp_path)
    write_images(tmp_path / 'datasets/horse2zebra/testA', 3, seed=0)
    write_images(tmp_path / 'datasets/horse2zebra/testB', 2, seed=1)
    return tmp_path


def official_run(run: Path, prefix='latest'):
    "Checkpoints as the official train.py leaves them: PREFIX_net_G_A.pth, _G_B, _D_A, _D_B state dicts."
    run.mkdir(parents=True, exist_ok=True)
    G_A, G_B = tiny_G(1), tiny_G(2)
    torch.save(G_A.state_dict(), run / f'{prefix}_net_G_A.pth')
    torch.save(G_B.state_dict(), run / f'{prefix}_net_G_B.pth')
    return G_A, G_B


def expected(G, path: Path, size=256) -> torch.Tensor:
    "What the official test computes for one image: resize to crop_size (= load_size), no flip, G in training mode."
    x = get_transform('resize_and_crop', size, size, no_flip=True)(load_image(path))[None]
    with torch.no_grad(): return G.train()(x)


def png(path: Path) -> bytes:
    return Image.open(path).tobytes()


def run_ok(argv: list, capsys) -> str:
    rc = official.test_main(argv)
    out, err = capsys.readouterr()
    assert rc == 0 and err == '', err
    return out


def one_error_line(argv: list, capsys, rc_expected=None) -> str:
    rc = official.test_main(argv)
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert rc != 0 and (rc_expected is None or rc == rc_expected), (rc, err)
    assert len(lines) == 1 and lines[0].startswith('cyclegan_edu_test: error: '), err
    assert 'Traceback' not in out + err
    return lines[0]


def test_readme_cycle_gan_command(workdir, capsys):
    G_A, G_B = official_run(workdir / 'checkpoints/horse2zebra')
    out = run_ok(ours(README_TEST), capsys)
    web = workdir / 'results/horse2zebra/test_latest'
    assert 'results/horse2zebra/test_latest/index.html' in out
    names = ['img0', 'img1', 'img2']  # len = max(|testA|, |testB|) = 3; B wraps around (serial order)
    assert sorted(p.name for p in (web / 'images').iterdir()) == sorted(f'{n}_{v}.png' for n in names for v in VISUALS)
    page = (web / 'index.html').read_text()
    assert '<title>Experiment = horse2zebra, Phase = test, Epoch = latest</title>' in page
    assert [m for m in re.findall(r'<h3>(.*?)</h3>', page)] == names
    assert re.findall(r'<img src="images/(img0_[a-zA-Z_]+\.png)"', page) == [f'img0_{v}.png' for v in VISUALS]
    assert 'style="width:256px"' in page
    for i, n in enumerate(names):
        a_path, b_path = workdir / f'datasets/horse2zebra/testA/{n}.png', workdir / f'datasets/horse2zebra/testB/img{i % 2}.png'
        fake_B = expected(G_A, a_path)
        fake_A = expected(G_B, b_path)
        with torch.no_grad(): rec_A, rec_B = G_B.train()(fake_B), G_A.train()(fake_A)
        real_A = get_transform('resize_and_crop', 256, 256, no_flip=True)(load_image(a_path))
        for label, t in (('real_A', real_A), ('fake_B', fake_B), ('rec_A', rec_A), ('fake_A', fake_A), ('rec_B', rec_B)):
            assert png(web / 'images' / f'{n}_{label}.png') == tensor_to_pil(t).tobytes(), (n, label)
        assert Image.open(web / 'images' / f'{n}_fake_B.png').size == (256, 256)


def test_readme_pretrained_command(workdir, capsys):
    G = tiny_G(3)
    sd = dict(G.state_dict())
    for i in (2, 5, 8, 17, 20):  # the official pretrained files predate PyTorch 0.4: InstanceNorm running stats
        sd[f'model.{i}.running_mean'], sd[f'model.{i}.running_var'] = torch.zeros(8), torch.ones(8)
    (workdir / 'checkpoints/horse2zebra_pretrained').mkdir(parents=True)
    torch.save(sd, workdir / 'checkpoints/horse2zebra_pretrained/latest_net_G.pth')
    run_ok(ours(README_PRETRAINED), capsys)
    images = workdir / 'results/horse2zebra_pretrained/test_latest/images'
    assert sorted(p.name for p in images.iterdir()) == sorted(f'img{i}_{v}.png' for i in range(3) for v in ('real', 'fake'))
    for i in range(3):
        assert png(images / f'img{i}_fake.png') == tensor_to_pil(expected(G, workdir / f'datasets/horse2zebra/testA/img{i}.png')).tobytes()


def our_run(run: Path, trained='AtoB', epochs=(3,)):
    "A run of this package: config.json, latest.pt and epoch_N.pt (full checkpoints), no .pth files."
    cfg = dict(input_nc=3, output_nc=3, ngf=4, ndf=4, netG='resnet_6blocks', norm='instance', no_dropout=True, direction=trained)
    run.mkdir(parents=True)
    (run / 'config.json').write_text(json.dumps(cfg))
    nets = {}
    for e in ('latest', *epochs):
        G_A, G_B = tiny_G(10 + (0 if e == 'latest' else e)), tiny_G(20 + (0 if e == 'latest' else e))
        nets[e] = (G_A, G_B)
        ck = {'format': 'cyclegan_edu', 'version': 1, 'config': cfg, 'nets': {'G_A': G_A.state_dict(), 'G_B': G_B.state_dict()}}
        torch.save(ck, run / ('latest.pt' if e == 'latest' else f'epoch_{e}.pt'))
    return nets


@pytest.mark.parametrize('trained', ['AtoB', 'BtoA'])
def test_our_run_folder_and_epochs(workdir, capsys, trained):
    nets = our_run(workdir / 'checkpoints/horse2zebra', trained)
    run_ok(ours(README_TEST) + ['--epoch', '3', '--num_test', '2', '--crop_size', '32'], capsys)
    web = workdir / 'results/horse2zebra/test_3'
    assert len(list((web / 'images').iterdir())) == 2 * 6
    G_A, G_B = nets[3]
    A_to_B = G_A if trained == 'AtoB' else G_B  # a run trained BtoA has G_B translating folder A to folder B's style
    fake_B = expected(A_to_B, workdir / 'datasets/horse2zebra/testA/img0.png', 32)
    assert png(web / 'images/img0_fake_B.png') == tensor_to_pil(fake_B).tobytes()
    # --model test --model_suffix _A takes G_A of the latest checkpoint
    run_ok(['--dataroot', 'datasets/horse2zebra/testA', '--name', 'horse2zebra', '--model', 'test', '--model_suffix', '_A',
            '--crop_size', '32'], capsys)
    fake = expected(nets['latest'][0], workdir / 'datasets/horse2zebra/testA/img1.png', 32)
    assert png(workdir / 'results/horse2zebra/test_latest/images/img1_fake.png') == tensor_to_pil(fake).tobytes()


def test_direction_and_options(workdir, capsys):
    G_A, G_B = official_run(workdir / 'checkpoints/horse2zebra')
    run_ok(ours(README_TEST) + ['--direction', 'BtoA', '--num_test', '1', '--crop_size', '32', '--results_dir', 'out',
                                '--aspect_ratio', '2', '--display_winsize', '64', '--eval', '--gpu_ids', '-1'], capsys)
    images = workdir / 'out/horse2zebra/test_latest/images'
    assert sorted(p.name for p in images.iterdir()) == sorted(f'img0_{v}.png' for v in VISUALS)  # real_A from testB/
    assert Image.open(images / 'img0_fake_B.png').size == (64, 32)  # --aspect_ratio 2: twice as wide
    with torch.no_grad():
        x = get_transform('resize_and_crop', 32, 32, no_flip=True)(load_image(workdir / 'datasets/horse2zebra/testB/img0.png'))
        y = G_A.eval()(x[None])  # BtoA: G_A on testB images, as the official test does for a run without train_opt.txt
    assert png(images / 'img0_fake_B.png') == tensor_to_pil(y).resize((64, 32), Image.BICUBIC).tobytes()
    assert '<img src="images/img0_real_A.png" style="width:64px">' in (images.parent / 'index.html').read_text()
    # official iteration checkpoints: iter_N_net_G_A.pth, results in test_latest_iterN
    official_run(workdir / 'checkpoints/horse2zebra', prefix='iter_200')
    run_ok(ours(README_TEST) + ['--load_iter', '200', '--num_test', '1', '--crop_size', '32', '--preprocess', 'none'], capsys)
    assert (workdir / 'results/horse2zebra/test_latest_iter200/images/img0_fake_B.png').is_file()
    assert Image.open(workdir / 'results/horse2zebra/test_latest_iter200/images/img0_fake_B.png').size == (20, 24)  # none: own size


def test_errors_are_one_line(workdir, capsys):
    official_run(workdir / 'checkpoints/horse2zebra')
    base = ours(README_TEST)
    cases = {
        ('--model', 'pix2pix'): 'implements CycleGAN only',
        ('--which_epoch', '5'): '--which_epoch is the old name of --epoch: use --epoch',
        ('--how_many', '5'): 'use --num_test',
        ('--continue_train',): 'training option',
        ('--display_id', '0'): 'training option',
        ('--name', 'nope'): 'no run folder checkpoints/nope',
        ('--epoch', '9'): '9_net_G_A.pth and 9_net_G_B.pth (official) or epoch_9.pt',
        ('--dataset_mode', 'aligned'): 'pix2pix',
        ('--dataroot', 'datasets/none'): 'not found',
        ('--phase', 'val'): 'valA/',
        ('--ngf', '64'): '--ngf 64 does not match',
        ('--netG', 'resnet_9blocks'): 'netG resnet_6blocks',
        ('--norm', 'syncbatch'): '--norm batch does not match',  # the official DDP spelling, read as batch
        ('--gpu_ids', 'x'): 'expected -1 (CPU)',
        ('--crop_size', '0'): 'positive',
        ('--frobnicate',): 'unrecognized arguments: --frobnicate',
    }
    for extra, text in cases.items():
        line = one_error_line(base + list(extra), capsys)
        assert text in line, (extra, line)
    line = one_error_line(['--name', 'horse2zebra'], capsys, rc_expected=2)  # no --dataroot
    assert 'required: --dataroot' in line
    line = one_error_line(ours(README_PRETRAINED), capsys)  # no horse2zebra_pretrained run
    assert 'no run folder' in line
    (workdir / 'checkpoints/horse2zebra_pretrained').mkdir()
    line = one_error_line(ours(README_PRETRAINED), capsys)
    assert 'latest_net_G.pth' in line and 'checkpoints/horse2zebra_pretrained/latest_net_G.pth' in line
    line = one_error_line(['--dataroot', 'datasets/horse2zebra/testA', '--name', 'horse2zebra', '--model', 'test'], capsys)
    assert '--model_suffix _A' in line
    (workdir / 'checkpoints/horse2zebra/latest_net_G_B.pth').write_bytes(b'not a checkpoint')
    line = one_error_line(base, capsys)
    assert 'latest_net_G_B.pth' in line and 'incomplete' in line
    if not torch.cuda.is_available():
        assert 'no CUDA GPU' in one_error_line(base + ['--gpu_ids', '0'], capsys)


def test_bad_test_image_is_skipped(workdir, capsys):
    official_run(workdir / 'checkpoints/horse2zebra')
    (workdir / 'datasets/horse2zebra/testA/img1.png').write_bytes(b'broken')
    out = run_ok(ours(README_TEST) + ['--crop_size', '32'], capsys)
    assert 'wrote 2 result(s)' in out and 'skipped 1 unreadable image' in out


def test_python_dash_m_entry(workdir):
    "`python -m cyclegan_edu.official` (what the console script runs): an error is one line, no traceback."
    r = subprocess.run([sys.executable, '-m', 'cyclegan_edu.official', *ours(README_TEST)], capture_output=True, text=True,
                       cwd=workdir, env={**os.environ, 'PYTHONPATH': str(ROOT), 'OMP_NUM_THREADS': '2'}, timeout=300)
    assert r.returncode == 1 and r.stderr.strip().count('\n') == 0, r.stderr
    assert r.stderr.startswith('cyclegan_edu_test: error: no run folder checkpoints/horse2zebra')


def test_official_syncbatch_norm_is_batch_norm():
    "The 2025 official `--norm syncbatch` (for DDP) trains with batch norm, synchronised under DDP on GPUs; a typo is refused."
    from cyclegan_edu.config import config_from_args
    cfg, _, _ = config_from_args(['--dataroot', 'toy', '--norm', 'syncbatch'])
    assert cfg.norm == 'batch' and isinstance(define_G(3, 3, 4, 'resnet_6blocks', cfg.norm).model[2], torch.nn.BatchNorm2d)
    with pytest.raises(SystemExit): config_from_args(['--dataroot', 'toy', '--norm', 'sync'])
