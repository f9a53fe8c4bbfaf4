"""`make gpu-check` (tools/gpu_check.py) in its dry mode: every stage's plumbing runs on the CPU at a tiny size, so the
GPU acceptance run cannot rot between the rare sessions that have a GPU. Its failure paths: a stage that fails or
is not reached makes the exit status 1, and the report says which and why."""
import json, subprocess, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'tools'))
import gpu_check  # noqa: E402


def run(*args, timeout=600):
    return subprocess.run([sys.executable, str(ROOT / 'tools' / 'gpu_check.py'), *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


def test_dry_run_exercises_every_stage(tmp_path):
    r = run('--dry', '--out', tmp_path, '--budget', 560)
    report = json.loads((tmp_path / 'report.json').read_text())
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-2000:])
    st = report['stages']
    assert list(st) == list(gpu_check.STAGES) and report['ok'] and report['dry']
    assert {k: s['status'] for k, s in st.items()} == {**{k: 'passed' for k in gpu_check.STAGES}, 'ddp': 'skipped'}
    assert 'at least 2' in st['ddp']['skipped']
    bench = st['benchmark']['figures']['training']
    assert set(bench) == {'official@1', 'channels_last@1', 'fast@1'} and bench['official@1']['vs_official'] == 1.0
    assert st['batch']['figures']['batch'] == 2 and st['batch']['figures']['img_s'] > 0
    q = st['quality']['figures']
    assert len(q['AtoB']['eager']) == len(q['AtoB']['fast']) == 2 and q['AtoB']['seed_spread'] >= 0
    w = st['walkthroughs']['figures']['32_fast_gpu']
    assert w['training'] and w['batch'] and w['quality']
    assert st['cuda tests']['figures']['collected'] >= 2  # pytest -m cuda selects the GPU tests
    assert set(st['cuda cells']['figures']) == set(gpu_check.CUDA_PAGES)
    md = (tmp_path / 'report.md').read_text()
    assert md.startswith('# GPU check: dry run on the CPU') and '## Training speed' in md and '## Quality' in md
    assert 'Result: PASSED' in md


def test_a_spent_budget_fails_the_check(tmp_path):
    r = run('--dry', '--out', tmp_path, '--budget', 1, '--only', 'benchmark')
    assert r.returncode == 1
    report = json.loads((tmp_path / 'report.json').read_text())
    assert not report['ok'] and report['stages']['benchmark']['failures'] == ['not run: the 1 s budget was spent']
    assert 'Result: FAILED' in (tmp_path / 'report.md').read_text()


@pytest.mark.parametrize('numbers, problem', [
    (dict(iters_first=300, iters_total=300), 'did not stop early'),
    (dict(AtoB_psnr=8.0), 'not 5 dB above doing nothing'),
    (dict(export_max_abs_diff=0.5), 'exported generator differs')])
def test_walkthrough_numbers_are_checked(numbers, problem):
    good = dict(iters_first=12, iters_total=300, it_s=40.0, AtoB_psnr=25.0, BtoA_psnr=20.0, identity_psnr=6.9,
                export_max_abs_diff=1e-6)
    assert gpu_check._check_walkthrough('30_horse2zebra', good, dry=False) == []
    fails = gpu_check._check_walkthrough('30_horse2zebra', {**good, **numbers}, dry=False)
    assert len(fails) == 1 and problem in fails[0]
    row = dict(variant='fast', batch=1, skipped='', finite=False)
    assert gpu_check._check_walkthrough('32_fast_gpu', {'training': [row], 'batch': []}, dry=True) == ['32: fast@1 non-finite losses']


def test_a_benchmark_cut_short_keeps_its_training_table(tmp_path, monkeypatch):
    "train_speed.py writes the training table before timing translation: a stage limit hit there keeps the figures."
    out = tmp_path / 'benchmark.json'
    def slow_run(cmd, **kw):
        out.write_text(json.dumps({'training': [{'variant': 'official', 'batch': 1}], 'translation': []}))
        raise subprocess.TimeoutExpired(cmd, kw['timeout'], output=b'| official | 1 | 9.1 |\n')
    monkeypatch.setattr(gpu_check.subprocess, 'run', slow_run)
    got, tail = gpu_check._train_speed(gpu_check.argparse.Namespace(dry=True), [], out, 30)
    assert got['training'][0]['variant'] == 'official' and tail == ['| official | 1 | 9.1 |', '(stopped at the 30 s limit)']
    out.unlink()
    def no_table(cmd, **kw): raise subprocess.TimeoutExpired(cmd, kw['timeout'])
    monkeypatch.setattr(gpu_check.subprocess, 'run', no_table)
    with pytest.raises(subprocess.TimeoutExpired): gpu_check._train_speed(gpu_check.argparse.Namespace(dry=True), [], out, 30)
