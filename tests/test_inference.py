"Tests for cyclegan_edu.inference: loading generators, translating any size/kind, pretrained downloads, the CLI."
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from PIL import Image

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


# --- command line -----------------------------------------------------------------------------------------------------

def test_cli_end_to_end(tmp_path):
    make_run(tmp_path / 'run')
    inp = tmp_path / 'photos'; (inp / 'sub').mkdir(parents=True)
    rand_img(37, 53).save(inp / 'a.png'); rand_img(20, 24, 1).save(inp / 'sub' / 'b.jpg')
    (inp / 'notes.txt').write_text('hello'); (inp / 'broken.png').write_bytes(b'not a png at all')
    cmd = [sys.executable, '-m', 'cyclegan_edu.inference', '--checkpoint', 'run', '--input', 'photos', '--output', 'out',
           '--device', 'cpu', '--batch_size', '2']
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert sorted(str(p.relative_to(tmp_path / 'out')) for p in (tmp_path / 'out').rglob('*') if p.is_file()) == ['a.png', 'sub/b.jpg']
    assert Image.open(tmp_path / 'out' / 'a.png').size == (37, 53) and Image.open(tmp_path / 'out' / 'sub' / 'b.jpg').size == (20, 24)
    assert 'translated 2 image(s)' in r.stdout and 'skipped 1 non-image file' in r.stdout
    assert 'skipped 1 unreadable image(s): broken.png' in r.stdout


def test_cli_help_explains_every_option(capsys):
    with pytest.raises(SystemExit) as e: translate_main(['--help'])
    out = capsys.readouterr().out
    assert e.value.code == 0 and out.startswith('usage: cyclegan_edu_translate')
    for opt in ('--checkpoint', '--pretrained', '--direction', '--input', '--output', '--batch_size', '--device', '--load_size', 'examples:'):
        assert opt in out


def test_cli_in_process_options_and_refusals(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_run(tmp_path / 'run')
    inp = tmp_path / 'photos'; inp.mkdir()
    rand_img(40, 30).save(inp / 'a.jpg')
    before = sorted(inp.iterdir())
    for argv, msg in [(['--output', 'photos'], 'input folder'), (['--output', 'photos/../photos'], 'input folder'),
                      (['--pretrained', 'horse2zebra', '--direction', 'BtoA', '--output', 'o'], 'zebra2horse'),
                      (['--checkpoint', 'nothing', '--output', 'o'], 'not found'),
                      (['--checkpoint', 'run', '--output', 'o', '--batch_size', '0'], 'batch_size')]:
        if '--checkpoint' not in argv and '--pretrained' not in argv: argv = ['--checkpoint', 'run'] + argv
        with pytest.raises(SystemExit) as e: translate_main(['--input', 'photos'] + argv)
        assert e.value.code == 2 and msg in capsys.readouterr().err, argv
    assert sorted(inp.iterdir()) == before
    with pytest.raises(SystemExit): translate_main(['--checkpoint', 'run', '--input', 'photos/a.jpg', '--output', 'photos'])
    assert translate_main(['--checkpoint', 'run', '--input', 'photos/a.jpg', '--output', 'small', '--load_size', '12']) == 0
    assert Image.open(tmp_path / 'small' / 'a.jpg').size == (16, 12)
    (inp / 'bad.png').write_bytes(b'')
    assert translate_main(['--checkpoint', 'run', '--input', 'photos/bad.png', '--output', 'o2']) == 1
    assert 'skipped 1 unreadable' in capsys.readouterr().out
