"""The speed options change how a training iteration runs, not what it computes: each gives eager float32's losses and
trained networks within its stated tolerance. plan_speed's fallbacks each say why in one line. A run resumes across
speed options with the same checkpoint format. The speed benchmark runs end to end. CUDA-only checks skip without a GPU.

Comparing trained networks by their outputs, not weight by weight: Adam turns a gradient within rounding of zero (a
conv bias right before instance normalisation, which the norm cancels) into a step of up to ±lr, so single weights
can differ by a few lr while the networks compute the same function."""
import json, os, subprocess, sys, time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import cyclegan_edu.cyclegan as cg
from cyclegan_edu import checkpoint as cp, fast
from cyclegan_edu.config import CycleGANConfig
from cyclegan_edu.core import seed_everything
from cyclegan_edu.cyclegan import CycleGANModel
from cyclegan_edu.fast import SpeedPlan, make_step, plan_speed
from cyclegan_edu.generator import ResnetGenerator, init_weights
from cyclegan_edu.train import Trainer, get_scheduler

ROOT = Path(__file__).resolve().parents[1]
CUDA = pytest.mark.cuda  # skipped without a GPU (conftest); `make gpu-check` runs them


def tiny_cfg(**kw):
    return CycleGANConfig(**{**dict(crop_size=32, load_size=32, ngf=4, ndf=4, netG='resnet_6blocks', pool_size=2), **kw})


def batches(n, b=2, size=32, seed=0, device='cpu'):
    g = torch.Generator().manual_seed(seed)
    return [{k: (torch.rand(b, 3, size, size, generator=g) * 2 - 1).to(device) for k in 'AB'} for _ in range(n)]


def train(plan, n=3, device='cpu', cfg=None, before_step=None):
    "n iterations from the same start (weights, data and the pool's python random draws); returns (model, losses per step)."
    seed_everything(0)
    m = CycleGANModel(cfg or tiny_cfg(), device)
    if before_step: before_step(m)
    step, losses = make_step(m, plan), []
    for batch in batches(n, device=device):
        m.set_input(batch); losses.append({k: v.item() for k, v in step().items()})
    return m, losses


def compare(ref, other):
    """How far `other` ended from `ref`: the largest relative loss difference over all steps, and the mean |output
    difference| of the trained generators and discriminators on a fresh batch (the larger of each pair), plus the
    generators' max.

    Float32 options are judged by the means: summing in another order can put a ReLU input within rounding of zero on
    the other side of the kink, or flip the sign of Adam's first step for a weight whose gradient is ~0, and one such
    flip moves a few output pixels by up to ~3e-4 (measured over 12 input seeds with channels_last: mean differences
    at most 6e-5, max up to 2.9e-4), while a real fault moves the means by 5e-3 or more (one residual block skipped:
    9e-2; one instance norm's eps 1e-5 -> 1e-3: 8e-3 / 1.2e-2)."""
    (m0, l0), (m1, l1) = ref, other
    dl = max(abs(a[k] - b[k]) / max(abs(a[k]), 1e-3) for a, b in zip(l0, l1) for k in a)
    x = batches(1, seed=99, device=m0.device)[0]['A']
    with torch.no_grad():
        diff = {k: (m0.nets[k](x).float() - m1.nets[k](x).float()).abs() for k in ('G_A', 'G_B', 'D_A', 'D_B')}
    return SimpleNamespace(loss=dl, g_mean=max(diff[k].mean().item() for k in ('G_A', 'G_B')),
                           d_mean=max(diff[k].mean().item() for k in ('D_A', 'D_B')),
                           g_max=max(diff[k].max().item() for k in ('G_A', 'G_B')))


def same_up_to_rounding(c):
    "A float32 option's result against eager float32's: see `compare`."
    return c.loss < 1e-4 and c.g_mean < 1e-3 and c.d_mean < 1e-3


def update_cosine(ref, other):
    "Cosine similarity between the two models' total weight updates (all networks) since the shared start."
    seed_everything(0); start = CycleGANModel(ref.cfg)
    def upd(m): return torch.cat([(p.detach().cpu() - q.detach()).flatten()
                                  for k in start.nets for p, q in zip(m.nets[k].parameters(), start.nets[k].parameters())])
    return torch.nn.functional.cosine_similarity(upd(ref), upd(other), dim=0).item()


@pytest.fixture(scope='module')
def eager():
    return train(SpeedPlan())


# --- the same losses and updates, option by option (CPU) ---

def test_channels_last_matches_eager(eager):
    other = train(SpeedPlan(channels_last=True))
    c = compare(eager, other)
    assert same_up_to_rounding(c), c
    assert update_cosine(eager[0], other[0]) > 0.99
    assert other[0].real_A.is_contiguous(memory_format=torch.channels_last)


def test_the_rounding_check_catches_a_small_fault(eager):
    "same_up_to_rounding is loose enough for a ReLU flip, not for a real fault: one instance norm's eps 1e-5 -> 1e-3."
    def fault(m): next(mod for mod in m.netD_A.modules() if isinstance(mod, torch.nn.InstanceNorm2d)).eps = 1e-3
    c = compare(eager, train(SpeedPlan(), before_step=fault))
    assert not same_up_to_rounding(c) and c.d_mean > 5e-3, c


def test_bf16_autocast_on_cpu_close_to_eager(eager):
    other = train(SpeedPlan('bf16'))
    c = compare(eager, other)
    assert c.loss < 0.05, c                           # losses within a few %
    assert c.g_mean < 0.05 and c.g_max < 0.3, c       # outputs in [-1, 1]
    assert update_cosine(eager[0], other[0]) > 0.7   # the same direction, with bf16's noise
    assert all(p.dtype == torch.float32 for n in other[0].nets.values() for p in n.parameters())  # weights stay float32


def small_generator(cfg, key):
    "A one-block ResNet generator: every layer type of the official one, compiled faster than six blocks."
    return init_weights(ResnetGenerator(cfg.input_nc, cfg.output_nc, cfg.ngf, n_blocks=1), cfg.init_type, cfg.init_gain)


@pytest.mark.parametrize('backend', ['aot_eager', pytest.param('inductor', marks=pytest.mark.slow)])
def test_compile_on_cpu_matches_eager(monkeypatch, backend):
    """torch.compile as --compile applies it: TorchDynamo's graphs and AOTAutograd's backward with eager kernels
    ('aot_eager', seconds), and with the default inductor backend, which generates C++ kernels: float32 rounding.
    Inductor takes about 50 s on a 2-core CPU with an empty compiler cache, so it runs with the slow tests; the
    generators have one residual block either way."""
    monkeypatch.setattr(cg, 'make_generator', small_generator)
    compile_ = torch.compile
    monkeypatch.setattr(torch, 'compile', lambda m, **kw: compile_(m, backend=backend, **kw))
    ref = train(SpeedPlan())
    t = time.perf_counter()
    other = train(SpeedPlan(compile=True))
    print(f"{backend}: compile and 3 iterations took {time.perf_counter() - t:.1f} s")
    assert isinstance(other[0].G_A, torch._dynamo.eval_frame.OptimizedModule)
    assert not isinstance(other[0].netG_A, torch._dynamo.eval_frame.OptimizedModule)  # checkpoints use the plain module
    c = compare(ref, other)
    assert same_up_to_rounding(c), c
    assert set(other[0].state_dict()['nets']['G_A']) == set(ref[0].state_dict()['nets']['G_A'])  # no '_orig_mod.' prefixes


# --- plan_speed's fallbacks: one line each ---

def plan(device, **kw):
    notes = []
    p = plan_speed(tiny_cfg(**kw), torch.device(device), log=notes.append)
    assert all('\n' not in n for n in p.notes) and notes == p.notes  # each reason once, on one line
    return p


def test_cuda_graphs_on_cpu_falls_back():
    p = plan('cpu', cuda_graphs=True)
    assert not p.cuda_graphs and p.notes == ['--cuda_graphs needs an NVIDIA GPU; training on cpu without it']


def test_fp16_on_cpu_falls_back():
    p = plan('cpu', amp='fp16')
    assert p.amp == 'none' and len(p.notes) == 1 and '--amp fp16 is for GPUs' in p.notes[0] and '--amp bf16' in p.notes[0]


def test_fp16_with_cuda_graphs_drops_the_graphs():
    p = plan('cuda', amp='fp16', cuda_graphs=True)  # plan_speed reads only the device type: no GPU needed
    assert p.amp == 'fp16' and not p.cuda_graphs and len(p.notes) == 1 and 'not combined with --cuda_graphs' in p.notes[0]


def fake_gpu(monkeypatch, name, capability, bf16):
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda *a, **k: bf16)
    monkeypatch.setattr(torch.cuda, 'get_device_capability', lambda *a, **k: capability)
    monkeypatch.setattr(torch.cuda, 'get_device_name', lambda *a, **k: name)


def test_bf16_on_a_gpu_without_bf16_uses_fp16(monkeypatch):
    fake_gpu(monkeypatch, 'Tesla V100', (7, 0), bf16=False)
    p = plan('cuda', amp='bf16')
    assert p.amp == 'fp16' and p.notes == ['this GPU has no bf16: using --amp fp16 (with gradient scaling) instead']
    p = plan('cuda', amp='bf16', cuda_graphs=True)  # and then fp16 drops the graphs: two lines
    assert (p.amp, p.cuda_graphs, len(p.notes)) == ('fp16', False, 2)


def test_fast_on_gpus(monkeypatch):
    fake_gpu(monkeypatch, 'Tesla T4', (7, 5), bf16=False)
    p = plan('cuda', fast=True)
    assert (p.amp, p.channels_last, p.compile, p.cuda_graphs) == ('fp16', True, False, False)
    assert len(p.notes) == 1 and 'Tesla T4' in p.notes[0] and 'no bf16' in p.notes[0]
    fake_gpu(monkeypatch, 'NVIDIA A100', (8, 0), bf16=True)
    p = plan('cuda', fast=True)
    assert (p.amp, p.channels_last, p.compile, p.cuda_graphs) == ('bf16', True, True, True) and len(p.notes) == 1


@pytest.mark.parametrize('native, size, amp, why', [
    (True, 32, 'none', 'at 32px bf16 is slower than float32'),
    (True, 128, 'bf16', 'bf16 autocast'),
    (False, 32, 'none', 'no native bf16 on this CPU'),
    (False, 128, 'none', 'no native bf16 on this CPU')])
def test_fast_on_cpu(monkeypatch, native, size, amp, why):
    monkeypatch.setattr(fast, 'cpu_has_native_bf16', lambda: native)
    p = plan_speed(tiny_cfg(fast=True, crop_size=size, load_size=size), torch.device('cpu'), log=lambda *a: None)
    assert p.amp == amp and not (p.channels_last or p.compile or p.cuda_graphs)
    assert len(p.notes) == 1 and why in p.notes[0] and p.notes[0].startswith('--fast')


@pytest.mark.filterwarnings('ignore:Detected call of `lr_scheduler.step\\(\\)` before')
def test_capturable_switch_keeps_the_scheduler():
    "CUDA graphs switch the model's own Adam optimizers to capturable in place, so schedulers made before still drive them."
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(3))], lr=2e-4, betas=(0.5, 0.999))
    sched = get_scheduler(opt, tiny_cfg(n_epochs=1, n_epochs_decay=3))  # what Trainer builds before make_step
    fast._make_capturable(opt, torch.device('cpu'))
    lr = opt.param_groups[0]['lr']
    assert isinstance(lr, torch.Tensor) and opt.param_groups[0]['capturable']
    sched.step(); sched.step()  # epoch 3 of 1 + 3: factor 1 - 2/4
    assert opt.param_groups[0]['lr'] is lr and abs(lr.item() - 2e-4 * 0.5) < 1e-10


# --- resuming across speed options ---

def keys(obj, prefix=''):
    "Key paths of nested dicts and lists (list items share one path), with dtype and shape for tensors."
    if isinstance(obj, dict): return set().union(*(keys(v, f'{prefix}/{k}') for k, v in obj.items())) | {prefix}
    if isinstance(obj, (list, tuple)): return set().union(*(keys(v, f'{prefix}[]') for v in obj)) | {prefix}
    if isinstance(obj, torch.Tensor): return {f'{prefix}:{obj.dtype}:{tuple(obj.shape)}'}
    return {prefix}


def run_cfg(tmp_path, name, **kw):
    base = dict(dataroot='toy', name=name, checkpoints_dir=str(tmp_path), toy_n=4, n_epochs=1, n_epochs_decay=1,
                num_threads=0, print_freq=1, pool_size=2)
    return tiny_cfg(**{**base, **kw})


SPEED = {'fast': dict(amp='bf16', channels_last=True), 'plain': dict(amp='none', channels_last=False)}


@pytest.mark.parametrize('first, then', [('fast', 'plain'), ('plain', 'fast')])
def test_resume_across_speed_options(tmp_path, first, then):
    t = Trainer(run_cfg(tmp_path, 'run', max_iters=3, **SPEED[first]), progress=False, log=None)
    t.fit()
    ck = cp.load_checkpoint(tmp_path / 'run' / 'latest.pt')
    assert ck['total_iters'] == 3
    # the same format whatever the options: a fresh run with the other options saves the same keys, dtypes and shapes
    Trainer(run_cfg(tmp_path, 'other', max_iters=3, **SPEED[then]), progress=False, log=None).fit()
    other = cp.load_checkpoint(tmp_path / 'other' / 'latest.pt')
    assert keys({k: v for k, v in ck.items() if k != 'config'}) == keys({k: v for k, v in other.items() if k != 'config'})
    # resume with the other options: the weights come back exactly, the new options apply, training continues
    log = []
    r = Trainer(run_cfg(tmp_path, 'run', max_iters=6, **SPEED[then]), resume=True, progress=False, log=log.append)
    assert not any('ignoring the changed' in line for line in log)  # speed options are free to change on resume
    assert r.speed.amp == SPEED[then]['amp'] and r.speed.channels_last == SPEED[then]['channels_last']
    for k, net in r.model.nets.items():
        for n, v in net.state_dict().items(): assert torch.equal(v, ck['nets'][k][n]), (k, n)
    r.fit()
    ck2 = cp.load_checkpoint(tmp_path / 'run' / 'latest.pt')
    assert ck2['total_iters'] == 6 and [h['iter'] for h in ck2['history']] == list(range(1, 7))
    assert keys({k: v for k, v in ck2.items() if k != 'config'}) == keys({k: v for k, v in ck.items() if k != 'config'})
    assert any(not torch.equal(ck2['nets']['G_A'][n], v) for n, v in ck['nets']['G_A'].items())  # it trained on


# --- the benchmark command ---

def test_benchmark_runs_end_to_end(tmp_path):
    out = tmp_path / 'speed.json'
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join([str(ROOT)] + [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p])}
    t = time.perf_counter()
    r = subprocess.run([sys.executable, str(ROOT / 'benchmarks' / 'train_speed.py'), '--device', 'cpu', '--size', '32',
                        '--ngf', '8', '--n_blocks', '6', '--iters', '3', '--windows', '2', '--warmup', '1',
                        '--variants', 'official', 'bf16', 'fp16', 'channels_last', 'cuda_graphs', 'fast',
                        '--infer_batch', '1', '2', '--json', str(out)], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    print(f"benchmark: {time.perf_counter() - t:.1f} s")
    assert '| variant | batch | it/s | img/s | ms/iter |' in r.stdout and '| precision | batch | img/s |' in r.stdout
    res = json.loads(out.read_text())
    rows = {row['variant']: row for row in res['training']}
    assert list(rows) == ['official', 'bf16', 'fp16', 'channels_last', 'cuda_graphs', 'fast']
    assert rows['official']['vs_official'] == 1.0 and rows['official']['batch'] == 1
    assert 'fp16 is for GPUs' in rows['fp16']['skipped'] and 'needs an NVIDIA GPU' in rows['cuda_graphs']['skipped']
    for v in ('official', 'bf16', 'channels_last', 'fast'):
        assert rows[v]['skipped'] is None and rows[v]['finite'] and rows[v]['it_s'] > 0 and rows[v]['tflop_s'] > 0
    assert res['flops_per_image_iteration'] > 0 and res['settings']['size'] == 32
    assert sorted((t['batch'], t['amp']) for t in res['translation']) == [(1, 'bf16'), (1, 'none'), (2, 'bf16'), (2, 'none')]


def test_benchmark_rejects_an_unknown_variant():
    r = subprocess.run([sys.executable, str(ROOT / 'benchmarks' / 'train_speed.py'), '--variants', 'bf32'],
                       capture_output=True, text=True, timeout=120,
                       env={**os.environ, 'PYTHONPATH': os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')])})
    assert r.returncode == 2 and "'bf32' is not a speed option" in r.stderr


# --- CUDA only ---

@CUDA
def test_cuda_graphs_match_eager_and_follow_the_scheduler():
    dev = torch.device('cuda')
    ref = train(SpeedPlan(), n=6, device=dev)
    seed_everything(0)
    m = CycleGANModel(tiny_cfg(), dev)
    scheds = [get_scheduler(o, tiny_cfg(n_epochs=1, n_epochs_decay=1)) for o in m.optimizers.values()]  # before make_step, as Trainer
    step, losses = make_step(m, SpeedPlan(cuda_graphs=True)), []
    assert isinstance(step.step, fast.CUDAGraphStep)
    for batch in batches(6, device=dev):  # 3 eager warm-up steps, then recorded and replayed
        m.set_input(batch); losses.append({k: v.item() for k, v in step().items()})
    c = compare(ref, (m, losses))
    assert same_up_to_rounding(c), c  # the same kernels, launched differently
    lr = m.optimizer_G.param_groups[0]['lr']
    assert isinstance(lr, torch.Tensor) and lr.device.type == 'cuda'
    for s in scheds: s.step()  # epoch 2 of 1 + 1: factor 1 - 1/2
    assert abs(lr.item() - 1e-4) < 1e-9
    for s in scheds: s.step()  # epoch 3: factor 0, so a replayed step must leave every weight as it is
    before = {k: [p.detach().clone() for p in n.parameters()] for k, n in m.nets.items()}
    m.set_input(batches(1, seed=7, device=dev)[0]); step(); torch.cuda.synchronize()
    for k, n in m.nets.items():
        for p, q in zip(n.parameters(), before[k]): assert torch.equal(p, q), k


@CUDA
def test_fp16_with_gradient_scaling_on_cuda():
    dev = torch.device('cuda')
    ref = train(SpeedPlan(), n=3, device=dev)
    other = train(SpeedPlan('fp16'), n=3, device=dev)
    c = compare(ref, other)
    assert c.loss < 0.05 and c.g_mean < 0.05, c
    m = other[0]
    assert m.scaler is not None and m.scaler.get_scale() > 0 and 'scaler' in m.state_dict()
    assert all(p.dtype == torch.float32 for n in m.nets.values() for p in n.parameters())


def test_fp16_gradient_scaling_runs_on_the_cpu():
    """The fp16 path --fast takes on a T4 (fp16 autocast, GradScaler around both optimizers) runs on the CPU as well,
    with PyTorch's CPU scaler: overflowing steps are skipped and halve the scale once per iteration, the others train,
    the weights stay float32 and finite, and the scale travels in the checkpoint. (plan_speed never picks fp16 on a CPU:
    this drives the model directly, so the GPU's code path is exercised here and not only on a GPU.)"""
    init = train(SpeedPlan(), n=0)[0]
    m, losses = train(SpeedPlan('fp16'), n=12)
    scale = m.scaler.get_scale()
    assert m.amp == 'fp16' and 65536 / 2**12 < scale <= 65536  # at most one halving per iteration (12 here)
    for k, net in m.nets.items():
        assert any(not torch.equal(p, q) for p, q in zip(net.parameters(), init.nets[k].parameters())), k  # it trained
        assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in net.parameters()), k
    again = CycleGANModel(tiny_cfg(), 'cpu'); make_step(again, SpeedPlan('fp16'))
    again.load_state_dict(m.state_dict())
    assert again.scaler.get_scale() == scale


# --- the guard: an option that fails is dropped, and the iteration is kept ---
# Failures are injected at each stage on the CPU: torch.compile raising on its first call (a compiler that raises, as
# a broken toolchain does), a compiled step computing other losses, mixed precision raising, and the CUDA-graph stage
# (a stand-in for CUDAGraphStep whose recording raises after the eager warm-up, as a failed capture does: capture
# itself needs a GPU). After a drop, training must be exactly plain eager training: same weights, bit for bit.

def raising_backend(gm, example_inputs): raise RuntimeError('C++ compile failed (injected)')
def wrong_backend(gm, example_inputs): return lambda *args: [-o for o in gm(*args)]  # miscompiled: outputs negated


class FailingGraphStep:
    "CUDAGraphStep's schedule on the CPU: `warmup` eager iterations, then the recording fails."
    def __init__(self, model, warmup=3): self.model, self.warmup, self.done = model, warmup, 0
    def __call__(self):
        if self.done >= self.warmup: raise RuntimeError('CUDA error: operation not permitted when stream is capturing (injected)')
        self.done += 1
        return self.model.optimize_parameters()


@pytest.fixture
def compile_with(monkeypatch):
    "compile_with(backend): every torch.compile call uses `backend` (a fresh dynamo, which remembers failures)."
    def use(backend):
        real = torch.compile
        torch._dynamo.reset()
        monkeypatch.setattr(torch, 'compile', lambda mod, **kw: real(mod, backend=backend))
    yield use
    torch._dynamo.reset()


def guarded(plan, n=4, before_step=None):
    "train() with the guard's messages collected: (model, losses, lines)."
    lines = []
    seed_everything(0)
    m = CycleGANModel(tiny_cfg())
    if before_step: before_step(m)
    step, losses = make_step(m, plan, log=lines.append), []
    for batch in batches(n):
        m.set_input(batch); losses.append({k: v.item() for k, v in step().items()})
    return m, losses, lines


def assert_plain(m, losses, n=4):
    ref, ref_losses = train(SpeedPlan(), n=n)
    assert losses == ref_losses
    for k in ref.nets:
        for (name, a), b in zip(ref.nets[k].state_dict().items(), m.nets[k].state_dict().values()):
            assert torch.equal(a, b), (k, name)


def test_compile_that_raises_is_dropped(compile_with):
    compile_with(raising_backend)
    m, losses, lines = guarded(SpeedPlan(compile=True))
    assert lines == ['--compile dropped at step 1 (RuntimeError: C++ compile failed (injected)); continuing with '
                     'none (eager float32) from the same state']
    assert all(getattr(m, k) is getattr(m, 'net' + k) for k in ('G_A', 'G_B', 'D_A', 'D_B'))  # the plain nets again
    assert_plain(m, losses)


def test_compile_with_wrong_losses_is_dropped(compile_with):
    compile_with(wrong_backend)
    m, losses, lines = guarded(SpeedPlan(compile=True))
    assert len(lines) == 1 and lines[0].startswith('--compile dropped at step 1 (its first step gave loss_'), lines
    assert 'eager float32' in lines[0] and lines[0].endswith('continuing with none (eager float32) from the same state')
    assert_plain(m, losses)


def test_amp_that_raises_is_dropped_and_channels_last_kept():
    def broken_bf16(m):
        plain = m.autocast
        def autocast():
            if m.amp != 'none': raise RuntimeError('no bf16 kernel (injected)')
            return plain()
        m.autocast = autocast
    m, losses, lines = guarded(SpeedPlan('bf16', channels_last=True), before_step=broken_bf16)
    assert lines == ['--amp bf16 dropped at step 1 (RuntimeError: no bf16 kernel (injected)); continuing with '
                     'channels_last from the same state']
    assert m.amp == 'none' and m.memory_format == torch.channels_last
    ref = train(SpeedPlan(channels_last=True), n=4)
    assert same_up_to_rounding(compare(ref, (m, losses)))


def test_graph_capture_failure_drops_the_graphs_after_warmup(monkeypatch):
    monkeypatch.setattr(fast, 'CUDAGraphStep', FailingGraphStep)
    m, losses, lines = guarded(SpeedPlan(cuda_graphs=True), n=5)  # plan_speed would refuse graphs on a CPU: the plan is given
    assert lines == ['--cuda_graphs dropped at step 4 (RuntimeError: CUDA error: operation not permitted when stream is '
                     'capturing (injected)); continuing with none (eager float32) from the same state']
    assert_plain(m, losses, n=5)


def test_compile_failing_during_the_graph_warmup_is_blamed_not_the_graphs(monkeypatch, compile_with):
    "A failure before the graphs are recorded is the compiler's: compile goes, the graphs stay (and then fail here too)."
    monkeypatch.setattr(fast, 'CUDAGraphStep', FailingGraphStep)
    compile_with(raising_backend)
    m, losses, lines = guarded(SpeedPlan(compile=True, cuda_graphs=True), n=5)
    assert [l.split(' (')[0] for l in lines] == ['--compile dropped at step 1', '--cuda_graphs dropped at step 4']
    assert 'continuing with cuda_graphs' in lines[0]
    assert_plain(m, losses, n=5)


def test_a_working_plan_is_checked_once_then_runs_unguarded(monkeypatch):
    snaps = []
    real = fast._snapshot
    monkeypatch.setattr(fast, '_snapshot', lambda m: snaps.append(1) or real(m))
    m, losses, lines = guarded(SpeedPlan(channels_last=True), n=4)
    assert lines == [] and len(snaps) == 1  # only the first iteration is guarded
    assert same_up_to_rounding(compare(train(SpeedPlan(), n=4), (m, losses)))


def test_the_official_way_is_not_guarded():
    m = CycleGANModel(tiny_cfg())
    assert make_step(m, SpeedPlan()) == m.optimize_parameters


def test_an_error_of_eager_training_itself_is_raised():
    "Nothing left to drop: the error is the run's own (here, a NaN-free but broken network), not a speed option's."
    def broken_G(m):
        def boom(x): raise ValueError('G_A received a batch of the wrong size (injected)')
        m.netG_A.forward = boom
    with pytest.raises(ValueError, match='wrong size'):
        guarded(SpeedPlan(channels_last=True), n=1, before_step=broken_G)


def test_trainer_drops_a_failing_compile_and_saves_a_good_checkpoint(tmp_path, compile_with):
    compile_with(raising_backend)
    lines = []
    kw = dict(dataroot='toy', toy_n=4, n_epochs=1, n_epochs_decay=0, print_freq=2, display_freq=100, save_latest_freq=100,
              checkpoints_dir=str(tmp_path), num_threads=0)
    t = Trainer(tiny_cfg(name='fast', compile=True, **kw), progress=False, log=lines.append); t.fit()
    assert sum('--compile dropped at step 1' in l for l in lines) == 1, lines
    ref = Trainer(tiny_cfg(name='plain', **kw), progress=False, log=lambda *a: None); ref.fit()
    assert t.total_iters == ref.total_iters == 4
    a, b = cp.load_checkpoint(tmp_path / 'fast' / 'latest.pt'), cp.load_checkpoint(tmp_path / 'plain' / 'latest.pt')
    for k in a['nets']:
        for n in a['nets'][k]: assert torch.equal(a['nets'][k][n], b['nets'][k][n]), (k, n)
