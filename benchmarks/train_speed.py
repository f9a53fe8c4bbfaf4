"""Benchmark: how fast CycleGAN trains (and translates) with each speed option, on this machine.

    python benchmarks/train_speed.py --device cpu --size 64 --batch 1 [--ngf 64 --n_blocks 9]
        [--iters N --warmup N --windows N] [--variants official bf16 bf16+channels_last fast ...]
        [--infer_batch 1 4 16] [--json out.json]

Times full training iterations — the package's own CycleGANModel and the step `make_step` builds, with the official
losses and image pool, on synthetic batches already on the device — for each variant: first the official way (eager
float32, NCHW, batch 1), then the speed options alone and combined, and what --fast picks. A variant that cannot run
on the device is skipped with the reason. Variants are timed in turn, window after window, and the median window is
reported (--one_at_a_time: each variant fully, then freed, for GPUs short of
memory); the device is synchronised around every window. A second table times translation (the generator alone in
inference mode) for several batch sizes and precisions.

Columns: it/s, img/s (= it/s × batch), ms/iter, warm-up s (the untimed first iterations: compiling, recording CUDA
graphs), peak memory (CUDA: torch.cuda.max_memory_allocated; CPU: growth of the process's resident memory, sampled),
achieved TFLOP/s (FLOPs of one iteration counted once with torch.utils.flop_counter.FlopCounterMode) and the speed
(img/s) relative to the official way. Variant names: official, fast, or bf16 / fp16 / channels_last / compile /
cuda_graphs joined by '+'; fp32 is eager float32 at the --batch sizes.

Tiny and quick (the test suite runs this): --size 32 --ngf 8 --n_blocks 6 --iters 3 --windows 2 --warmup 1
"""
import argparse, json, sys
from pathlib import Path

import torch

from cyclegan_edu.benchmark import (VARIANTS, bench_config, describe_device, format_bytes, iteration_flops,
                                    time_training, time_translation, training_table, variant_options)
from cyclegan_edu.config import resolve_device


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], epilog=__doc__.split('\n\n', 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--device', default='', help='cpu, cuda, cuda:1 …; empty: the best available')
    p.add_argument('--size', type=int, default=64, help='image size (official: 256)')
    p.add_argument('--batch', type=int, nargs='+', default=[1], help='batch sizes for the variants (the official way always runs at 1)')
    p.add_argument('--ngf', type=int, default=64, help='generator width (official: 64)')
    p.add_argument('--ndf', type=int, default=None, help='discriminator width (default: --ngf)')
    p.add_argument('--n_blocks', type=int, default=9, choices=(6, 9), help='residual blocks of the generator (official: 9)')
    p.add_argument('--iters', type=int, default=10, help='iterations per timed window')
    p.add_argument('--windows', type=int, default=5, help='timed windows per variant (the median is reported)')
    p.add_argument('--warmup', type=int, default=3, help='untimed iterations first')
    p.add_argument('--variants', nargs='+', default=list(VARIANTS), help=f"default: {' '.join(VARIANTS)}")
    p.add_argument('--infer_batch', type=int, nargs='*', default=[1, 4, 16], help='batch sizes of the translation table (none: skip it)')
    p.add_argument('--one_at_a_time', action='store_true',
                   help='time each variant fully, then free it (less memory; default: all variants timed in turn)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--json', help='also write every number to this JSON file')
    a = p.parse_args(argv)
    for v in a.variants:
        try: variant_options(v)
        except ValueError as e: p.error(str(e))
    if min(a.batch + [a.size, a.ngf, a.iters, a.windows]) < 1 or a.warmup < 0:
        p.error('--size, --batch, --ngf, --iters and --windows must be at least 1, --warmup at least 0')
    try: a.device = resolve_device(a.device)
    except ValueError as e: p.error(str(e))
    return a


def main(argv=None):
    a = parse_args(argv)
    dev, net = a.device, dict(ngf=a.ngf, ndf=a.ndf, n_blocks=a.n_blocks)
    machine = describe_device(dev)
    print(f"## Training speed on {machine}\n\n{a.size}×{a.size}, ngf {a.ngf}, ndf {a.ndf or a.ngf}, resnet_{a.n_blocks}blocks, "
          f"official losses and image pool; median of {a.windows} windows of {a.iters} iterations after {a.warmup} "
          f"warm-up iterations\n", flush=True)
    cfgs = {'official': bench_config(a.size, batch_size=1, **net)}
    for b in a.batch:
        for v in a.variants:
            if v == 'official' or (v == 'fp32' and b == 1): continue
            cfgs[f'{v}@{b}'] = bench_config(a.size, batch_size=b, variant=v, **net)
    flops = iteration_flops(cfgs['official'], dev)  # one real iteration, counted once
    rows = time_training(cfgs, dev, iters=a.iters, warmup=a.warmup, windows=a.windows, seed=a.seed,
                         in_turn=not a.one_at_a_time)
    print(training_table(rows, flops)._repr_markdown_())
    notes = sorted({f"{k.split('@')[0]}: {n}" for k, r in rows.items() for n in ([r['skipped']] if r['skipped'] else r['notes'])})
    bad = [k for k, r in rows.items() if not r['skipped'] and not r['finite']]
    if notes: print('\n' + '\n'.join(f'- {n}' for n in notes))
    if bad: print(f"\nWARNING: non-finite losses in {bad}")
    print(f"\nOne image-iteration: {flops / 1e12:.4g} TFLOP (FlopCounterMode, batch 1).", flush=True)
    if a.json: write_json(a, machine, dev, flops, rows, [])  # the training table is kept if the translation table is cut short

    infer = []
    if a.infer_batch:
        amps = ['none', 'bf16', 'fp16'] if dev.type == 'cuda' else ['none', 'bf16']
        for b in a.infer_batch:
            for amp in amps:
                infer.append(time_translation(bench_config(a.size, **net), dev, b, amp, iters=a.iters, warmup=a.warmup,
                                              windows=a.windows, seed=a.seed))
        ref = next(r['img_s'] for r in infer if not r['skipped'])
        print(f"\n## Translation (generator forward, inference mode) on {machine}\n")
        print('| precision | batch | img/s | ms/batch | peak memory | vs fp32 batch 1 |\n|---|---|---|---|---|---|')
        for r in infer:
            if r['skipped']: continue
            print(f"| {'fp32' if r['amp'] == 'none' else r['amp']} | {r['batch']} | {r['img_s']:.3g} | "
                  f"{1000 * r['sec_per_batch']:.1f} | {format_bytes(r['peak_bytes'])} | {r['img_s'] / ref:.2f}× |")
        if dev.type != 'cuda': print("\n- fp16: skipped (fp16 autocast is for GPUs)")

    if a.json: write_json(a, machine, dev, flops, rows, infer)
    return 0


def write_json(a, machine, dev, flops, rows, infer):
    "Every number so far to the --json file (replaced as a whole: a reader never sees half a file)."
    out = {'machine': machine, 'device': str(dev), 'torch': torch.__version__,
           'settings': {k: getattr(a, k) for k in ('size', 'batch', 'ngf', 'ndf', 'n_blocks', 'iters', 'windows',
                                                  'warmup', 'variants', 'infer_batch', 'seed', 'one_at_a_time')},
           'flops_per_image_iteration': flops,
           'training': [{'variant': k.split('@')[0], **r,
                         'tflop_s': flops * r['img_s'] / 1e12 if not r['skipped'] else None,
                         'vs_official': r['img_s'] / rows['official']['img_s'] if not r['skipped'] else None}
                        for k, r in rows.items()],
           'translation': infer}
    tmp = Path(a.json).with_name(Path(a.json).name + '.tmp')
    tmp.write_text(json.dumps(out, indent=1) + '\n')
    tmp.replace(a.json)


if __name__ == '__main__': sys.exit(main())
