"""Benchmark: the README's main job (built-in dataset, toy defaults) — wall time, speed and the ground-truth margin.

    .venv/bin/python benchmarks/toy_demo.py [--seed 0] [--out results.json] [extra cyclegan_edu_train flags]

Trains in a temporary folder exactly as `make demo` does (`cyclegan_edu_train --dataroot toy`), then prints one JSON
record: seconds, iterations per second, PSNR of G_A(x) and G_B(y) against the ground truth on 64 held-out paired
scenes, the identity baseline, and the margin (translation PSNR minus identity PSNR). Targets (not enforced by the
test suite): at most 300 s on 2 CPU cores, and a margin of at least 10 dB for A->B.
"""
import argparse, contextlib, io, json, os, platform, sys, tempfile, time
from pathlib import Path

import torch

from cyclegan_edu.cli import train_main


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--out', help='also write the record to this JSON file')
    args, extra = p.parse_known_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            rc = train_main(['--dataroot', 'toy', '--name', 'bench', '--checkpoints_dir', tmp, '--seed', str(args.seed),
                             '--quiet', *extra])
        secs = time.perf_counter() - t
        if rc: sys.exit(rc)
        run = Path(tmp) / 'bench'
        m = json.loads((run / 'metrics.json').read_text())
        cfg = json.loads((run / 'config.json').read_text())
    iters = cfg['toy_n'] * (cfg['n_epochs'] + cfg['n_epochs_decay']) // cfg['batch_size']
    rec = {'seconds': round(secs, 1), 'iterations': iters, 'it_per_s': round(iters / secs, 2),
           'AtoB_psnr': round(m['AtoB_psnr'], 2), 'BtoA_psnr': round(m['BtoA_psnr'], 2),
           'identity_psnr': round(m['identity_psnr'], 2), 'AtoB_margin_db': round(m['AtoB_psnr'] - m['identity_psnr'], 2),
           'BtoA_margin_db': round(m['BtoA_psnr'] - m['identity_psnr'], 2), 'seed': args.seed, 'extra_flags': extra,
           'machine': f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads"}
    print(json.dumps(rec))
    if args.out: Path(args.out).write_text(json.dumps(rec, indent=1) + '\n')


if __name__ == '__main__': main()
