"""Sharing generators: Hub-style folders (round trip, refusals), pushing (the Hub calls replaced by local stand-ins),
loading by repository id (hf_hub_download replaced by a local repository), and hubconf.py through torch.hub.load with
source='local' and the shared local HTTP server. Nothing here reaches the internet."""
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip('huggingface_hub')
pytest.importorskip('safetensors')
import huggingface_hub

import cyclegan_edu.inference as inference
from cyclegan_edu.hub import (HUB_FORMAT, NotAGeneratorRepoError, generator_args, load_generator_from_hub, push_generator,
                              push_main, save_generator_to_hub_folder)
from cyclegan_edu.models import define_G

ROOT = Path(__file__).resolve().parents[1]


def tiny_G(seed=0, **kw):
    torch.manual_seed(seed)
    return define_G(**{'ngf': 4, 'netG': 'resnet_6blocks', **kw}).eval()


def same(a, b, nc=3) -> bool:
    x = torch.rand(2, nc, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad(): return torch.equal(a.eval()(x), b.eval()(x))


def sample_png(path: Path) -> Path:
    from PIL import Image
    Image.new('RGB', (40, 20), (200, 10, 10)).save(path)
    return path


@pytest.mark.parametrize('kw', [dict(), dict(norm='instance_affine'), dict(norm='batch', input_nc=1, output_nc=3),
                                dict(use_dropout=True, netG='resnet_9blocks')])
def test_round_trip_is_identical(tmp_path, kw):
    G = tiny_G(**kw)
    if kw.get('norm') == 'instance_affine':  # non-trivial affine parameters
        with torch.no_grad():
            for p in G.parameters(): p.add_(torch.rand_like(p) * 0.1)
    folder = save_generator_to_hub_folder(G, tmp_path / 'repo')
    G2 = load_generator_from_hub(folder, device='cpu')
    assert not G2.training and same(G, G2, G.input_nc)
    assert [k for k in G.state_dict()] == [k for k in G2.state_dict()]
    assert all(torch.equal(a, b) for a, b in zip(G.state_dict().values(), G2.state_dict().values()))


def test_folder_layout_and_card(tmp_path):
    opts = {'dataroot': 'horse2zebra', 'n_epochs': 100, 'max_dataset_size': float('inf'), 'lr': 0.0002}
    folder = save_generator_to_hub_folder(tiny_G(), tmp_path / 'repo', repo_id='you/h2z', translates='horse → zebra',
                                          dataset='horse2zebra', training_options=opts, sample_grid=sample_png(tmp_path / 's.png'),
                                          metrics={'FID': 77.2, 'KID': 0.012}, license='cc-by-4.0')
    assert sorted(p.name for p in folder.iterdir()) == ['README.md', 'config.json', 'model.safetensors', 'sample.png']
    def strict(c): raise AssertionError(f'config.json holds {c}, which is not JSON')
    cfg = json.loads((folder / 'config.json').read_text(), parse_constant=strict)  # inf is stored as a string
    assert cfg['training_options']['max_dataset_size'] == 'inf'
    assert cfg['format'] == HUB_FORMAT and cfg['generator'] == generator_args(tiny_G())
    assert cfg['training_options']['n_epochs'] == 100 and cfg['metrics'] == {'FID': 77.2, 'KID': 0.012}
    card = huggingface_hub.ModelCard.load(folder / 'README.md')
    assert card.data.library_name == 'cyclegan_edu' and card.data.license == 'cc-by-4.0'
    assert {'cyclegan', 'image-to-image'} <= set(card.data.tags) and card.data.pipeline_tag == 'image-to-image'
    assert card.data.eval_results[0].metric_value == 77.2 and card.data.eval_results[0].dataset_name == 'horse2zebra'
    text = card.text
    for part in ('translates horse → zebra', "load_generator_from_hub('you/h2z')", '![samples](sample.png)', '| KID | 0.012 |',
                 '| n_epochs | 100 |', '| parameters |'):
        assert part in text, part
    from safetensors import safe_open
    with safe_open(str(folder / 'model.safetensors'), 'pt') as f: assert set(f.keys()) == set(tiny_G().state_dict())


def test_not_a_generator_is_refused(tmp_path):
    other = tmp_path / 'vit'; other.mkdir()
    (other / 'config.json').write_text(json.dumps({'model_type': 'vit', 'architectures': ['ViTModel']}))
    with pytest.raises(NotAGeneratorRepoError, match=r"vit is not a cyclegan_edu generator: .*lacks \"format\".*'model_type': 'vit'"):
        load_generator_from_hub(other)
    empty = tmp_path / 'empty'; empty.mkdir(); (empty / 'notes.txt').write_text('hi')
    with pytest.raises(NotAGeneratorRepoError, match=r"no config.json \(files there: \['notes.txt'\]\)"): load_generator_from_hub(empty)
    # a shared folder whose weights were replaced by a pickle: never loaded
    folder = save_generator_to_hub_folder(tiny_G(), tmp_path / 'repo')
    (folder / 'model.safetensors').unlink(); torch.save(tiny_G().state_dict(), folder / 'pytorch_model.bin')
    with pytest.raises(NotAGeneratorRepoError, match='pytorch_model.bin are not loaded: pickle'): load_generator_from_hub(folder)
    # weights that do not fit config.json
    folder = save_generator_to_hub_folder(tiny_G(), tmp_path / 'repo2')
    cfg = json.loads((folder / 'config.json').read_text()); cfg['generator']['ngf'] = 8
    (folder / 'config.json').write_text(json.dumps(cfg))
    with pytest.raises(NotAGeneratorRepoError, match='do not fit the network in config.json.*first shape mismatch'):
        load_generator_from_hub(folder)
    # a training run folder
    run = tmp_path / 'run'; run.mkdir(); torch.save(tiny_G().state_dict(), run / 'latest_net_G_A.pth')
    with pytest.raises(NotAGeneratorRepoError, match='looks like a training run'): load_generator_from_hub(run)
    with pytest.raises(FileNotFoundError, match='neither a folder nor a Hub repository id'): load_generator_from_hub('no such/folder/x')
    with pytest.raises(ValueError, match='only ResNet generators'):
        save_generator_to_hub_folder(torch.nn.Conv2d(3, 3, 1), tmp_path / 'conv')


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    "The Hub replaced by local folders: create_repo/upload_folder store into hub/<repo_id>, hf_hub_download serves from it."
    hub = tmp_path / 'hub'
    calls = []
    def create_repo(repo_id, token=None, private=None, exist_ok=False, **kw):
        calls.append(('create_repo', repo_id, private)); (hub / repo_id).mkdir(parents=True, exist_ok=True)
    def upload_folder(*, repo_id, folder_path, token=None, commit_message=None, **kw):
        calls.append(('upload_folder', repo_id, commit_message))
        shutil.copytree(folder_path, hub / repo_id, dirs_exist_ok=True)
        return type('CommitInfo', (), {'commit_url': f'https://huggingface.co/{repo_id}/commit/0'})()
    def hf_hub_download(repo_id, filename, **kw):
        calls.append(('hf_hub_download', repo_id, filename))
        if not (hub / repo_id).is_dir():
            cls = huggingface_hub.errors.RepositoryNotFoundError  # its constructor wants an HTTP response: skip it
            err = cls.__new__(cls); Exception.__init__(err, f'{repo_id} not found'); raise err
        if not (hub / repo_id / filename).is_file(): raise huggingface_hub.errors.EntryNotFoundError(f'{filename} not found')
        return str(hub / repo_id / filename)
    for name, f in (('create_repo', create_repo), ('upload_folder', upload_folder), ('hf_hub_download', hf_hub_download)):
        monkeypatch.setattr(huggingface_hub, name, f)
    return hub, calls


def make_run(run: Path, direction='AtoB'):
    "A run of this package: config.json, latest.pt, the official-format .pth files and a sample grid."
    run.mkdir(parents=True); (run / 'images').mkdir()
    cfg = dict(dataroot='/home/someone/data/horse2zebra', checkpoints_dir='/home/someone/ck', name=run.name, ngf=4,
               netG='resnet_6blocks', norm='instance', no_dropout=True, direction=direction, input_nc=3, output_nc=3,
               max_dataset_size=float('inf'), device='cuda:1')
    G_A, G_B = tiny_G(1), tiny_G(2)
    (run / 'config.json').write_text(json.dumps(cfg))
    torch.save({'format': 'cyclegan_edu', 'version': 1, 'config': cfg,
                'nets': {'G_A': G_A.state_dict(), 'G_B': G_B.state_dict()}}, run / 'latest.pt')
    sample_png(run / 'images' / 'iter_0000004.png'); sample_png(run / 'images' / 'iter_0000008.png')
    return G_A, G_B


def test_push_a_run_and_load_it_by_id(tmp_path, fake_hub):
    hub, calls = fake_hub
    G_A, G_B = make_run(tmp_path / 'run')
    url = push_generator(tmp_path / 'run', 'you/h2z', translates='horse → zebra', metrics={'FID': 80.0}, private=True)
    assert url == 'https://huggingface.co/you/h2z/commit/0'
    assert calls[:2] == [('create_repo', 'you/h2z', True), ('upload_folder', 'you/h2z', 'Upload CycleGAN generator')]
    cfg = json.loads((hub / 'you/h2z/config.json').read_text())
    assert cfg['dataset'] == 'horse2zebra' and cfg['training_options']['dataroot'] == 'horse2zebra'
    assert 'checkpoints_dir' not in cfg['training_options'] and 'device' not in cfg['training_options']  # nothing local
    assert '/home/someone' not in (hub / 'you/h2z/README.md').read_text() + (hub / 'you/h2z/config.json').read_text()
    assert (hub / 'you/h2z/sample.png').is_file()  # the run's newest sample grid
    G = load_generator_from_hub('you/h2z', device='cpu')
    assert same(G, G_A)
    assert ('hf_hub_download', 'you/h2z', 'config.json') in calls and ('hf_hub_download', 'you/h2z', 'model.safetensors') in calls
    # the other direction, from the checkpoint file
    push_generator(tmp_path / 'run' / 'latest.pt', 'you/z2h', direction='BtoA')
    assert same(load_generator_from_hub('you/z2h', device='cpu'), G_B)


def test_hub_repo_errors(tmp_path, fake_hub):
    hub, _ = fake_hub
    with pytest.raises(NotAGeneratorRepoError, match='no Hub repository you/nothing'): load_generator_from_hub('you/nothing')
    (hub / 'you/text-model').mkdir(parents=True)
    (hub / 'you/text-model/config.json').write_text(json.dumps({'model_type': 'bert'}))
    with pytest.raises(NotAGeneratorRepoError, match="the Hub repository you/text-model is not a cyclegan_edu generator.*bert"):
        load_generator_from_hub('you/text-model')
    (hub / 'you/no-config').mkdir(parents=True)
    with pytest.raises(NotAGeneratorRepoError, match='has no config.json'): load_generator_from_hub('you/no-config')
    save_generator_to_hub_folder(tiny_G(), hub / 'you/pickle-only')
    (hub / 'you/pickle-only/model.safetensors').unlink()
    with pytest.raises(NotAGeneratorRepoError, match='has no model.safetensors: only safetensors'):
        load_generator_from_hub('you/pickle-only')


def test_push_command(tmp_path, fake_hub, capsys):
    hub, _ = fake_hub
    G_A, _ = make_run(tmp_path / 'run')
    assert push_main(['--checkpoint', str(tmp_path / 'run'), '--folder', str(tmp_path / 'out'), '--fid', '70.5']) == 0
    assert 'model.safetensors' in capsys.readouterr().out
    assert same(load_generator_from_hub(tmp_path / 'out', device='cpu'), G_A)
    assert '| FID | 70.5 |' in (tmp_path / 'out/README.md').read_text()
    assert push_main(['--checkpoint', str(tmp_path / 'run'), '--repo_id', 'you/cli', '--translates', 'horse → zebra']) == 0
    assert 'pushed to https://huggingface.co/you/cli' in capsys.readouterr().out
    assert push_main(['--checkpoint', str(tmp_path / 'nope'), '--folder', str(tmp_path / 'x')]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith('cyclegan_edu_push: error: checkpoint not found') and '\n' not in err


def test_missing_extra_is_named(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, 'huggingface_hub', None)  # as if not installed
    with pytest.raises(ImportError, match=r"pip install 'cyclegan_edu\[hub\]'"): save_generator_to_hub_folder(tiny_G(), tmp_path / 'r')


# --- hubconf.py ---------------------------------------------------------------------------------------------------------

def test_torch_hub_local_entry_points():
    import importlib.util
    spec = importlib.util.spec_from_file_location('hubconf', ROOT / 'hubconf.py')
    hubconf = importlib.util.module_from_spec(spec); spec.loader.exec_module(hubconf)
    assert hubconf.dependencies[:2] == ['torch', 'torchvision']
    assert callable(hubconf.resnet_generator) and callable(hubconf.patchgan_discriminator)
    G = torch.hub.load(str(ROOT), 'resnet_generator', source='local', ngf=4, netG='resnet_6blocks')
    assert sum(p.numel() for p in G.parameters()) == sum(p.numel() for p in tiny_G().parameters())
    assert sum(p.numel() for p in torch.hub.load(str(ROOT), 'resnet_generator', source='local').parameters()) == 11_378_179
    D = torch.hub.load(str(ROOT), 'patchgan_discriminator', source='local')
    assert sum(p.numel() for p in D.parameters()) == 2_764_737


def test_torch_hub_pretrained_from_local_server(tmp_path, local_server, monkeypatch):
    G = tiny_G(5)
    sd = dict(G.state_dict()); sd['model.2.running_mean'] = torch.zeros(4)  # like the old official files
    path = tmp_path / 'h2z.pth'; torch.save(sd, path)
    local_server.files['/pretrained/horse2zebra.pth'] = path.read_bytes()
    monkeypatch.setattr(inference, 'PRETRAINED_URL', local_server.url('pretrained/{name}.pth'))
    G2 = torch.hub.load(str(ROOT), 'resnet_generator', source='local', pretrained='horse2zebra', cache_dir=str(tmp_path / 'cache'),
                        device='cpu')
    assert same(G, G2) and not G2.training and local_server.hits == ['/pretrained/horse2zebra.pth']
    G3 = torch.hub.load(str(ROOT), 'resnet_generator', source='local', pretrained='horse2zebra', cache_dir=str(tmp_path / 'cache'))
    assert same(G, G3) and len(local_server.hits) == 1  # cached
    with pytest.raises(ValueError, match='unknown pretrained model'):
        torch.hub.load(str(ROOT), 'resnet_generator', source='local', pretrained='horse2zebr', cache_dir=str(tmp_path / 'cache'))


def test_torch_hub_from_a_hub_repo(tmp_path, fake_hub):
    hub, _ = fake_hub
    G = tiny_G(7)
    save_generator_to_hub_folder(G, hub / 'you/model')
    assert same(torch.hub.load(str(ROOT), 'resnet_generator', source='local', pretrained='you/model', device='cpu'), G)
