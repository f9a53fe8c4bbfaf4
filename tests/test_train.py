"""Training end to end with real processes and real files: a SIGKILLed run resumes from its last checkpoint,
a failed checkpoint write keeps the previous one, a diverged loss stops before overwriting a good checkpoint,
and the command line reports bad input in one clear line."""
import errno, json, os, signal, subprocess, sys, time
from pathlib import Path

import pytest
import torch

from cyclegan_edu import checkpoint as cp, train as tr
from cyclegan_edu.config import CycleGANConfig
from cyclegan_edu.run import RunLockedError, read_loss_log
from cyclegan_edu.toy import write_toy_dataset
from cyclegan_edu.cli import train_main

from conftest import run_main

TINY = ['--ngf', '4', '--ndf', '4', '--quiet']


def cli(*args, timeout=300):
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONUNBUFFERED': '1'}
    return subprocess.run([sys.executable, '-m', 'cyclegan_edu.cli', *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env)


def main(*args):
    "cyclegan_edu_train's main in this process: the same messages and exit status, without interpreter start-up."
    return run_main(train_main, *args)


def tiny_cfg(tmp_path, **kw):
    base = dict(dataroot='toy', name='run', checkpoints_dir=str(tmp_path), crop_size=32, load_size=32, netG='resnet_6blocks',
                ngf=4, ndf=4, toy_n=6, n_epochs=1, n_epochs_decay=0, num_threads=0, print_freq=1, pool_size=2)
    return CycleGANConfig(**{**base, **kw})


def test_sigkill_then_resume(tmp_path):
    "A real training process killed with SIGKILL loses only the work since its last checkpoint."
    args = ['--dataroot', 'toy', '--name', 'k', '--checkpoints_dir', tmp_path, '--toy_n', '400', '--crop_size', '32',
            '--load_size', '32', '--n_epochs', '5', '--n_epochs_decay', '0', '--save_latest_freq', '7', '--print_freq', '7', *TINY]
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    p = subprocess.Popen([sys.executable, '-m', 'cyclegan_edu.cli', *map(str, args)], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    ckpt = tmp_path / 'k' / 'latest.pt'
    deadline = time.time() + 120
    try:
        while time.time() < deadline:
            if ckpt.exists() and cp.load_checkpoint(ckpt)['total_iters'] >= 21: break
            assert p.poll() is None, p.stderr.read()
            time.sleep(0.2)
        else: pytest.fail("no checkpoint after 120 s")
    finally:
        p.send_signal(signal.SIGKILL); p.wait()
    assert p.returncode == -signal.SIGKILL
    ck = cp.load_checkpoint(ckpt)               # still loadable after the kill
    done = ck['total_iters']
    assert done % 7 == 0 and done >= 21
    r = cli(*args, '--resume', '--max_iters', done + 5)
    assert r.returncode == 0, r.stderr
    ck2 = cp.load_checkpoint(ckpt)
    assert ck2['total_iters'] == done + 5
    assert [h['iter'] for h in ck2['history']][-1] == done + 5
    logged = [r['iter'] for r in read_loss_log(tmp_path / 'k')]   # records logged after the kill's checkpoint are gone
    assert logged == [h['iter'] for h in ck2['history']] and len(set(logged)) == len(logged)


def test_failed_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / 'latest.pt'
    cp.atomic_save({'v': 1}, path)
    real_save = torch.save
    def full_disk(obj, f, *a, **k):
        real_save(obj, f, *a, **k)           # some bytes reach the temp file, then the disk is full
        raise OSError(errno.ENOSPC, 'No space left on device')
    monkeypatch.setattr(cp.torch, 'save', full_disk)
    with pytest.raises(cp.CheckpointWriteError, match='disk is full') as e:
        cp.atomic_save({'v': 2}, path)
    assert e.value.errno == errno.ENOSPC and '[Errno' not in str(e.value)   # the code for programs, words for people
    monkeypatch.setattr(cp.torch, 'save', real_save)
    assert torch.load(path, weights_only=True) == {'v': 1}
    assert [p.name for p in tmp_path.iterdir()] == ['latest.pt']   # no temp file left behind


def test_unwritable_checkpoints_dir(tmp_path):
    blocker = tmp_path / 'not_a_folder'; blocker.write_text('x')
    with pytest.raises(cp.CheckpointWriteError, match='writable --checkpoints_dir'):
        tr.Trainer(tiny_cfg(tmp_path, checkpoints_dir=str(blocker)), progress=False, log=None)


def test_stale_temp_files_and_corrupt_checkpoint(tmp_path):
    t = tr.Trainer(tiny_cfg(tmp_path, max_iters=2), progress=False, log=None); t.fit()
    ckpt = tmp_path / 'run' / 'latest.pt'
    stale = tmp_path / 'run' / '.latest.pt.tmp999'; stale.write_bytes(b'half a checkpoint')   # a kill mid-write
    tr.Trainer(tiny_cfg(tmp_path), resume=True, progress=False, log=None)
    assert not stale.exists()
    data = ckpt.read_bytes(); ckpt.write_bytes(data[: len(data) // 2])   # truncated, e.g. by a copy tool
    with pytest.raises(cp.CheckpointReadError, match='incomplete'):
        tr.Trainer(tiny_cfg(tmp_path), resume=True, progress=False, log=None)


def test_folder_dataset_with_workers(tmp_path):
    "The command-line path on real folders, with data-loading worker processes."
    root = write_toy_dataset(tmp_path / 'data', n_train=6, n_test=2, size=40, seed=1)
    r = cli('--dataroot', root, '--name', 'f', '--checkpoints_dir', tmp_path / 'ck', '--crop_size', '32', '--load_size', '36',
            '--netG', 'resnet_6blocks', '--n_epochs', '1', '--n_epochs_decay', '0', '--num_threads', '2', '--print_freq', '3', *TINY)
    assert r.returncode == 0, r.stderr
    run = tmp_path / 'ck' / 'f'
    assert json.loads((run / 'config.json').read_text())['dataroot'] == str(root)
    assert cp.load_checkpoint(run / 'latest.pt')['total_iters'] == 6
    assert (run / 'index.html').read_text().count('<figure>') >= 1


def test_cli_bad_input(tmp_path):
    r = main('--help'); assert r.returncode == 0 and '--lambda_identity' in r.stdout and '--resume' in r.stdout
    r = main('--name', 'x', '--checkpoints_dir', tmp_path, *TINY)
    assert r.returncode == 1 and 'no dataroot' in r.stderr
    r = main('--dataroot', tmp_path / 'nope', '--checkpoints_dir', tmp_path, *TINY)
    assert r.returncode == 1 and 'nope' in r.stderr and 'Traceback' not in r.stderr
    root = tmp_path / 'd'; (root / 'trainA').mkdir(parents=True); (root / 'trainB').mkdir()
    write_toy_dataset(tmp_path / 'tmp_imgs', n_train=2, n_test=1, size=32)
    for p in (tmp_path / 'tmp_imgs' / 'trainA').iterdir(): p.rename(root / 'trainA' / p.name)
    r = main('--dataroot', root, '--checkpoints_dir', tmp_path, '--crop_size', '32', '--load_size', '32', *TINY)
    assert r.returncode == 1 and 'trainB/ is empty' in r.stderr, r.stderr
    (root / 'trainB' / 'broken.png').write_bytes(b'\x89PNG\r\n\x1a\n not really')
    r = main('--dataroot', root, '--checkpoints_dir', tmp_path, '--crop_size', '32', '--load_size', '32', '--num_threads', '0', *TINY)
    assert r.returncode == 1 and 'broken.png' in r.stderr, r.stderr
    r = main('--dataroot', 'toy', '--netG', 'unet_256', *TINY)
    assert r.returncode == 2 and 'invalid choice' in r.stderr


def test_one_trainer_per_run(tmp_path):
    "Two trainers (or processes) never write the same run folder at once; the lock is released when fit() ends."
    first = tr.Trainer(tiny_cfg(tmp_path, max_iters=1), progress=False, log=None)
    with pytest.raises(RunLockedError, match='another process is training'):
        tr.Trainer(tiny_cfg(tmp_path, max_iters=2), resume=True, progress=False, log=None)
    first.fit()
    tr.Trainer(tiny_cfg(tmp_path, max_iters=2), resume=True, progress=False, log=None).fit()
    assert cp.load_checkpoint(tmp_path / 'run' / 'latest.pt')['total_iters'] == 2


def test_grayscale_to_rgb_run(tmp_path):
    "input_nc=1, output_nc=3 on folders: A images load as grayscale, the nets and the sample grid handle both."
    root = write_toy_dataset(tmp_path / 'data', n_train=3, n_test=2, size=32, seed=2)
    r = main('--dataroot', root, '--name', 'g', '--checkpoints_dir', tmp_path / 'ck', '--crop_size', '32', '--load_size', '32',
            '--input_nc', '1', '--lambda_identity', '0', '--n_epochs', '1', '--n_epochs_decay', '0', '--num_threads', '0', *TINY)
    assert r.returncode == 0, r.stderr
    ck = cp.load_checkpoint(tmp_path / 'ck' / 'g' / 'latest.pt')
    assert ck['nets']['G_A']['model.1.weight'].shape[1] == 1 and ck['nets']['G_B']['model.1.weight'].shape[1] == 3
    assert len(list((tmp_path / 'ck' / 'g' / 'images').glob('iter_*.png'))) == 1
    r = main('--dataroot', root, '--name', 'g2', '--checkpoints_dir', tmp_path / 'ck', '--input_nc', '1', *TINY)
    assert r.returncode == 2 and '--lambda_identity 0' in r.stderr   # the identity loss needs equal channels


def test_resume_keeps_the_runs_own_options(tmp_path):
    "`--resume` with only --dataroot and --name continues with the run's saved epochs and loader settings, not the defaults."
    root = write_toy_dataset(tmp_path / 'data', n_train=3, n_test=1, size=32, seed=4)
    base = ['--dataroot', root, '--name', 'r', '--checkpoints_dir', tmp_path / 'ck', '--quiet']
    r = main(*base, '--crop_size', '32', '--load_size', '32', '--netG', 'resnet_6blocks', '--ngf', '4', '--ndf', '4',
            '--n_epochs', '1', '--n_epochs_decay', '1', '--num_threads', '0', '--max_iters', '2')
    assert r.returncode == 0, r.stderr
    r = main(*base, '--resume')
    assert r.returncode == 0, r.stderr
    ck = cp.load_checkpoint(tmp_path / 'ck' / 'r' / 'latest.pt')
    assert (ck['config']['n_epochs_decay'], ck['config']['num_threads'], ck['total_iters'], ck['epoch']) == (1, 0, 6, 3)


def test_resume_with_more_epochs_trains_at_the_new_schedules_rate(tmp_path):
    "A finished run (learning rate decayed to 0) resumed with a larger --n_epochs trains at the rate the new schedule gives."
    root = write_toy_dataset(tmp_path / 'data', n_train=3, n_test=1, size=32, seed=4)
    base = ['--dataroot', root, '--name', 'r', '--checkpoints_dir', tmp_path / 'ck', *TINY, '--crop_size', '32',
            '--load_size', '32', '--netG', 'resnet_6blocks', '--num_threads', '0', '--n_epochs_decay', '1']
    r = main(*base, '--n_epochs', '1')
    assert r.returncode == 0, r.stderr
    latest = tmp_path / 'ck' / 'r' / 'latest.pt'
    done = cp.load_checkpoint(latest)
    assert done['epoch'] == 3 and done['optimizers']['G']['param_groups'][0]['lr'] == 0.0  # 1 + 1 epochs, decayed to 0
    r = main(*base, '--n_epochs', '3', '--resume', '--max_iters', str(done['total_iters'] + 1))
    assert r.returncode == 0, r.stderr
    assert '--n_epochs 1 → 3: the linear schedule gives epoch 3 the learning rate 0.0002' in r.stdout + r.stderr
    more = cp.load_checkpoint(latest)
    assert more['total_iters'] == done['total_iters'] + 1 and more['history'][-1]['lr'] == pytest.approx(2e-4)
    assert not torch.equal(more['nets']['G_A']['model.1.weight'], done['nets']['G_A']['model.1.weight'])  # it trained
    r = main(*base, '--n_epochs', '3', '--resume')  # and an unchanged schedule leaves the rate alone
    assert r.returncode == 0 and 'schedule gives' not in r.stdout + r.stderr


def test_truncated_checkpoint_is_one_plain_line(tmp_path):
    "A latest.pt cut short by an interrupted save is refused in words (no [Errno] code), naming the epoch file to use instead."
    good = tmp_path / 'epoch_1.pt'
    torch.save({'format': 'cyclegan_edu', 'w': torch.zeros(2000)}, good)
    cut = tmp_path / 'latest.pt'
    cut.write_bytes(good.read_bytes()[:5000])
    with pytest.raises(cp.CheckpointReadError) as e: cp.load_checkpoint(cut)
    msg = str(e.value)
    assert str(cut) in msg and 'epoch_1.pt' in msg and '[Errno' not in msg and '\n' not in msg
