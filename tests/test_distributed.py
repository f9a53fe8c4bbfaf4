"""Distributed training with real processes: two gloo processes on 127.0.0.1 started by torchrun, as a user would
start them on several GPUs. One run folder, identical weights on both processes, exact resume with the same number
of processes, resume in one process, and every failure (a NaN on one process, a process that dies or hangs,
processes started with different options, more processes than images) ends both in one line, never a hang.

The failures are injected with the test-only variable CYCLEGAN_EDU_TEST_FAIL='RANK:STEP:nan|exit|hang', and each
process writes the SHA-256 of its weights when CYCLEGAN_EDU_TEST_CHECKSUMS names a folder (cyclegan_edu.distributed)."""
import json, os, shutil, subprocess, sys, time
from pathlib import Path

import pytest
import torch

from cyclegan_edu import checkpoint as cp
from cyclegan_edu.config import CycleGANConfig
from cyclegan_edu.cyclegan import CycleGANModel
from cyclegan_edu.distributed import DDPGroup, torchrun_world, weight_checksums
from cyclegan_edu.inference import load_generator
from cyclegan_edu.run import read_loss_log

ROOT = Path(__file__).resolve().parents[1]
# 8 images, 2 processes, batch 1: 4 iterations per epoch, 2 epochs; losses logged every 2 iterations
TINY = ['--dataroot', 'toy', '--toy_n', '8', '--crop_size', '32', '--load_size', '32', '--ngf', '4', '--ndf', '4',
        '--n_epochs', '1', '--n_epochs_decay', '1', '--print_freq', '2', '--pool_size', '2', '--quiet', '--device', 'cpu']
PROG = 'cyclegan_edu_train: '


def _env(extra=None):
    return {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONUNBUFFERED': '1',
            'PYTHONPATH': os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')]), **(extra or {})}


def torchrun(ckdir, *args, env=None, script=None, nproc=2, timeout=120):
    "Run the training command in `nproc` processes (torchrun, gloo on 127.0.0.1); returns the CompletedProcess (+ seconds)."
    target = ['-m', 'cyclegan_edu.cli'] if script is None else [str(script)]
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', str(nproc), *target,
           '--checkpoints_dir', str(ckdir), *TINY, *map(str, args)]
    t = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_env(env))
    r.seconds = time.monotonic() - t
    return r


def ours(r) -> list:
    "The lines our command wrote to stderr (torchrun adds its own report after a failure)."
    return [l for l in r.stderr.splitlines() if l.startswith(PROG)]


def sums(folder) -> list:
    return [json.loads((Path(folder) / f'rank{i}.json').read_text()) for i in (0, 1)]


def test_two_processes_train_resume_and_load(tmp_path):
    "A run straight through (8 steps), the same run stopped at step 3 (mid-epoch) and resumed, and resumed in one process."
    d = tmp_path
    straight = torchrun(d, '--name', 'straight', env={'CYCLEGAN_EDU_TEST_CHECKSUMS': str(d / 'sums_straight')})
    part = torchrun(d, '--name', 'split', '--max_iters', '3')
    shutil.copytree(d / 'split', d / 'single', ignore=shutil.ignore_patterns('.lock'))  # for the one-process resume
    resumed = torchrun(d, '--name', 'split', '--resume', env={'CYCLEGAN_EDU_TEST_CHECKSUMS': str(d / 'sums_split')})
    for r in (straight, part, resumed): assert r.returncode == 0, r.stderr[-3000:]

    # both processes hold bit-identical weights, and the checkpoint (plain state_dicts) holds them
    s0, s1 = sums(d / 'sums_straight')
    assert s0 == s1
    ck = cp.load_checkpoint(d / 'straight' / 'latest.pt')
    model = CycleGANModel(CycleGANConfig.from_dict(ck['config']))
    model.load_state_dict(ck)                                  # no 'module.' prefixes anywhere
    assert weight_checksums(model.nets) == s0
    assert (ck['world_size'], ck['total_iters'], ck['epoch']) == (2, 8, 3) and len(ck['other_ranks']) == 1
    # one run folder, written once
    files = sorted(p.name for p in (d / 'straight').iterdir())
    assert files.count('config.json') == 1 and not [f for f in files if '.tmp' in f], files
    assert [r['iter'] for r in read_loss_log(d / 'straight')] == [2, 4, 6, 8]   # one record per window, not per process
    assert straight.stdout.count('run page:') == 1 and 'on each of 2 processes (2 images per step)' in straight.stdout

    # resuming with the same number of processes is exact
    assert cp.load_checkpoint(d / 'single' / 'latest.pt')['epoch_samples'] == 6   # 3 steps x 2 processes
    assert sums(d / 'sums_split')[0] == sums(d / 'sums_split')[1] == s0
    split, whole = read_loss_log(d / 'split'), read_loss_log(d / 'straight')
    assert [r['iter'] for r in split] == [2, 3, 4, 6, 8]   # the stop at 3 flushed a short window; each iteration once
    assert split[-2:] == whole[-2:]                         # later windows: the same (process-averaged) losses

    # resuming in one process continues at image 6 of epoch 1
    r = subprocess.run([sys.executable, '-m', 'cyclegan_edu.cli', '--checkpoints_dir', str(d), *TINY, '--name', 'single',
                        '--resume'], capture_output=True, text=True, timeout=120, env=_env())
    assert r.returncode == 0, r.stderr
    assert 'saved by 2 process(es), continuing with 1: the epoch continues at image 6 of 8' in r.stdout
    ck = cp.load_checkpoint(d / 'single' / 'latest.pt')
    assert (ck['world_size'], ck['total_iters'], ck['epoch']) == (1, 3 + 2 + 8, 3) and 'other_ranks' not in ck
    iters = [h['iter'] for h in ck['history']]
    assert iters == sorted(set(iters)) and iters[0] == 2
    # a single process loads the generators
    G = load_generator(d / 'single', 'AtoB', device='cpu')
    assert tuple(G(torch.zeros(1, 3, 32, 32)).shape) == (1, 3, 32, 32)
    G2 = load_generator(d / 'straight' / 'latest_net_G_A.pth', 'AtoB', device='cpu')
    assert weight_checksums({'G': G2}) == {'G': s1['G_A']}


def test_nan_on_one_process_stops_both(tmp_path):
    r = torchrun(tmp_path, '--name', 'nan', '--save_latest_freq', '2', env={'CYCLEGAN_EDU_TEST_FAIL': '1:3:nan'})
    assert r.returncode != 0
    assert ours(r) == [f"{PROG}error: loss_G_A became nan at iteration 3 (epoch 1). Training stopped; the last good "
                       f"checkpoint ({tmp_path / 'nan' / 'latest.pt'}, iteration 2) is kept. Try a lower --lr, check the "
                       "images for NaN/inf, or --resume with another --seed"]
    assert cp.load_checkpoint(tmp_path / 'nan' / 'latest.pt')['total_iters'] == 2


def test_a_process_that_dies_ends_the_run(tmp_path):
    r = torchrun(tmp_path, '--name', 'die', '--save_latest_freq', '2', env={'CYCLEGAN_EDU_TEST_FAIL': '1:3:exit'}, timeout=60)
    assert r.returncode != 0 and r.seconds < 60
    assert ours(r) == [f"{PROG}error: another process of this run stopped (its own message, or torchrun's report, says why); "
                       f"training stopped and the checkpoints in {tmp_path / 'die'} are kept: run the same command with --resume"]
    assert cp.load_checkpoint(tmp_path / 'die' / 'latest.pt')['total_iters'] == 2


def test_a_stuck_process_times_out(tmp_path):
    r = torchrun(tmp_path, '--name', 'hang', env={'CYCLEGAN_EDU_TEST_FAIL': '1:3:hang', 'CYCLEGAN_EDU_DIST_TIMEOUT': '5'},
                 timeout=60)
    assert r.returncode != 0 and r.seconds < 60
    assert len(ours(r)) == 1 and ours(r)[0].startswith(f"{PROG}error: the processes waited 5 s for each other: one of them "
                                                       "is stuck or has stopped"), r.stderr[-2000:]


def test_processes_with_different_options(tmp_path):
    script = tmp_path / 'launch.py'   # rank 1 gets another --lr, as a second machine started with another command would
    script.write_text("import os, sys\nfrom cyclegan_edu.cli import train_main\n"
                      "sys.exit(train_main(sys.argv[1:] + (['--lr', '0.001'] if os.environ['RANK'] == '1' else [])))\n")
    r = torchrun(tmp_path, '--name', 'mixed', script=script)
    assert r.returncode != 0
    assert ours(r) == [f"{PROG}error: the processes were started with different options: --lr is 0.0002 on rank 0 but "
                       "0.001 on rank 1; start every process with the same command and the same package versions"]
    assert not (tmp_path / 'mixed').exists()


def test_more_processes_than_images(tmp_path):
    r = torchrun(tmp_path, '--name', 'small', '--toy_n', '1')
    assert r.returncode != 0
    assert ours(r) == [f"{PROG}error: 1 training image(s) cannot be shared by 2 processes: start at most that many "
                       "(torchrun --nproc_per_node, --nnodes) or train on more images"]
    assert not (tmp_path / 'small').exists()


def test_device_and_environment_checked_before_starting(monkeypatch):
    assert torchrun_world() is None
    monkeypatch.setenv('WORLD_SIZE', '2'); monkeypatch.setenv('RANK', '1'); monkeypatch.setenv('LOCAL_RANK', '1')
    assert torchrun_world() == (1, 2, 1)
    with pytest.raises(ValueError, match='each process uses the GPU of its local rank'): DDPGroup('cuda:1')
    with pytest.raises(ValueError, match=r'NVIDIA GPUs \(NCCL\) or CPUs \(gloo\)'): DDPGroup('mps')
    monkeypatch.delenv('RANK')
    with pytest.raises(ValueError, match='start the processes with torchrun'): torchrun_world()


def test_an_official_dataset_not_yet_downloaded_is_one_shell_command_away(tmp_path, monkeypatch):
    from cyclegan_edu.distributed import _check_downloaded
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError) as e: _check_downloaded('horse2zebra')
    msg = str(e.value)
    assert 'not downloaded yet' in msg and 'cyclegan_edu_train --dataroot horse2zebra' in msg and 'python' not in msg, msg
    assert not (tmp_path / 'datasets').exists()                  # nothing created
    (tmp_path / 'datasets' / 'horse2zebra').mkdir(parents=True)
    _check_downloaded('horse2zebra')                              # there: no error
    _check_downloaded(str(tmp_path / 'my_data'))                  # a folder of the user's: not this check's business
