"Tests for cyclegan_edu.inference: loading generators, translating any size/kind and speed, pretrained downloads, the CLI."
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import warnings
import zlib
from pathlib import Path

import pytest
import torch
from torch import nn
from PIL import Image

import cyclegan_edu.checkpoint
import cyclegan_edu.inference as inference
from conftest import run_main
from cyclegan_edu.core import pil_to_tensor
from cyclegan_edu.inference import (PRETRAINED_MODELS, PRETRAINED_URL, CheckpointReadError, generator_key, load_generator,
                                    load_pretrained, pad_to_multiple, pretrained_cache_dir, read_checkpoint, translate,
                                    translate_main)
from cyclegan_edu.models import ResnetGenerator, define_D, define_G


def tiny_G(seed=0, **kw):
    torch.manual_seed(seed)
    return ResnetGenerator(**{'ngf': 4, 'n_blocks': 1, **kw}).eval()

def rand_img(w, h, seed=0, mode='RGB'):
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(0, 256, (h, w, 3), generator=g, dtype=torch.uint8).numpy()
    return Image.fromarray(a, 'RGB').convert(mode)

def same_net(a, b, size=16, nc=3):
    x = torch.rand(1, nc, size, size, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad(): return torch.allclose(a.eval()(x), b.eval()(x), atol=1e-6)

@pytest.fixture(scope='module')
def G(): return tiny_G()


# --- translate ------------------------------------------------------------------------------------------------------

def test_translate_returns_input_kind_and_size(G, tmp_path):
    img = rand_img(37, 53)
    out = translate(G, img)
    assert isinstance(out, Image.Image) and out.size == (37, 53) and out.mode == 'RGB'
    t3 = pil_to_tensor(img)
    o3 = translate(G, t3)
    assert isinstance(o3, torch.Tensor) and o3.shape == (3, 53, 37)
    o4 = translate(G, torch.stack([t3, t3]))
    assert o4.shape == (2, 3, 53, 37)
    assert (o3 - o4[0]).abs().max() < 1e-5
    (tmp_path / 'sub').mkdir()
    rand_img(20, 24, 1).save(tmp_path / 'b.png'); rand_img(9, 5, 2).save(tmp_path / 'sub' / 'c.jpg')
    (tmp_path / 'notes.txt').write_text('not an image')
    f = translate(G, tmp_path / 'b.png')
    assert isinstance(f, list) and [o.size for o in f] == [(20, 24)]
    d = translate(G, str(tmp_path))
    assert [o.size for o in d] == [(20, 24), (9, 5)]  # sorted, recursive, .txt skipped
    mixed = translate(G, [img, t3, tmp_path, torch.stack([t3])])
    assert [type(o).__name__ for o in mixed] == ['Image', 'Tensor', 'Image', 'Image', 'Tensor']
    assert mixed[0].size == (37, 53) and mixed[1].shape == (3, 53, 37) and mixed[4].shape == (1, 3, 53, 37)
    assert (mixed[1] - o3).abs().max() < 1e-5


@pytest.mark.parametrize('h,w', [(5, 9), (37, 53), (1, 1), (2, 7), (3, 3), (8, 8), (64, 12)])
def test_translate_odd_sizes(G, h, w):
    x = torch.rand(3, h, w) * 2 - 1
    y = translate(G, x)
    assert y.shape == (3, h, w) and torch.isfinite(y).all() and y.abs().max() <= 1


def test_pad_to_multiple_keeps_the_image_and_falls_back_to_replicate():
    for h, w in [(1, 1), (2, 9), (5, 9), (37, 53), (16, 16)]:
        x = torch.rand(1, 3, h, w)
        xp, (top, left, H, W) = pad_to_multiple(x)
        assert xp.shape[-2] % 4 == 0 and xp.shape[-1] % 4 == 0 and min(xp.shape[-2:]) >= 8
        assert torch.equal(xp[..., top:top + H, left:left + W], x)
    x = torch.arange(6.).view(1, 1, 2, 3)
    xp, (top, left, _, _) = pad_to_multiple(x)  # 2×3 → 8×8: too small to reflect
    assert torch.equal(xp[0, 0, 0], xp[0, 0, top])  # replicated rows


def test_translate_matches_direct_call_when_no_padding_is_needed(G):
    x = torch.rand(2, 3, 16, 20) * 2 - 1
    with torch.no_grad(): want = G(x)
    assert (translate(G, x) - want).abs().max() < 1e-6


def test_batched_equals_one_by_one(G):
    xs = [torch.rand(3, 37, 53, generator=torch.Generator().manual_seed(i)) * 2 - 1 for i in range(5)]
    xs.insert(2, torch.rand(3, 11, 17) * 2 - 1)  # a different size in the middle keeps its place
    batched = translate(G, xs, batch_size=4)
    single = [translate(G, x, batch_size=1) for x in xs]
    assert [b.shape for b in batched] == [x.shape for x in xs]
    assert max((b - s).abs().max().item() for b, s in zip(batched, single)) < 1e-5


def test_training_mode_restored_and_eval_used():
    Gd = tiny_G(use_dropout=True)
    x = torch.rand(3, 16, 16) * 2 - 1
    Gd.train()
    a, b = translate(Gd, x), translate(Gd, x)
    assert Gd.training and torch.equal(a, b)  # dropout off while translating, training mode back afterwards
    Gd.eval(); translate(Gd, x)
    assert not Gd.training
    assert not translate(Gd, x).requires_grad


def test_channel_conversion_and_errors(G):
    for mode in ('RGBA', 'L', 'P'):
        out = translate(G, rand_img(13, 7, mode=mode))
        assert out.mode == 'RGB' and out.size == (13, 7)
    with pytest.raises(ValueError, match='expects 3-channel'): translate(G, torch.zeros(4, 16, 16))
    with pytest.raises(ValueError, match=r'\[-1, 1\]'): translate(G, torch.full((3, 16, 16), 255.))
    with pytest.raises(ValueError, match='batch_size'): translate(G, torch.zeros(3, 8, 8), batch_size=0)
    with pytest.raises(FileNotFoundError): translate(G, '/no/such/image.png')
    with pytest.raises(TypeError): translate(G, 42)
    G1 = tiny_G(input_nc=1, output_nc=1)
    out = translate(G1, rand_img(10, 6))  # RGB photo → grayscale model
    assert out.mode == 'L' and out.size == (10, 6)


# --- load_generator ---------------------------------------------------------------------------------------------------

def make_run(run: Path, direction='AtoB', input_nc=3, output_nc=3, latest=True, pth=True):
    cfg = dict(input_nc=input_nc, output_nc=output_nc, ngf=4, ndf=4, netG='resnet_6blocks', netD='basic', norm='instance',
               no_dropout=True, init_type='normal', init_gain=0.02, direction=direction, name=run.name)
    torch.manual_seed(1); G_A = define_G(input_nc, output_nc, 4, 'resnet_6blocks')
    torch.manual_seed(2); G_B = define_G(output_nc, input_nc, 4, 'resnet_6blocks')
    D = define_D(input_nc, 4)
    nets = {'G_A': G_A.state_dict(), 'G_B': G_B.state_dict(), 'D_A': D.state_dict(), 'D_B': D.state_dict()}
    run.mkdir(parents=True)
    (run / 'config.json').write_text(json.dumps(cfg))
    if latest:
        torch.save({'format': 'cyclegan_edu', 'version': 1, 'config': cfg, 'epoch': 3, 'total_iters': 30, 'nets': nets,
                    'optimizers': {}, 'schedulers': {}, 'pools': {}, 'rng': {}}, run / 'latest.pt')
    if pth:
        for k, sd in nets.items(): torch.save(sd, run / f'latest_net_{k}.pth')
    return G_A.eval(), G_B.eval()


@pytest.mark.parametrize('trained', ['AtoB', 'BtoA'])
def test_load_generator_our_format_picks_by_direction(tmp_path, trained):
    G_A, G_B = make_run(tmp_path / 'run', trained)
    expect = {'AtoB': G_A, 'BtoA': G_B} if trained == 'AtoB' else {'AtoB': G_B, 'BtoA': G_A}
    for d in ('AtoB', 'BtoA'):
        for src in (tmp_path / 'run', tmp_path / 'run' / 'latest.pt'):
            net = load_generator(src, d, device='cpu')
            assert not net.training and same_net(net, expect[d]), (src.name, d)


def test_load_generator_reads_a_real_training_run(tmp_path):
    from cyclegan_edu.train import CycleGANConfig, Trainer
    cfg = CycleGANConfig(dataroot='toy', toy_n=4, crop_size=32, load_size=32, ngf=4, ndf=4, netG='resnet_6blocks', pool_size=0,
                         num_threads=0, n_epochs=1, n_epochs_decay=0, max_iters=2, direction='BtoA',
                         checkpoints_dir=str(tmp_path), name='run', device='cpu')
    tr = Trainer(cfg, progress=False, log=None); tr.fit()
    assert same_net(load_generator(tmp_path / 'run', 'AtoB'), tr.model.netG_B)  # BtoA-trained: G_B maps folder A → B
    assert same_net(load_generator(tmp_path / 'run', 'BtoA'), tr.model.netG_A)
    assert same_net(load_generator(tmp_path / 'run' / 'latest_net_G_A.pth'), tr.model.netG_A)


def test_load_generator_folder_without_latest_pt(tmp_path):
    G_A, G_B = make_run(tmp_path / 'run', 'BtoA', latest=False)
    assert same_net(load_generator(tmp_path / 'run', 'AtoB'), G_B)
    assert same_net(load_generator(tmp_path / 'run', 'BtoA'), G_A)
    official = tmp_path / 'official'; official.mkdir()  # an official run: train_opt.txt, no config.json
    (official / 'train_opt.txt').write_text('----- Options -----\n       direction: BtoA          \t[default: AtoB]\n')
    for k in ('G_A', 'G_B'): (official / f'latest_net_{k}.pth').write_bytes((tmp_path / 'run' / f'latest_net_{k}.pth').read_bytes())
    assert same_net(load_generator(official, 'AtoB'), G_B)
    (official / 'latest_net_G_B.pth').unlink()
    with pytest.raises(FileNotFoundError, match='latest_net_G_B.pth'): load_generator(official, 'AtoB')


def test_load_generator_different_channels(tmp_path):
    G_A, G_B = make_run(tmp_path / 'run', input_nc=1, output_nc=3)
    a, b = load_generator(tmp_path / 'run', 'AtoB'), load_generator(tmp_path / 'run', 'BtoA')
    assert same_net(a, G_A, nc=1) and same_net(b, G_B, nc=3)
    assert translate(a, rand_img(12, 9)).mode == 'RGB' and translate(b, rand_img(12, 9)).mode == 'L'


def with_running_stats(net):
    sd = dict(net.state_dict())
    for name, m in net.named_modules():
        if isinstance(m, nn.InstanceNorm2d):
            sd[f'{name}.running_mean'] = torch.zeros(m.num_features); sd[f'{name}.running_var'] = torch.ones(m.num_features)
    return sd


def test_load_generator_official_format_with_running_stats(tmp_path):
    net = tiny_G(ngf=8, n_blocks=9)
    sd = with_running_stats(net)
    assert any(k.endswith('running_mean') for k in sd) and len(sd) > len(net.state_dict())
    torch.save(sd, tmp_path / 'horse2zebra.pth')
    loaded = load_generator(tmp_path / 'horse2zebra.pth', device='cpu')
    assert same_net(loaded, net)


@pytest.mark.parametrize('n_blocks,dropout', [(6, False), (9, False), (2, True)])
def test_load_generator_detects_blocks_and_dropout(tmp_path, n_blocks, dropout):
    net = tiny_G(n_blocks=n_blocks, use_dropout=dropout)
    torch.save(net.state_dict(), tmp_path / 'latest_net_G_A.pth')
    loaded = load_generator(tmp_path / 'latest_net_G_A.pth')
    assert sum(hasattr(m, 'conv_block') for m in loaded.modules()) == n_blocks
    assert any(isinstance(m, nn.Dropout) for m in loaded.modules()) == dropout
    assert same_net(loaded, net)


def test_load_generator_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match='not found'): load_generator(tmp_path / 'nope.pth')
    net = tiny_G()
    torch.save(net.state_dict(), tmp_path / 'G.pth')
    with pytest.raises(ValueError, match="'AtoB'"): load_generator(tmp_path / 'G.pth', 'A2B')
    with pytest.raises(ValueError, match='single generator'): load_generator(tmp_path / 'G.pth', 'BtoA')
    torch.save(define_D(3, 4).state_dict(), tmp_path / 'latest_net_D_A.pth')
    with pytest.raises(ValueError, match='discriminator') as e: load_generator(tmp_path / 'latest_net_D_A.pth')
    assert 'latest_net_D_A.pth' in str(e.value)
    torch.save({'model.model.0.weight': torch.zeros(8, 3, 4, 4), 'model.model.1.model.1.weight': torch.zeros(16, 8, 4, 4),
                'model.model.3.weight': torch.zeros(16, 3, 4, 4)}, tmp_path / 'unet.pth')
    with pytest.raises(ValueError, match='U-Net generators are not supported yet'): load_generator(tmp_path / 'unet.pth')
    torch.save({'note': 'hello'}, tmp_path / 'other.pt')
    with pytest.raises(ValueError, match='other.pt'): load_generator(tmp_path / 'other.pt')


def test_truncated_checkpoints_name_the_file_and_the_fallback(tmp_path):
    make_run(tmp_path / 'run')
    run = tmp_path / 'run'
    (run / 'epoch_2.pt').write_bytes((run / 'latest.pt').read_bytes())
    (run / 'epoch_10.pt').write_bytes((run / 'latest.pt').read_bytes())
    data = (run / 'latest.pt').read_bytes()
    for cut in (0, 10, len(data) // 2, len(data) - 20):
        (run / 'latest.pt').write_bytes(data[:cut])
        for src in (run, run / 'latest.pt'):
            with pytest.raises(CheckpointReadError) as e: load_generator(src)
            msg = str(e.value)
            assert 'latest.pt' in msg and 'incomplete' in msg and 'epoch_10.pt' in msg, msg
    assert load_generator(run / 'epoch_10.pt') is not None  # the suggested fallback works
    (tmp_path / 'lone.pth').write_bytes(b'PK\x03\x04 half a zip')
    with pytest.raises(CheckpointReadError, match='lone.pth.*incomplete.*epoch_N.pt'): read_checkpoint(tmp_path / 'lone.pth')
    (tmp_path / 'page.pth').write_text('<html>404 not found</html>')  # a failed download saved as a file
    with pytest.raises(CheckpointReadError, match='not a PyTorch checkpoint'): load_generator(tmp_path / 'page.pth')
    torch.save({'net': Path('x')}, tmp_path / 'objects.pt')  # pickled Python objects: refused by weights_only
    with pytest.raises(CheckpointReadError, match='other than tensors'): load_generator(tmp_path / 'objects.pt')


def test_generator_key_table():
    assert [generator_key(d, t) for t in ('AtoB', 'BtoA') for d in ('AtoB', 'BtoA')] == ['G_A', 'G_B', 'G_B', 'G_A']


# --- pretrained -------------------------------------------------------------------------------------------------------

@pytest.fixture
def server(local_server):
    "The shared local server (conftest.py) with the pretrained-model URL template."
    local_server.pth_url = local_server.url('{name}.pth')
    return local_server


def test_pretrained_names_and_url():
    assert len(PRETRAINED_MODELS) == 18 and {'horse2zebra', 'style_monet', 'iphone2dslr_flower'} <= set(PRETRAINED_MODELS)
    assert PRETRAINED_URL.format(name='horse2zebra') == 'http://efrosgans.eecs.berkeley.edu/cyclegan/pretrained_models/horse2zebra.pth'
    with pytest.raises(ValueError, match='unknown pretrained model') as e: load_pretrained('horse2zebr')
    assert all(n in str(e.value) for n in PRETRAINED_MODELS)


def test_load_pretrained_downloads_once_and_caches(server, tmp_path, monkeypatch):
    net = tiny_G(ngf=8, n_blocks=9)
    torch.save(with_running_stats(net), server.root / 'horse2zebra.pth')
    cache = tmp_path / 'cache'
    a = load_pretrained('horse2zebra', cache_dir=cache, url=server.pth_url, device='cpu')
    b = load_pretrained('horse2zebra', cache_dir=cache, url=server.pth_url, device='cpu')
    assert server.hits == ['/horse2zebra.pth']
    assert sorted(p.name for p in cache.iterdir()) == ['horse2zebra.pth']
    assert same_net(a, net) and same_net(b, net) and not a.training
    monkeypatch.setenv('CYCLEGAN_EDU_CACHE', str(tmp_path / 'envcache'))
    assert pretrained_cache_dir() == tmp_path / 'envcache' / 'pretrained'
    load_pretrained('horse2zebra', url=server.pth_url)
    assert (tmp_path / 'envcache' / 'pretrained' / 'horse2zebra.pth').is_file() and len(server.hits) == 2


def test_load_pretrained_truncated_or_bad_download_caches_nothing(server, tmp_path):
    torch.save(with_running_stats(tiny_G(ngf=8, n_blocks=9)), server.root / 'style_monet.pth')
    server.truncate.add('/style_monet.pth')
    cache = tmp_path / 'cache'
    with pytest.raises(CheckpointReadError, match='stopped after'):
        load_pretrained('style_monet', cache_dir=cache, url=server.pth_url)
    assert list(cache.iterdir()) == []
    (server.root / 'zebra2horse.pth').write_text('<html>not a checkpoint</html>')
    with pytest.raises(CheckpointReadError, match='nothing was cached'):
        load_pretrained('zebra2horse', cache_dir=cache, url=server.pth_url)
    with pytest.raises(CheckpointReadError, match='could not download'):  # 404
        load_pretrained('map2sat', cache_dir=cache, url=server.pth_url)
    assert list(cache.iterdir()) == []



def test_pretrained_cache_follows_torch_hub_unless_told_otherwise(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, '_hub_dir', None)  # as in a fresh process: no torch.hub.set_dir() yet
    monkeypatch.delenv('CYCLEGAN_EDU_CACHE', raising=False)
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    assert pretrained_cache_dir() == tmp_path / 'torch_home' / 'hub' / 'checkpoints' / 'cyclegan_edu'
    assert pretrained_cache_dir() == Path(torch.hub.get_dir()) / 'checkpoints' / 'cyclegan_edu'
    monkeypatch.setenv('CYCLEGAN_EDU_CACHE', str(tmp_path / 'ours'))  # our variable wins over TORCH_HOME
    assert pretrained_cache_dir() == tmp_path / 'ours' / 'pretrained'
    assert pretrained_cache_dir(tmp_path / 'mine') == tmp_path / 'mine'  # and cache_dir= over both
    assert pretrained_cache_dir('~/x') == Path('~/x').expanduser()


def test_load_pretrained_default_cache_is_under_torch_home(server, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, '_hub_dir', None)
    monkeypatch.delenv('CYCLEGAN_EDU_CACHE', raising=False)
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'th'))
    torch.save(with_running_stats(tiny_G(ngf=8, n_blocks=9)), server.root / 'horse2zebra.pth')
    load_pretrained('horse2zebra', url=server.pth_url, device='cpu', progress=False)
    assert [p.name for p in (tmp_path / 'th' / 'hub' / 'checkpoints' / 'cyclegan_edu').iterdir()] == ['horse2zebra.pth']


# --- one checkpoint reader, one generator builder --------------------------------------------------------------------

def test_checkpoint_reader_is_the_checkpoint_modules():
    assert read_checkpoint is cyclegan_edu.checkpoint.read_checkpoint
    assert CheckpointReadError is cyclegan_edu.checkpoint.CheckpointReadError
    assert not hasattr(inference, '_earlier_epochs')


def test_run_generators_are_built_by_make_generator(tmp_path, monkeypatch):
    make_run(tmp_path / 'run')
    calls = []
    real = inference.make_generator
    monkeypatch.setattr(inference, 'make_generator', lambda cfg, key: calls.append((cfg.ngf, cfg.netG, key)) or real(cfg, key))
    load_generator(tmp_path / 'run', 'BtoA')
    assert calls == [(4, 'resnet_6blocks', 'G_B')]


def test_load_generator_epoch_files_and_wrapper_prefixes(tmp_path):
    G_A, G_B = make_run(tmp_path / 'run')
    shutil.copy(tmp_path / 'run' / 'latest.pt', tmp_path / 'run' / 'epoch_3.pt')
    assert same_net(load_generator(tmp_path / 'run' / 'epoch_3.pt', 'AtoB'), G_A)
    assert same_net(load_generator(tmp_path / 'run' / 'epoch_3.pt', 'BtoA'), G_B)
    sd = G_A.state_dict()
    for prefix in ('module.', '_orig_mod.', 'module._orig_mod.'):
        torch.save({prefix + k: v for k, v in sd.items()}, tmp_path / 'wrapped.pth')
        assert same_net(load_generator(tmp_path / 'wrapped.pth'), G_A), prefix
    ck = torch.load(tmp_path / 'run' / 'latest.pt', weights_only=True)  # a checkpoint whose nets carry the prefixes
    ck['nets'] = {k: {'module.' + n: v for n, v in d.items()} for k, d in ck['nets'].items()}
    torch.save(ck, tmp_path / 'prefixed.pt')
    assert same_net(load_generator(tmp_path / 'prefixed.pt', 'BtoA'), G_B)


def test_load_generator_names_the_available_devices(tmp_path):
    make_run(tmp_path / 'run')
    with pytest.raises(ValueError, match='available here: cpu'): load_generator(tmp_path / 'run', device='gpu0')
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match='no such device'): load_generator(tmp_path / 'run', device='cuda')


# --- speed options ---------------------------------------------------------------------------------------------------

def test_bf16_and_channels_last_match_float32(G):
    x = torch.rand(2, 3, 37, 53, generator=torch.Generator().manual_seed(3)) * 2 - 1
    ref = translate(G, x)
    # an untrained net on noise is a worst case: every pixel within 3e-2 (about 4 8-bit levels), 5e-3 on average
    for kw, tol, mean in [(dict(amp='bf16'), 3e-2, 5e-3), (dict(channels_last=True), 1e-5, 1e-6),
                          (dict(amp='bf16', channels_last=True), 3e-2, 5e-3)]:
        y = translate(G, x, **kw)
        assert y.dtype == torch.float32 and y.is_contiguous() and y.shape == ref.shape, kw
        torch.testing.assert_close(y, ref, rtol=0, atol=tol)
        assert (y - ref).abs().mean() < mean, (kw, (y - ref).abs().mean())
    assert not torch.equal(translate(G, x, amp='bf16'), ref)  # bf16 really ran
    img = translate(G, rand_img(21, 13), amp='bf16', channels_last=True)
    assert isinstance(img, Image.Image) and img.size == (21, 13)


def test_channels_last_leaves_the_weights_values_alone():
    Gc = tiny_G()
    before = {k: v.clone() for k, v in Gc.state_dict().items()}
    translate(Gc, torch.zeros(3, 16, 16), channels_last=True)
    assert Gc.model[1].weight.is_contiguous(memory_format=torch.channels_last)
    assert all(torch.equal(before[k], v) for k, v in Gc.state_dict().items())


def test_fp16_off_cuda_warns_and_uses_float32(G):
    x = torch.rand(3, 16, 16) * 2 - 1
    with pytest.warns(UserWarning, match='needs a CUDA GPU'): y = translate(G, x, amp='fp16')
    assert torch.equal(y, translate(G, x))
    with pytest.raises(ValueError, match="amp='half'"): translate(G, x, amp='half')


def test_compile_is_made_once_and_kept_outside_the_state_dict(monkeypatch):
    made = []
    real = torch.compile
    def counting_compile(model, **kw):  # the eager backend: dynamo traces, nothing is compiled to C++ (seconds, not minutes)
        made.append(model); return real(model, backend='eager')
    monkeypatch.setattr(torch, 'compile', counting_compile)
    Gc = tiny_G()
    keys = list(Gc.state_dict())
    x = torch.rand(2, 3, 16, 20) * 2 - 1
    a = translate(Gc, x, compile=True)
    b = translate(Gc, x, compile=True)
    c = translate(Gc, x[:1, :, :13, :11], compile=True, amp='bf16', channels_last=True)  # other size and options: same module
    assert made == [Gc] and list(Gc.state_dict()) == keys
    torch.testing.assert_close(a, translate(Gc, x), rtol=0, atol=1e-5)
    assert torch.equal(a, b) and c.shape == (1, 3, 13, 11)
    assert '_translate_compiled' not in dict(Gc.named_modules())


def _compile_with(monkeypatch, backend):
    real = torch.compile
    torch._dynamo.reset()  # dynamo remembers code it failed to compile
    monkeypatch.setattr(torch, 'compile', lambda mod, **kw: real(mod, backend=backend))


def _raising_backend(gm, example_inputs): raise RuntimeError('C++ compile failed (injected)')


@pytest.mark.parametrize('backend, why', [(_raising_backend, 'RuntimeError: C++ compile failed (injected)'),
                                          (lambda gm, ex: (lambda *a: [-o for o in gm(*a)]), 'differs from float32 by')])
def test_a_failing_compile_is_dropped_for_translation(monkeypatch, backend, why):
    "The first batch is checked against float32: a compile that raises or computes something else is dropped, once."
    _compile_with(monkeypatch, backend)
    Gc, x = tiny_G(), torch.rand(2, 3, 16, 20) * 2 - 1
    with pytest.warns(UserWarning) as caught: y = translate(Gc, list(x), compile=True, batch_size=1)  # two batches
    lines = [str(w.message) for w in caught]
    assert len(lines) == 1 and lines[0].startswith('--compile dropped for translation (') and why in lines[0], lines
    assert lines[0].endswith('continuing with none (eager float32)')
    assert all(torch.equal(a, b) for a, b in zip(y, translate(Gc, list(x), batch_size=1)))
    torch._dynamo.reset()


def test_working_options_pass_the_translation_check():
    Gc, x = tiny_G(), torch.rand(2, 3, 16, 20) * 2 - 1
    with warnings.catch_warnings(): warnings.simplefilter('error'); y = translate(Gc, x, amp='bf16', channels_last=True)
    from cyclegan_edu.fast import OUTPUT_ATOL
    assert (y - translate(Gc, x)).abs().mean() < OUTPUT_ATOL


# --- command line ----------------------------------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[1]
PROG = 'cyclegan_edu_translate: error: '


def cli(cwd, *args, preexec_fn=None, env=None):
    "Run `python -m cyclegan_edu.inference ARGS` in `cwd` (this checkout first on the path)."
    env = {**os.environ, **(env or {}), 'PYTHONPATH': os.pathsep.join([str(REPO), os.environ.get('PYTHONPATH', '')])}
    env.pop('CYCLEGAN_EDU_DEBUG', None)
    return subprocess.run([sys.executable, '-m', 'cyclegan_edu.inference', *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=180, preexec_fn=preexec_fn, env=env)


def main(cwd, *args):
    "translate_main in this process, run from `cwd`: the same messages and exit status as the console script, faster."
    import contextlib
    with contextlib.chdir(cwd): return run_main(translate_main, *args)


def one_line_error(r, code, *parts):
    "Exit status `code`, and stderr is exactly one line `cyclegan_edu_translate: error: …` holding every part."
    lines = r.stderr.strip().splitlines()
    assert r.returncode == code, (r.returncode, r.stderr)
    assert len(lines) == 1 and lines[0].startswith(PROG) and 'Traceback' not in r.stderr, r.stderr
    for part in parts: assert part in lines[0], (part, lines[0])
    return lines[0]


def bomb_png(path, w=20000, h=20000):
    "A tiny PNG whose header claims w×h pixels (400 million: over twice Pillow's limit, a decompression bomb)."
    def chunk(kind, data): return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))
    path.write_bytes(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 8, 2, 0, 0, 0))
                     + chunk(b'IDAT', zlib.compress(b'\0' * 64)) + chunk(b'IEND', b''))


@pytest.fixture
def workdir(tmp_path):
    "A run folder and a photos folder with two images, a text file and an unreadable image."
    make_run(tmp_path / 'run')
    inp = tmp_path / 'photos'; (inp / 'sub').mkdir(parents=True)
    rand_img(37, 53).save(inp / 'a.png'); rand_img(20, 24, 1).save(inp / 'sub' / 'b.jpg')
    (inp / 'notes.txt').write_text('hello'); (inp / 'broken.png').write_bytes(b'not a png at all')
    return tmp_path


def test_cli_end_to_end(workdir):
    r = cli(workdir, '--checkpoint', 'run', '--input', 'photos', '--output', 'out', '--device', 'cpu', '--batch_size', '2')
    assert r.returncode == 0 and r.stderr == '', r.stderr  # no progress bar outside a terminal
    out = workdir / 'out'
    assert sorted(str(p.relative_to(out)) for p in out.rglob('*') if p.is_file()) == ['a.png', 'sub/b.jpg']
    assert Image.open(out / 'a.png').size == (37, 53) and Image.open(out / 'sub' / 'b.jpg').size == (20, 24)
    assert 'translated 2 image(s)' in r.stdout and 'skipped 1 non-image file' in r.stdout
    assert 'skipped 1 unreadable image(s): broken.png' in r.stdout


def test_cli_help_explains_every_option(capsys):
    assert translate_main(['--help']) == 0
    out = capsys.readouterr().out
    assert out.startswith('usage: cyclegan_edu_translate')
    for opt in ('--checkpoint', '--pretrained', '--direction', '--input', '--output', '--batch_size', '--device', '--load_size',
                '--amp', '--channels_last', '--compile', '--debug', 'examples:'):
        assert opt in out


def test_cli_early_failures_are_one_line_and_write_nothing(workdir):
    (workdir / 'a_file').write_text('x')
    (workdir / 'broken_run').mkdir()
    (workdir / 'broken_run' / 'latest.pt').write_bytes((workdir / 'run' / 'latest.pt').read_bytes()[:3000])
    cases = [(['--device', 'gpu0'], 2, ["--device 'gpu0' is not a device name", 'available here: cpu']),
             (['--output', 'a_file'], 2, ['--output a_file is an existing file']),
             (['--output', 'a_file/out'], 2, ['a_file is a file, not a folder']),
             (['--checkpoint', 'nowhere'], 2, ['--checkpoint nowhere: not found']),
             (['--checkpoint', 'broken_run'], 1, ['could not read broken_run/latest.pt', 'incomplete'])]
    if not torch.cuda.is_available(): cases.append((['--device', 'cuda'], 2, ['--device cuda: there is no such device', 'available here: cpu']))
    for extra, code, parts in cases:
        argv = {'--checkpoint': 'run', '--input': 'photos', '--output': 'out', **dict(zip(extra[::2], extra[1::2]))}
        r = main(workdir, *[s for kv in argv.items() for s in kv])
        one_line_error(r, code, *parts)
        assert not (workdir / 'out').exists() and not (workdir / 'a_file' / 'out').exists(), extra
    assert (workdir / 'a_file').read_text() == 'x'


def test_cli_in_process_refusals(workdir, capsys, monkeypatch):
    monkeypatch.chdir(workdir)
    before = sorted((workdir / 'photos').rglob('*'))
    for argv, code, msg in [(['--output', 'photos'], 2, 'input folder'), (['--output', 'photos/../photos'], 2, 'input folder'),
                            (['--pretrained', 'horse2zebra', '--direction', 'BtoA'], 2, 'for the other way use --pretrained zebra2horse'),
                            (['--pretrained', 'horse2zebr'], 2, 'unknown model; choose one of: apple2orange'),
                            (['--batch_size', '0'], 2, '--batch_size 0'), (['--load_size', '0'], 2, '--load_size 0'),
                            (['--input', 'run'], 2, 'no images'), (['--input', 'nothing'], 2, 'no such file or folder'),
                            (['--amp', 'fp8'], 2, "invalid choice: 'fp8'")]:
        if '--pretrained' not in argv: argv = ['--checkpoint', 'run'] + argv
        full = {'--input': 'photos', '--output': 'o', **dict(zip(argv[::2], argv[1::2]))}
        assert translate_main([s for kv in full.items() for s in kv]) == code, argv
        err = capsys.readouterr().err
        assert msg in err and 'Traceback' not in err, (argv, err)
        assert not (workdir / 'o').exists()
    assert sorted((workdir / 'photos').rglob('*')) == before
    assert translate_main(['--checkpoint', 'run', '--input', 'photos/a.png', '--output', 'photos']) == 2
    assert translate_main(['--checkpoint', 'run', '--input', 'photos/a.png', '--output', 'small', '--load_size', '12']) == 0
    assert Image.open(workdir / 'small' / 'a.png').size == (12, 17)


@pytest.fixture
def read_only_dir():
    "An existing folder nobody can write to: a read-only tmpfs (as root), else a 0o555 folder seen by an unprivileged user."
    base = Path(tempfile.mkdtemp(prefix='ro_test_')); base.chmod(0o755)
    ro = base / 'ro'; ro.mkdir()
    if os.geteuid() != 0:
        ro.chmod(0o555); yield base, ro, None; ro.chmod(0o755); shutil.rmtree(base); return
    try: mounted = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'ro,size=1m', 'tmpfs', str(ro)], capture_output=True).returncode == 0
    except OSError: mounted = False  # no mount command
    if mounted:
        try: yield base, ro, None
        finally: subprocess.run(['umount', str(ro)], check=True); shutil.rmtree(base)
        return
    ro.chmod(0o555)  # root ignores file modes: run the command as user 'nobody' (65534), if it can import the package
    nobody = lambda: os.setuid(65534)
    try: ok = subprocess.run([sys.executable, '-c', 'import cyclegan_edu.inference'], cwd=base, preexec_fn=nobody, capture_output=True,
                             env={**os.environ, 'PYTHONPATH': str(REPO), 'HOME': str(base)}).returncode == 0
    except OSError: ok = False  # e.g. the interpreter itself lies in a folder only root may enter
    if not ok:
        shutil.rmtree(base)
        pytest.skip('needs a read-only folder: mounting a read-only tmpfs failed and user nobody cannot import the package here')
    yield base, ro, nobody
    shutil.rmtree(base)


def test_cli_read_only_output_is_one_line_and_nothing_is_left(read_only_dir):
    base, ro, preexec = read_only_dir
    make_run(base / 'run'); (base / 'photos').mkdir(); rand_img(16, 12).save(base / 'photos' / 'a.png')
    for p in base.rglob('*'):
        if p != ro and ro not in p.parents: p.chmod(0o755 if p.is_dir() else 0o644)
    for out in ('ro', 'ro/new/deeper'):
        r = cli(base, '--checkpoint', 'run', '--input', 'photos', '--output', out, '--device', 'cpu', preexec_fn=preexec,
                env={'HOME': str(base)})
        line = one_line_error(r, 1, f'--output {out} cannot be written')
        assert 'Read-only file system' in line or 'Permission denied' in line, line
        assert list(ro.iterdir()) == []


def test_cli_unwritable_parent_removes_what_it_created(workdir, monkeypatch, capsys):
    "The probe creates the output folders, fails on the temp file, and removes the folders it made."
    monkeypatch.chdir(workdir)
    def refuse(*a, **k): raise PermissionError(13, 'Permission denied')
    monkeypatch.setattr(inference.tempfile, 'mkstemp', refuse)
    assert translate_main(['--checkpoint', 'run', '--input', 'photos', '--output', 'new/deeper/out']) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [PROG + '--output new/deeper/out cannot be written (Permission denied): choose a folder you can write to']
    assert not (workdir / 'new').exists()


def test_cli_counts_replaced_files_and_speed_flags(workdir):
    base = ['--checkpoint', 'run', '--input', 'photos', '--device', 'cpu']
    r = main(workdir, *base, '--output', 'f32')
    assert r.returncode == 0 and r.stderr == '', r.stderr
    r = main(workdir, *base, '--output', 'f32', '--amp', 'fp16', '--channels_last')  # fp16 on a CPU: a note, then float32
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip().splitlines() == ['note: --amp fp16 needs a CUDA GPU; translating in float32 on cpu (--amp bf16 works on CPUs)',
                                             '2 existing file(s) in f32 will be replaced']
    assert 'translated 2 image(s) into f32 (2 replaced)' in r.stdout
    r = main(workdir, *base, '--output', 'bf16', '--amp', 'bf16')
    assert r.returncode == 0 and r.stderr == '', r.stderr
    a = pil_to_tensor(Image.open(workdir / 'f32' / 'a.png')); b = pil_to_tensor(Image.open(workdir / 'bf16' / 'a.png'))
    assert (a - b).abs().max() <= 2 * 2 / 255 + 1e-6  # at most two 8-bit levels apart


def test_cli_drops_a_failing_compile_with_one_note(workdir, monkeypatch):
    _compile_with(monkeypatch, _raising_backend)
    r = main(workdir, '--checkpoint', 'run', '--input', 'photos', '--device', 'cpu', '--output', 'out', '--compile',
             '--batch_size', '1')
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip().splitlines() == ['note: --compile dropped for translation (RuntimeError: C++ compile failed '
                                             '(injected)); continuing with none (eager float32)'], r.stderr
    assert 'translated 2 image(s) into out' in r.stdout and (workdir / 'out' / 'a.png').is_file()
    torch._dynamo.reset()


def test_cli_skips_bad_and_oversized_images(workdir):
    bomb_png(workdir / 'photos' / 'huge.png')
    (workdir / 'photos' / 'empty.jpg').write_bytes(b'')
    r = main(workdir, '--checkpoint', 'run', '--input', 'photos', '--output', 'out', '--device', 'cpu')
    assert r.returncode == 0 and 'Traceback' not in r.stderr, r.stderr
    assert 'skipping huge.png: too many pixels' in r.stdout
    assert 'translated 2 image(s) into out; skipped 1 non-image file(s); skipped 3 unreadable image(s): ' in r.stdout
    assert sorted(p.name for p in (workdir / 'out').rglob('*') if p.is_file()) == ['a.png', 'b.jpg']
    only_bad = workdir / 'only_bad'; only_bad.mkdir()
    bomb_png(only_bad / 'huge.png'); (only_bad / 'x.png').write_bytes(b'junk')
    r = main(workdir, '--checkpoint', 'run', '--input', 'only_bad', '--output', 'out2', '--device', 'cpu')
    one_line_error(r, 1, 'no image could be translated: 2 unreadable image(s): huge.png, x.png')
    assert not (workdir / 'out2').exists()


def test_cli_out_of_memory_skips_only_the_image_that_does_not_fit(workdir, monkeypatch, capsys):
    class SmallMemoryG(ResnetGenerator):  # "runs out of memory" on more than 40×40 pixels at once
        def forward(self, x):
            if x.shape[0] * x.shape[-1] * x.shape[-2] > 1600: raise torch.OutOfMemoryError('out of memory (a test)')
            return super().forward(x)
    torch.manual_seed(0)
    monkeypatch.setattr(inference, 'load_generator', lambda *a, **k: SmallMemoryG(ngf=4, n_blocks=1).eval())
    monkeypatch.chdir(workdir)
    for name in ('c.png', 'd.png', 'e.png'): rand_img(20, 24).save(workdir / 'photos' / name)  # b.jpg's size: a batch of 4
    assert translate_main(['--checkpoint', 'run', '--input', 'photos', '--output', 'out', '--batch_size', '4']) == 0
    out = capsys.readouterr().out
    assert 'skipping a.png: too large to translate on cpu (out of memory)' in out
    assert sorted(p.name for p in (workdir / 'out').rglob('*') if p.is_file()) == ['b.jpg', 'c.png', 'd.png', 'e.png']


def test_cli_output_inside_input_and_input_inside_output(workdir, monkeypatch, capsys):
    monkeypatch.chdir(workdir)
    for _ in range(2):  # the second time, the first run's results inside photos/ are not translated again
        assert translate_main(['--checkpoint', 'run', '--input', 'photos', '--output', 'photos/out']) == 0
        assert 'translated 2 image(s)' in capsys.readouterr().out
    assert translate_main(['--checkpoint', 'run', '--input', 'photos/sub', '--output', 'photos']) == 0  # input inside output
    assert (workdir / 'photos' / 'b.jpg').is_file()
