"""Every training failure ends in one clear line, a non-zero exit status, and nothing lost: bad values, devices,
full disks (a real tiny filesystem where this process may mount one), read-only runs, bad images in data-loader
workers, divergence, time budgets, and the official command lines. Real processes throughout."""
import contextlib, json, os, shutil, subprocess, sys
from pathlib import Path

import pytest
import torch

from cyclegan_edu import checkpoint as cp, train as tr
from cyclegan_edu.config import CycleGANConfig
from cyclegan_edu.run import read_loss_log
from cyclegan_edu.cli import train_main
from cyclegan_edu.toy import write_toy_dataset

from conftest import run_main

TINY = ['--ngf', '4', '--ndf', '4', '--quiet', '--toy_n', '6', '--n_epochs', '1', '--n_epochs_decay', '0']


def proc(*args, env=None, timeout=300):
    "cyclegan_edu_train in a real process (for failures that involve the process or the file system it sees)."
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONUNBUFFERED': '1', **(env or {})}
    return subprocess.run([sys.executable, '-m', 'cyclegan_edu.cli', *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env)


def cli(*args, env=None):
    "cyclegan_edu_train's main in this process: the same messages and exit status, without interpreter start-up."
    return run_main(train_main, *args, env=env)


def one_line(r) -> str:
    "The single stderr line of a failed command (asserting there is exactly one and no traceback)."
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and 'Traceback' not in r.stderr, r.stderr
    return lines[0]


@contextlib.contextmanager
def tmpfs(path: Path, size: str):
    "Mount a small tmpfs at `path` (root only); yields True if mounted, False if this process may not mount."
    path.mkdir(parents=True, exist_ok=True)
    ok = os.geteuid() == 0 and shutil.which('mount') and \
        subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={size}', 'tmpfs', str(path)], capture_output=True).returncode == 0
    try: yield bool(ok)
    finally:
        if ok: subprocess.run(['umount', '-l', str(path)], capture_output=True)


@pytest.mark.parametrize('argv,flag', [
    (['--n_epochs', '-1', '--n_epochs_decay', '2'], '--n_epochs'),
    (['--max_iters', '-3'], '--max_iters'),
    (['--n_epochs', '0', '--n_epochs_decay', '0'], '--n_epochs_decay'),
    (['--lambda_A', 'nan'], '--lambda_A'),
    (['--lr', 'inf'], '--lr'),
    (['--crop_size', '30', '--load_size', '32'], '--crop_size'),
    (['--max_minutes', '-1'], '--max_minutes'),
])
def test_bad_values_rejected_before_anything_is_written(tmp_path, argv, flag):
    r = cli('--dataroot', 'toy', '--name', 'x', '--checkpoints_dir', tmp_path, '--ngf', '4', '--ndf', '4', '--quiet', *argv)
    assert r.returncode == 2 and flag in one_line(r), r.stderr
    assert not (tmp_path / 'x').exists()


def test_devices_that_do_not_exist(tmp_path):
    for spec in (['gpu0'] if torch.cuda.is_available() else ['gpu0', 'cuda']):
        r = cli('--dataroot', 'toy', '--name', 'x', '--checkpoints_dir', tmp_path, '--device', spec, *TINY)
        assert r.returncode == 1 and 'available here: cpu' in one_line(r)
    assert not (tmp_path / 'x').exists()


def test_full_disk_keeps_the_last_checkpoint(tmp_path):
    "A real full filesystem where possible: the save fails in one line, the previous checkpoint is intact."
    disk = tmp_path / 'disk'
    with tmpfs(disk, '4m') as mounted:
        if not mounted: pytest.skip("this process may not mount a tmpfs (needs root); test_train.py injects ENOSPC instead")
        args = ['--dataroot', 'toy', '--name', 'r', '--checkpoints_dir', disk, '--display_freq', '1000', *TINY]
        r = proc(*args, '--max_iters', '2'); assert r.returncode == 0, r.stderr
        free = shutil.disk_usage(disk).free
        (disk / 'filler').write_bytes(b'\0' * (free - 8192))        # leave 8 KB: the next checkpoint cannot fit
        r = proc(*args, '--max_iters', '4', '--resume')
        msg = one_line(r)
        assert r.returncode == 1 and 'the disk is full' in msg and 'is intact' in msg, msg
        assert cp.load_checkpoint(disk / 'r' / 'latest.pt')['total_iters'] == 2
        assert not [p.name for p in (disk / 'r').glob('.*.tmp*')]    # no half-written temp file left behind
        (disk / 'filler').unlink()                                   # space again: the run continues where it was
        r = proc(*args, '--max_iters', '4', '--resume'); assert r.returncode == 0, r.stderr
        assert cp.load_checkpoint(disk / 'r' / 'latest.pt')['total_iters'] == 4


def test_full_disk_while_saving_a_sample_grid(tmp_path):
    disk = tmp_path / 'disk'
    with tmpfs(disk, '4m') as mounted:
        if not mounted: pytest.skip("this process may not mount a tmpfs (needs root)")
        args = ['--dataroot', 'toy', '--name', 'r', '--checkpoints_dir', disk, *TINY]
        r = proc(*args, '--max_iters', '1', '--display_freq', '1000'); assert r.returncode == 0, r.stderr
        (disk / 'filler').write_bytes(b'\0' * (shutil.disk_usage(disk).free - 4096))
        r = proc(*args, '--max_iters', '2', '--display_freq', '1', '--resume')
        msg = one_line(r)
        assert r.returncode == 1 and 'sample grid' in msg and 'the disk is full' in msg, msg


def test_read_only_run_folder(tmp_path):
    "--resume on a run the user cannot write (a read-only mount, or another owner) is refused in one line."
    disk = tmp_path / 'ro'
    with tmpfs(disk, '8m') as mounted:
        if mounted:
            r = proc('--dataroot', 'toy', '--name', 'r', '--checkpoints_dir', disk, '--max_iters', '1', *TINY)
            assert r.returncode == 0, r.stderr
            assert subprocess.run(['mount', '-o', 'remount,ro', str(disk)], capture_output=True).returncode == 0
            r = proc('--dataroot', 'toy', '--name', 'r', '--checkpoints_dir', disk, '--resume', *TINY)
            msg = one_line(r)
            assert r.returncode == 1 and 'read-only' in msg and str(disk / 'r') in msg, msg
            return
    if os.geteuid() == 0: pytest.skip("root without mount permission: cannot make a folder it may not write")
    run = tmp_path / 'ck'
    assert proc('--dataroot', 'toy', '--name', 'r', '--checkpoints_dir', run, '--max_iters', '1', *TINY).returncode == 0
    (run / 'r').chmod(0o500)
    try:
        r = proc('--dataroot', 'toy', '--name', 'r', '--checkpoints_dir', run, '--resume', *TINY)
        assert r.returncode == 1 and 'permission denied' in one_line(r)
    finally: (run / 'r').chmod(0o700)


def test_bad_image_in_a_worker_process_is_one_line(tmp_path):
    root = write_toy_dataset(tmp_path / 'data', n_train=4, n_test=1, size=32, seed=0)
    (root / 'trainA' / 'empty.png').write_bytes(b'')
    r = cli('--dataroot', root, '--name', 'w', '--checkpoints_dir', tmp_path / 'ck', '--crop_size', '32', '--load_size', '32',
            '--num_threads', '2', '--ngf', '4', '--ndf', '4', '--quiet', '--n_epochs', '1', '--n_epochs_decay', '0')
    msg = one_line(r)
    assert r.returncode == 1 and 'empty.png' in msg and 'Original Traceback' not in r.stderr and 'DataLoader worker' not in msg, msg


def test_debug_shows_the_traceback(tmp_path):
    r = cli('--dataroot', tmp_path / 'missing', '--name', 'x', '--checkpoints_dir', tmp_path, *TINY, '--debug')
    assert r.returncode == 1 and 'Traceback' in r.stderr and r.stderr.strip().splitlines()[-1].startswith('cyclegan_edu_train: error:')


def test_divergence_names_the_loss_and_an_existing_checkpoint(tmp_path, monkeypatch):
    "NaN from iteration 5 on: stops at the first check after it, names loss, value and iteration, keeps iteration 4."
    from cyclegan_edu.toy import ToyDataset
    class Poisoned(ToyDataset):
        def __getitem__(self, i):
            item = super().__getitem__(i)
            if Poisoned.armed: item['B'] = item['B'] * float('nan')
            return item
    Poisoned.armed = False
    monkeypatch.setattr(tr, 'build_dataset', lambda cfg, phase=None: Poisoned(n=8, size=32, phase=phase or 'train'))
    cfg = CycleGANConfig(dataroot='toy', name='run', checkpoints_dir=str(tmp_path), crop_size=32, load_size=32, ngf=4, ndf=4,
                         netG='resnet_6blocks', n_epochs=2, n_epochs_decay=0, num_threads=0, print_freq=3, save_latest_freq=4,
                         pool_size=0, display_freq=1000)
    t = tr.Trainer(cfg, progress=False, log=None)
    orig = t.train_step
    def step(batch):
        Poisoned.armed = t.total_iters >= 4        # iteration 5 is the first with NaN images
        return orig({**batch, 'B': batch['B'] * float('nan')} if Poisoned.armed else batch)
    t.train_step = step
    with pytest.raises(tr.TrainingDivergedError) as e: t.fit()
    msg = str(e.value)
    assert 'at iteration 5 ' in msg and 'became nan' in msg and 'iteration 4) is kept' in msg, msg
    assert cp.load_checkpoint(tmp_path / 'run' / 'latest.pt')['total_iters'] == 4


def test_max_minutes_stops_cleanly_and_resumes(tmp_path):
    args = ['--dataroot', 'toy', '--name', 't', '--checkpoints_dir', tmp_path, '--ngf', '4', '--ndf', '4', '--quiet',
            '--toy_n', '50', '--n_epochs', '50', '--n_epochs_decay', '0', '--display_freq', '1000']
    r = cli(*args, '--max_minutes', '0.02')
    assert r.returncode == 0 and '--max_minutes 0.02' in r.stdout + r.stderr, r.stderr
    done = cp.load_checkpoint(tmp_path / 't' / 'latest.pt')['total_iters']
    assert 0 < done < 50 * 50
    r = cli(*args, '--max_minutes', '0.02', '--resume'); assert r.returncode == 0, r.stderr
    assert cp.load_checkpoint(tmp_path / 't' / 'latest.pt')['total_iters'] > done


def test_official_command_lines_train_and_continue(tmp_path):
    "The official README's train / continue command lines, with only the program name changed."
    root = write_toy_dataset(tmp_path / 'datasets' / 'mini', n_train=3, n_test=2, size=32, seed=3)
    base = ['--dataroot', root, '--name', 'mini_cyclegan', '--model', 'cycle_gan', '--checkpoints_dir', tmp_path / 'checkpoints',
            '--crop_size', '32', '--load_size', '32', '--netG', 'resnet_6blocks', '--ngf', '4', '--ndf', '4',
            '--n_epochs', '1', '--n_epochs_decay', '1', '--num_threads', '0', '--quiet']
    r = cli(*base, '--gpu_ids', '-1', '--display_id', '0', '--no_html')
    assert r.returncode == 0, r.stderr
    assert '--gpu_ids -1 means --device cpu' in r.stdout and 'visdom is not used' in r.stdout
    assert cp.load_checkpoint(tmp_path / 'checkpoints' / 'mini_cyclegan' / 'latest.pt')['epoch'] == 3
    r = cli(*base, '--gpu_ids', '-1', '--continue_train', '--n_epochs_decay', '2')
    assert r.returncode == 0, r.stderr
    ck = cp.load_checkpoint(tmp_path / 'checkpoints' / 'mini_cyclegan' / 'latest.pt')
    assert ck['epoch'] == 4 and ck['total_iters'] == 9
    r = cli(*base, '--gpu_ids', '-1', '--continue_train', '--epoch', '7')
    assert r.returncode == 1 and 'epoch_7.pt' in one_line(r)
    r = cli(*base, '--model', 'pix2pix')
    assert r.returncode == 2 and 'cycle_gan only' in one_line(r)


def test_tensorboard_and_wandb_tracking(tmp_path):
    "--logger tensorboard writes events; --use_wandb (offline) writes a W&B run that --resume continues."
    pytest.importorskip('tensorboard'); pytest.importorskip('wandb')
    args = ['--dataroot', 'toy', '--name', 'trk', '--checkpoints_dir', tmp_path, '--print_freq', '2', '--display_freq', '3', *TINY]
    env = {'WANDB_MODE': 'offline', 'WANDB_SILENT': 'true', 'WANDB_DIR': str(tmp_path)}
    r = cli(*args, '--logger', 'tensorboard', '--use_wandb', '--wandb_project_name', 'test', env=env)
    assert r.returncode == 0, r.stderr
    run = tmp_path / 'trk'
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    ev = EventAccumulator(str(run / 'tensorboard')); ev.Reload()
    assert [s.step for s in ev.Scalars('loss/cycle_A')] == [r['iter'] for r in read_loss_log(run)]
    assert 'samples' in ev.Tags()['images']
    assert (run / 'wandb_id.txt').exists() and list((run / 'wandb').glob('offline-run-*'))


def test_oversized_image_is_a_bad_image_for_training_and_translation(tmp_path):
    "A 24 KB PNG of 200 million pixels (a decompression bomb to PIL): named in one line, skippable, never a traceback."
    from PIL import Image
    root = write_toy_dataset(tmp_path / 'data', n_train=3, n_test=1, size=32, seed=5)
    Image.new('P', (20000, 10000)).save(root / 'trainB' / 'bomb.png')
    args = ['--dataroot', root, '--checkpoints_dir', tmp_path / 'ck', '--crop_size', '32', '--load_size', '32',
            '--num_threads', '0', '--ngf', '4', '--ndf', '4', '--quiet', '--n_epochs', '1', '--n_epochs_decay', '0']
    r = cli(*args, '--name', 'a', '--serial_batches')
    msg = one_line(r)
    assert r.returncode == 1 and 'bomb.png' in msg and '--max_image_pixels' in msg, msg
    r = cli(*args, '--name', 'b', '--skip_bad_images')
    assert r.returncode == 0, r.stderr
    assert cli(*args, '--name', 'c', '--max_image_pixels', '-5').returncode == 2
    G = tmp_path / 'ck' / 'b'
    from cyclegan_edu.inference import translate_main
    r = run_main(translate_main, '--checkpoint', G, '--input', root / 'trainB', '--output', tmp_path / 'out')
    assert r.returncode == 0 and 'skipping bomb.png: too many pixels' in r.stdout + r.stderr, r.stderr
    assert len(list((tmp_path / 'out').glob('*.png'))) == 3
