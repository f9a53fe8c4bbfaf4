"""`make gpu-check`: the GPU half of cyclegan_edu, proved in one command on a machine with an NVIDIA GPU.

    python tools/gpu_check.py [--out gpu-check] [--budget 480]     # on a GPU machine (no internet needed)
    python tools/gpu_check.py --dry [--out DIR]                     # the same plumbing on the CPU, at a tiny size

Stages, in this order (each in its own process with its own time limit, so a CUDA error or a hang in one stage is
recorded and the others still run). The order puts what a short GPU session must not miss first: the correctness of
the CUDA code paths, then the speed table, then the walkthroughs a Colab learner runs; a budget spent early leaves
the later, longer stages reported as not run (rerun them with --only):

  environment   the GPU, its memory and compute capability, bf16, PyTorch and CUDA versions
  cuda tests    every test marked `cuda` (pytest -m cuda)
  benchmark     benchmarks/train_speed.py at 256² (official maths and image pool) for the official way (eager fp32,
                batch 1), bf16 + channels_last, + compile, + CUDA graphs, fp32 + CUDA graphs and --fast, measured in
                the same run, with the ratios and the targets
  batch         the largest batch that fits with --fast (from the memory --fast took at batch 1), img/s
  walkthroughs  walkthroughs 1 and 3 (30_horse2zebra, 32_fast_gpu) in their GPU-check mode: the built-in task at
                256² written as official folders, a few hundred iterations, a time budget and a resume; the numbers
                they print are checked
  cuda cells    every `#| cuda` cell of pages 05, 16, 17 and 40 (the whole page runs, as in Colab)
  quality       --fast against eager float32 on the built-in task: ground-truth PSNR within the seed spread
  ddp           torchrun --nproc_per_node N with NCCL when there are N >= 2 GPUs (else: skipped, saying so)

It writes OUT/report.json and OUT/report.md (device, versions, every figure, every failure) after every stage, and
exits 1 if any stage failed (a missed speed target is reported, not a failure). --dry runs every stage on the CPU
at a tiny size (the cuda tests are only collected, the cuda cells only listed, DDP is skipped): `make test` runs it,
so the script cannot rot between GPU sessions.
"""
import argparse, json, math, os, platform, re, statistics, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = ('environment', 'cuda tests', 'benchmark', 'batch', 'walkthroughs', 'cuda cells', 'quality', 'ddp')
CUDA_PAGES = ('05_pool', '16_fast', '17_distributed', '40_performance')
WALKTHROUGHS = ('30_horse2zebra', '32_fast_gpu')
# the most of the budget each stage may take (what earlier stages leave over goes to the later ones)
SHARE = {'environment': 0.1, 'benchmark': 0.45, 'batch': 0.15, 'quality': 0.2, 'walkthroughs': 0.45, 'cuda tests': 0.1,
         'cuda cells': 0.3, 'ddp': 0.1}
# the targets of the fast path at 256², batch 1 (H100/H200 class); reported, never a failure
TARGETS = {'fast it/s': 60, 'fast vs official': 6.6, 'fp32 CUDA graphs it/s': 25, 'largest batch img/s': 200}
BENCH_VARIANTS = ('bf16+channels_last', 'bf16+channels_last+compile', 'bf16+channels_last+compile+cuda_graphs',
                  'cuda_graphs', 'fast')


def settings(dry: bool) -> dict:
    "Sizes and lengths of every stage: the real check, or the dry run's tiny ones."
    if dry:
        return dict(device='cpu', bench=['--size', '32', '--ngf', '8', '--n_blocks', '6', '--iters', '2', '--windows', '1',
                                          '--warmup', '1', '--variants', 'channels_last', 'fast'],
                    batches=(2,), quality=dict(size=32, ngf=8, n=16), seeds=(0, 1), walkthroughs=('32_fast_gpu',))
    return dict(device='cuda', bench=['--size', '256', '--ngf', '64', '--n_blocks', '9', '--iters', '20', '--windows', '3',
                                      '--warmup', '5', '--variants', *BENCH_VARIANTS],
                batches=(64, 32, 16, 8, 4), quality=dict(size=64, ngf=16, n=150), seeds=(0, 1), walkthroughs=WALKTHROUGHS)


# --- the stages: each returns {'figures': {...}, 'failures': [...], 'notes': [...]} ---

def stage_environment(a, S):
    import torch
    f = {'python': platform.python_version(), 'torch': torch.__version__, 'cuda': torch.version.cuda,
         'gpus': torch.cuda.device_count() if torch.cuda.is_available() else 0}
    fails = []
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        f.update(device=p.name, memory_gib=round(p.total_memory / 2**30, 1), capability=f'{p.major}.{p.minor}',
                 bf16=torch.cuda.is_bf16_supported())
    elif not a.dry: fails.append('no CUDA GPU is visible to PyTorch (torch.cuda.is_available() is False)')
    else: f['device'] = 'cpu (dry run)'
    return {'figures': f, 'failures': fails}


def _train_speed(a, args: list, json_path: Path, limit: float) -> tuple:
    "Run benchmarks/train_speed.py; returns (its JSON or None, the last lines it printed)."
    cmd = [sys.executable, str(ROOT / 'benchmarks' / 'train_speed.py'), '--device', settings(a.dry)['device'], *args,
           '--json', str(json_path)]
    json_path.unlink(missing_ok=True)
    try: r = subprocess.run(cmd, capture_output=True, text=True, timeout=limit, cwd=ROOT)
    except subprocess.TimeoutExpired as e:  # the training table is written before the translation table is timed
        said = (e.stdout or b'').decode(errors='replace') if isinstance(e.stdout, bytes) else (e.stdout or '')
        if not json_path.is_file(): raise
        return json.loads(json_path.read_text()), said.strip().splitlines()[-12:] + [f'(stopped at the {limit:.0f} s limit)']
    tail = (r.stdout + r.stderr).strip().splitlines()[-12:]
    if r.returncode != 0 or not json_path.is_file(): return None, tail
    return json.loads(json_path.read_text()), tail


def _row(rows, variant, batch=1):
    return next((r for r in rows if r['variant'] == variant and r['batch'] == batch and not r['skipped']), None)


def stage_benchmark(a, S):
    out, tail = _train_speed(a, S['bench'] + ['--infer_batch', '1', '8'], a.out / 'benchmark.json', a.stage_limit)
    if out is None: return {'failures': ['benchmarks/train_speed.py failed: ' + ' | '.join(tail[-4:])]}
    rows, fails = out['training'], []
    if tail and tail[-1].startswith('(stopped at'): fails.append(f'the translation table was cut short {tail[-1][1:-1]}')
    table = {f"{r['variant']}@{r['batch']}": (None if r['skipped'] else
             {'it_s': round(r['it_s'], 2), 'img_s': round(r['img_s'], 2), 'vs_official': round(r['vs_official'], 2),
              'peak_bytes': r.get('peak_bytes')}) for r in rows}
    skipped = {f"{r['variant']}@{r['batch']}": r['skipped'] for r in rows if r['skipped']}
    fails += [f"{k}: non-finite losses" for k, r in ((f"{r['variant']}@{r['batch']}", r) for r in rows)
              if not r['skipped'] and not r['finite']]
    if not a.dry: fails += [f"{k} was skipped on the GPU: {why}" for k, why in skipped.items()]
    fast, graphs = _row(rows, 'fast'), _row(rows, 'cuda_graphs')
    targets = {}
    if fast: targets.update({'fast it/s': round(fast['it_s'], 1), 'fast vs official': round(fast['vs_official'], 2)})
    if graphs: targets['fp32 CUDA graphs it/s'] = round(graphs['it_s'], 1)
    notes = [n for r in rows for n in r.get('notes', [])]
    return {'figures': {'machine': out['machine'], 'training': table, 'skipped': skipped, 'translation': out['translation'],
                        'targets': targets, 'tflop_per_image_iteration': out['flops_per_image_iteration'] / 1e12},
            'failures': fails, 'notes': sorted(set(notes))}


def stage_batch(a, S):
    "The largest batch with --fast: candidates that fit 80% of the GPU's memory by --fast's peak at batch 1, largest first."
    import torch
    bench = json.loads((a.out / 'benchmark.json').read_text()) if (a.out / 'benchmark.json').is_file() else None
    cands = list(S['batches'])
    if not a.dry and bench and (r := _row(bench['training'], 'fast')) and r.get('peak_bytes'):
        fits = 0.8 * torch.cuda.get_device_properties(0).total_memory / r['peak_bytes']
        cands = [b for b in cands if b <= fits] or [cands[-1]]
    size_args = S['bench'][:S['bench'].index('--variants')]
    if not a.dry: size_args += ['--iters', '5', '--windows', '2', '--warmup', '3']  # large batches: seconds per iteration
    tried = {}
    for b in cands:
        out, tail = _train_speed(a, size_args + ['--variants', 'fast', '--batch', str(b), '--infer_batch'],
                                 a.out / f'batch_{b}.json', a.stage_limit)
        if out is not None and (r := _row(out['training'], 'fast', b)):
            return {'figures': {'batch': b, 'img_s': round(r['img_s'], 1), 'vs_official': round(r['vs_official'], 2),
                                'tried': tried, 'targets': {'largest batch img/s': round(r['img_s'], 1)}}}
        tried[b] = ' | '.join(tail[-2:])
        if not any('out of memory' in l.lower() for l in tail): break  # a real failure, not a batch too large
    return {'failures': [f'--fast trained at none of the batch sizes {cands}: {tried}']}


def stage_quality(a, S):
    "Ground-truth PSNR of --fast and eager on the built-in task, same seeds and iterations: within the seed spread?"
    from cyclegan_edu.benchmark import toy_run
    q = S['quality']
    runs = {(fast, s): toy_run(s, **q, fast=fast) for fast in (False, True) for s in S['seeds']}
    fig, fails = {'settings': {**q, 'seeds': list(S['seeds']), 'steps': runs[(False, S['seeds'][0])]['steps']}}, []
    for d in ('AtoB', 'BtoA'):
        e = [runs[(False, s)][f'{d}_psnr'] for s in S['seeds']]; f = [runs[(True, s)][f'{d}_psnr'] for s in S['seeds']]
        spread = max(max(e) - min(e), max(f) - min(f))
        gap = abs(statistics.mean(f) - statistics.mean(e))
        fig[d] = {'eager': [round(x, 2) for x in e], 'fast': [round(x, 2) for x in f], 'gap': round(gap, 2),
                  'seed_spread': round(spread, 2)}
        if not all(map(math.isfinite, e + f)): fails.append(f'{d}: a PSNR is not finite')
        elif gap > spread + 0.5: fails.append(f'{d}: --fast {statistics.mean(f):.2f} dB vs eager {statistics.mean(e):.2f} dB '
                                              f'differ by {gap:.2f} dB, more than the seed spread {spread:.2f} dB + 0.5')
    fig['plan'] = runs[(True, S['seeds'][0])]['plan']
    return {'figures': fig, 'failures': fails}


def _check_walkthrough(name, r, dry) -> list:
    "What the page's numbers must satisfy."
    fails = []
    if name == '30_horse2zebra':
        if not 0 < r['iters_first'] < r['iters_total']: fails.append(f"30: the first chunk did not stop early ({r['iters_first']} of {r['iters_total']})")
        if not r['it_s'] > 0: fails.append(f"30: speed {r['it_s']} it/s")
        if not r['AtoB_psnr'] > r['identity_psnr'] + 5: fails.append(f"30: day → night {r['AtoB_psnr']:.1f} dB is not 5 dB above doing nothing ({r['identity_psnr']:.1f})")
        if not r['export_max_abs_diff'] < 1e-3: fails.append(f"30: exported generator differs by {r['export_max_abs_diff']}")
    if name == '32_fast_gpu':
        for row in r['training'] + r['batch']:
            if not row['skipped'] and not row['finite']: fails.append(f"32: {row['variant']}@{row['batch']} non-finite losses")
            if not dry and row['skipped']: fails.append(f"32: {row['variant']}@{row['batch']} skipped on the GPU: {row['skipped']}")
    return fails


def stage_walkthroughs(a, S):
    sys.path.insert(0, str(ROOT / 'tools'))
    import run_nbs
    folder = a.out / 'walkthroughs'; folder.mkdir(exist_ok=True)
    os.environ['CYCLEGAN_EDU_GPU_CHECK'] = str(folder)
    fig, fails = {}, []
    for name in S['walkthroughs']:
        t = time.perf_counter()
        try: run_nbs.run_notebook(ROOT / 'nbs' / f'{name}.ipynb', flags=('cuda',), timeout=int(a.stage_limit))
        except Exception as e: fails.append(f'{name}: {str(e).splitlines()[0]} | {str(e).splitlines()[-1]}'); continue
        out = folder / f'{name}.json'
        if not out.is_file(): fails.append(f'{name}: the page wrote no {out.name} (its GPU-check cell did not run)'); continue
        fig[name] = {**json.loads(out.read_text()), 'page_seconds': round(time.perf_counter() - t, 1)}
        fails += _check_walkthrough(name, fig[name], a.dry)
    return {'figures': fig, 'failures': fails}


def _pytest_summary(text: str) -> dict:
    m = {k: int(n) for n, k in re.findall(r'(\d+) (passed|failed|errors?|skipped|deselected|tests? collected)', text)}
    return m


def stage_cuda_tests(a, S):
    cmd = [sys.executable, '-m', 'pytest', '-q', '-m', 'cuda', '-p', 'no:cacheprovider', 'tests'] + (['--collect-only'] if a.dry else [])
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=a.stage_limit, cwd=ROOT)
    summary = _pytest_summary(r.stdout.strip().splitlines()[-1] if r.stdout.strip() else '')
    ids = [l for l in r.stdout.splitlines() if '::' in l]
    fails = []
    if a.dry:
        if r.returncode != 0 or not ids: fails.append(f'pytest -m cuda collected no test (exit {r.returncode})')
        return {'figures': {'collected': len(ids), 'tests': ids}, 'failures': fails}
    if r.returncode != 0 or summary.get('passed', 0) == 0:
        fails.append('pytest -m cuda: ' + ' | '.join(l for l in r.stdout.splitlines() if l.startswith(('FAILED', 'ERROR')))[:1500]
                     + f" ({r.stdout.strip().splitlines()[-1] if r.stdout.strip() else 'no output'})")
    return {'figures': summary, 'failures': fails}


def stage_cuda_cells(a, S):
    sys.path.insert(0, str(ROOT / 'tools'))
    import nbformat, run_nbs
    fig, fails = {}, []
    for page in CUDA_PAGES:
        path = ROOT / 'nbs' / f'{page}.ipynb'
        cells = [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == 'code' and run_nbs.skip_reason(c, {'cuda'})]
        if not cells: fails.append(f'{page}: no #| cuda cell found'); continue
        if a.dry: fig[page] = {'cuda_cells': len(cells)}; continue
        try: res = run_nbs.run_notebook(path, flags=('cuda',), timeout=int(a.stage_limit))
        except Exception as e: fails.append(f'{page}: {str(e).splitlines()[0]} | {str(e).splitlines()[-1]}'); continue
        fig[page] = {'cuda_cells': len(cells), 'cells_run': res.run, 'seconds': round(res.seconds, 1)}
    return {'figures': fig, 'failures': fails}


def stage_ddp(a, S):
    import torch
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if n < 2: return {'skipped': f'{n} GPU(s): DDP with NCCL needs at least 2 (torchrun --nproc_per_node 2)'}
    with tempfile.TemporaryDirectory() as d:
        cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={n}', '-m', 'cyclegan_edu.cli',
               '--dataroot', 'toy', '--name', 'ddp', '--checkpoints_dir', d, '--max_iters', '20', '--device', 'cuda',
               '--crop_size', '64', '--load_size', '64']
        t = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=a.stage_limit, cwd=ROOT)
        ok = r.returncode == 0 and (Path(d) / 'ddp' / 'latest.pt').is_file()
        fig = {'processes': n, 'seconds': round(time.perf_counter() - t, 1), 'exit': r.returncode}
        return {'figures': fig, 'failures': [] if ok else ['torchrun with NCCL: ' + ' | '.join((r.stdout + r.stderr).strip().splitlines()[-3:])]}


FUNCS = {'environment': stage_environment, 'cuda tests': stage_cuda_tests, 'benchmark': stage_benchmark,
         'batch': stage_batch, 'walkthroughs': stage_walkthroughs, 'cuda cells': stage_cuda_cells,
         'quality': stage_quality, 'ddp': stage_ddp}
assert set(FUNCS) == set(STAGES)


# --- the driver ---

def run_stage(a, name: str, limit: float) -> dict:
    "One stage in its own process (a CUDA error or a hang cannot take the others with it)."
    res_path = a.out / f".stage_{name.replace(' ', '_')}.json"
    res_path.unlink(missing_ok=True)
    cmd = [sys.executable, __file__, '--stage', name, '--out', str(a.out), '--stage_limit', str(limit)] + (['--dry'] if a.dry else [])
    t = time.perf_counter()
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=limit + 30, cwd=ROOT)
        res = json.loads(res_path.read_text()) if res_path.is_file() else {
            'failures': [f"the stage's process ended with exit {r.returncode}: " + ' | '.join((r.stdout + r.stderr).strip().splitlines()[-3:])]}
    except subprocess.TimeoutExpired: res = {'failures': [f'did not finish within its {limit:.0f} s']}
    res['seconds'] = round(time.perf_counter() - t, 1)
    res['status'] = 'skipped' if res.get('skipped') else 'failed' if res.get('failures') else 'passed'
    return res


def write_reports(a, report: dict):
    (a.out / 'report.json').write_text(json.dumps(report, indent=1, default=str) + '\n')
    env = report['stages'].get('environment', {}).get('figures', {})
    lines = [f"# GPU check: {'dry run on the CPU' if a.dry else env.get('device', '?')}", '',
             f"PyTorch {env.get('torch')}, CUDA {env.get('cuda')}, Python {env.get('python')}, {env.get('gpus', 0)} GPU(s)"
             + (f", {env.get('memory_gib')} GiB, compute capability {env.get('capability')}, bf16: {env.get('bf16')}" if 'memory_gib' in env else ''),
             '', '| stage | status | seconds | failures |', '|---|---|---|---|']
    for name, s in report['stages'].items():
        lines.append(f"| {name} | {s['status']} | {s['seconds']} | {'; '.join(s.get('failures', [])) or s.get('skipped', '')} |")
    bench = report['stages'].get('benchmark', {}).get('figures', {})
    if bench.get('training'):
        lines += ['', f"## Training speed ({bench['machine']})", '', '| variant | it/s | img/s | vs official |', '|---|---|---|---|']
        for k, r in bench['training'].items():
            lines.append(f"| {k} | {r['it_s']} | {r['img_s']} | {r['vs_official']}× |" if r else f"| {k} | skipped: {bench['skipped'].get(k, '')} | | |")
    b = report['stages'].get('batch', {}).get('figures', {})
    if b.get('batch'): lines.append(f"| fast@{b['batch']} (largest batch tried that fits) | | {b['img_s']} | {b['vs_official']}× |")
    got = {**bench.get('targets', {}), **b.get('targets', {})}
    if got and not a.dry:  # the targets are for H100/H200-class GPUs at 256²
        lines += ['', '## Targets (H100/H200 class, 256²)', '', '| target | wanted | measured | met |', '|---|---|---|---|']
        lines += [f"| {k} | ≥ {v} | {got[k]} | {'yes' if got[k] >= v else 'no'} |" for k, v in TARGETS.items() if k in got]
    q = report['stages'].get('quality', {}).get('figures', {})
    if 'AtoB' in q:
        lines += ['', f"## Quality: --fast ({q['plan']}) vs eager, built-in task {q['settings']}", '',
                  '| direction | eager PSNR dB | --fast PSNR dB | gap | seed spread |', '|---|---|---|---|---|']
        lines += [f"| {d} | {q[d]['eager']} | {q[d]['fast']} | {q[d]['gap']} | {q[d]['seed_spread']} |" for d in ('AtoB', 'BtoA')]
    lines += ['', f"Result: {'PASSED' if report['ok'] else 'FAILED'} in {report['seconds']} s"]
    (a.out / 'report.md').write_text('\n'.join(lines) + '\n')


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], epilog=__doc__.split('\n\n', 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--out', default='gpu-check', help='folder for report.json, report.md and the raw results')
    p.add_argument('--budget', type=float, default=480, help='seconds for the whole check (stages share what is left)')
    p.add_argument('--dry', action='store_true', help='on the CPU at a tiny size: the plumbing, not the GPU')
    p.add_argument('--only', nargs='+', choices=STAGES, metavar='STAGE', help=f"run only these stages ({', '.join(STAGES)})")
    p.add_argument('--stage', choices=STAGES, help=argparse.SUPPRESS)  # internal: run one stage in this process
    p.add_argument('--stage_limit', type=float, default=600, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    a.out = Path(a.out).resolve(); a.out.mkdir(parents=True, exist_ok=True)
    if a.stage:  # a stage's own process
        try: res = FUNCS[a.stage](a, settings(a.dry))
        except subprocess.TimeoutExpired as e: res = {'failures': [f'{" ".join(map(str, e.cmd[:4]))} … ran past {e.timeout:.0f} s']}
        except Exception as e: res = {'failures': [f'{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ""}']}
        (a.out / f".stage_{a.stage.replace(' ', '_')}.json").write_text(json.dumps(res, default=str))
        return 0
    t0, report = time.perf_counter(), {'dry': a.dry, 'stages': {}, 'ok': False}
    todo = [s for s in STAGES if not a.only or s in a.only or s == 'environment']
    for i, name in enumerate(todo):
        left = a.budget - (time.perf_counter() - t0)
        if left < 20:
            report['stages'][name] = {'status': 'failed', 'seconds': 0, 'failures': [f'not run: the {a.budget:.0f} s budget was spent']}
            continue
        print(f'gpu-check: {name} …', flush=True)
        report['stages'][name] = res = run_stage(a, name, min(left, max(SHARE[name] * a.budget, 60)))
        print(f"gpu-check: {name}: {res['status']} ({res['seconds']} s)" + ''.join(f'\n  - {f}' for f in res.get('failures', [])), flush=True)
        report['seconds'] = round(time.perf_counter() - t0, 1)
        report['ok'] = all(s['status'] != 'failed' for s in report['stages'].values())
        write_reports(a, report)
    report['seconds'] = round(time.perf_counter() - t0, 1)
    report['ok'] = all(s['status'] != 'failed' for s in report['stages'].values())
    write_reports(a, report)
    print(f"gpu-check: {'passed' if report['ok'] else 'FAILED'} in {report['seconds']} s; reports: {a.out / 'report.md'}, "
          f"{a.out / 'report.json'}")
    return 0 if report['ok'] else 1


if __name__ == '__main__': sys.exit(main())
