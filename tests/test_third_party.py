"""A real third-party CycleGAN generator loads and computes what its own code computes.

`vintagify` 0.1.2 (MIT, on PyPI) ships `G_A2B_epoch33.pth`: a ResNet-9 generator (ngf 64) in the official layer
order, but with affine instance norm and residual blocks named `block`. The wheel is downloaded once with pip into
~/.cache/cyclegan_edu-tests (or $CYCLEGAN_EDU_TEST_CACHE); the tests skip only when pip cannot reach the registry.
Its own model and preprocessing code are imported from the unpacked wheel and run on a real photo."""
import importlib.util, os, re, subprocess, sys, zipfile
from pathlib import Path

import matplotlib.cbook
import pytest
import torch
from torch import nn

from cyclegan_edu.inference import load_generator, translate_main
from cyclegan_edu.models import (CheckpointMismatchError, define_G, generator_config_from_state_dict,
                                 generator_from_state_dict, load_generator_state_dict)

WHEEL = 'vintagify==0.1.2'
CACHE = Path(os.environ.get('CYCLEGAN_EDU_TEST_CACHE') or '~/.cache/cyclegan_edu-tests').expanduser() / 'vintagify-0.1.2'
# what pip prints when it cannot reach the index (no network, DNS, proxy, an offline mirror without the package)
NO_REGISTRY = re.compile(r'NewConnectionError|Max retries exceeded|Temporary failure in name resolution|Network is unreachable|'
                         r'ProxyError|ConnectTimeout|ReadTimeout|timed out|Could not find a version that satisfies|'
                         r'No matching distribution found', re.I)
PHOTO = matplotlib.cbook.get_sample_data('grace_hopper.jpg', asfileobj=False)  # a real photo shipped with matplotlib


def _import_file(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope='module')
def vintagify(tmp_path_factory):
    "The unpacked wheel: its generator module, its preprocessing module and the weights file."
    whl = next(CACHE.glob('vintagify-0.1.2-*.whl'), None)
    if whl is None:
        CACHE.mkdir(parents=True, exist_ok=True)
        r = subprocess.run([sys.executable, '-m', 'pip', 'download', '--no-deps', '--disable-pip-version-check', WHEEL,
                            '-d', str(CACHE)], capture_output=True, text=True, timeout=900)
        out = (r.stdout + r.stderr).strip()
        if r.returncode != 0 and NO_REGISTRY.search(out):
            lines = out.splitlines()
            why = next((l for l in lines if re.search(r'connect|resolution|unreachable|proxy|timed out', l, re.I)), lines[-1])
            why += ''.join(f' ({l.strip()})' for l in lines if l.startswith('Looking in indexes'))
            pytest.skip(f"pip cannot reach the package registry to download {WHEEL}: {why.strip()[:300]}")
        assert r.returncode == 0, f"pip download {WHEEL} failed:\n{out[-3000:]}"
        whl = next(CACHE.glob('vintagify-0.1.2-*.whl'))
    d = tmp_path_factory.mktemp('vintagify')
    with zipfile.ZipFile(whl) as z:
        z.extractall(d, ['vintagify/generator.py', 'vintagify/preprocess.py', 'vintagify/resources/G_A2B_epoch33.pth'])
    return dict(gen=_import_file(d / 'vintagify/generator.py', 'vintagify_generator'),
                pre=_import_file(d / 'vintagify/preprocess.py', 'vintagify_preprocess'),
                pth=d / 'vintagify/resources/G_A2B_epoch33.pth')


def test_vintagify_matches_its_own_forward_on_a_real_photo(vintagify):
    pth = vintagify['pth']
    sd = torch.load(pth, map_location='cpu', weights_only=True)
    assert any('.block.' in k for k in sd) and 'model.2.weight' in sd  # the two differences from the official layout
    assert generator_config_from_state_dict(sd) == dict(input_nc=3, output_nc=3, ngf=64, n_blocks=9, use_dropout=False,
                                                         norm='instance_affine')
    ours = load_generator(pth, device='cpu')  # the path cyclegan_edu_translate --checkpoint takes
    theirs = vintagify['gen'].ResnetGenerator().eval()
    theirs.load_state_dict(torch.load(pth, map_location='cpu', weights_only=True))
    x = vintagify['pre'].preprocess(PHOTO, image_size=256)  # their preprocessing: (1, 3, 256, 256) in [-1, 1]
    assert tuple(x.shape) == (1, 3, 256, 256)
    with torch.no_grad(): y_ours, y_theirs = ours(x), theirs(x)
    torch.testing.assert_close(y_ours, y_theirs, rtol=0, atol=1e-5)
    assert (y_ours - x).abs().mean() > 0.05  # a real translation, not the identity


def test_vintagify_through_the_translate_command(vintagify, tmp_path):
    out = tmp_path / 'out'
    rc = translate_main(['--checkpoint', str(vintagify['pth']), '--input', PHOTO, '--output', str(out), '--load_size', '64',
                         '--device', 'cpu'])
    assert rc == 0 and (out / 'grace_hopper.jpg').is_file()


def test_vintagify_in_the_official_network_names_the_norm(vintagify):
    sd = torch.load(vintagify['pth'], map_location='cpu', weights_only=True)
    with pytest.raises(CheckpointMismatchError) as e: load_generator_state_dict(define_G(), sd)
    msg = str(e.value)
    assert "no 'model.1.weight'" not in msg
    assert "residual blocks named 'block' → 'conv_block'" in msg
    assert 'not in the network: model.{2,5,8,20,23}.{bias,weight}, model.{10..18}.conv_block.{2,6}.{bias,weight} (46 keys)' in msg
    assert "looks like norm='instance_affine'" in msg and "norm='instance_affine')" in msg  # the cause and the network to build
    G = load_generator_state_dict(define_G(norm='instance_affine'), sd)  # the option the message names works
    assert torch.equal(G.model[10].conv_block[2].weight, sd['model.10.block.2.weight'])


def test_prefixes_are_undone_only_when_everything_fits():
    G = define_G(3, 3, ngf=4, netG='resnet_6blocks', norm='instance_affine')
    sd = {'_orig_mod.' + k.replace('.conv_block.', '.block.'): v for k, v in G.state_dict().items()}  # torch.compile'd
    G2 = generator_from_state_dict(sd)
    assert all(torch.equal(a, b) for a, b in zip(G.state_dict().values(), G2.state_dict().values()))
    sd['_orig_mod.model.1.weight'] = torch.zeros(4, 3, 3, 3)  # one shape off: no rename may hide it
    with pytest.raises(CheckpointMismatchError, match=re.escape('first shape mismatch: model.1.weight is (4, 3, 3, 3) in the file, '
                                                                '(4, 3, 7, 7) in the network')):
        generator_from_state_dict(sd)


def test_a_different_architecture_is_described_not_misnamed():
    "A generator that enlarges with Upsample + Conv2d (not ConvTranspose2d): same blocks, shifted decoder indices."
    G = define_G(3, 3, ngf=4, netG='resnet_6blocks')
    layers = list(G.model)[:16]
    for c in (16, 8):
        layers += [nn.Upsample(scale_factor=2), nn.Conv2d(c, c // 2, 3, padding=1), nn.InstanceNorm2d(c // 2), nn.ReLU()]
    other = nn.Module(); other.model = nn.Sequential(*layers, nn.ReflectionPad2d(3), nn.Conv2d(4, 3, 7), nn.Tanh())
    sd = other.state_dict()
    with pytest.raises(ValueError) as e: generator_from_state_dict(sd)
    assert "the last convolution should be 'model.23.weight', which is not there" in str(e.value)
    with pytest.raises(CheckpointMismatchError) as e: load_generator_state_dict(define_G(3, 3, ngf=4, netG='resnet_6blocks'), sd)
    msg = str(e.value)
    assert 'missing from the file: model.{16,19,23}.{bias,weight} (6 keys); not in the network: model.{17,21,25}.{bias,weight}' in msg, msg
    assert 'No ResnetGenerator fits the file either' in msg and 'Likely cause' not in msg
