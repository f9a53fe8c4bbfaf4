"""download_dataset against a real HTTP server on 127.0.0.1 serving zips made here."""
import io
import socket
import threading
import zipfile

import pytest
from PIL import Image

from cyclegan_edu.data import DownloadError, UnpairedImageDataset, download_dataset


def _png():
    buf = io.BytesIO()
    Image.new('RGB', (8, 8), (200, 30, 30)).save(buf, 'PNG')
    return buf.getvalue()


def make_zip(folders=('trainA', 'trainB', 'testA', 'testB'), top='horse2zebra', extra=()):
    "Bytes of a dataset zip: `top/<folder>/img0.png` for each folder, plus `extra` (name, bytes) members."
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, 'w') as zf:
        for f in folders:
            for i in range(2): zf.writestr(f'{top}/{f}/img{i}.png' if top else f'{f}/img{i}.png', _png())
        for name, data in extra: zf.writestr(name, data)
    return buf.getvalue()


@pytest.fixture
def server(local_server):
    "The shared local server (conftest.py), with the dataset URL template the code under test fills in."
    local_server.zip_url = local_server.url('{name}.zip')
    return local_server


def listing(d):
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


def test_good_zip_downloads_extracts_and_is_not_fetched_twice(server, tmp_path):
    server.files['/horse2zebra.zip'] = make_zip()
    root = tmp_path / 'datasets'
    path = download_dataset('horse2zebra', root=root, url=server.zip_url)
    assert path == root / 'horse2zebra'
    assert listing(path) == ['testA', 'testB', 'trainA', 'trainB']
    assert listing(path / 'trainA') == ['img0.png', 'img1.png']
    assert listing(root) == ['horse2zebra']  # no zip, no temp file, no temp folder left
    assert len(UnpairedImageDataset(path, load_size=8, crop_size=8)) == 2
    assert download_dataset('horse2zebra', root=root, url=server.zip_url) == path
    assert server.hits == ['/horse2zebra.zip']  # the second call did not download


def test_force_downloads_again(server, tmp_path):
    server.files['/horse2zebra.zip'] = make_zip()
    download_dataset('horse2zebra', root=tmp_path, url=server.zip_url, progress=False)
    (tmp_path / 'horse2zebra' / 'trainA' / 'img0.png').unlink()
    download_dataset('horse2zebra', root=tmp_path, url=server.zip_url, force=True, progress=False)
    assert len(server.hits) == 2
    assert (tmp_path / 'horse2zebra' / 'trainA' / 'img0.png').exists()


def test_zip_with_folders_at_top_level(server, tmp_path):
    server.files['/mine.zip'] = make_zip(top=None)
    path = download_dataset('mine', root=tmp_path, url=server.zip_url, progress=False)
    assert listing(path) == ['testA', 'testB', 'trainA', 'trainB'] and listing(tmp_path) == ['mine']


def test_truncated_download_is_an_error_and_leaves_nothing(server, tmp_path):
    body = make_zip()
    server.files['/horse2zebra.zip'] = body
    server.truncate.add('/horse2zebra.zip')  # promises the whole body, sends half
    with pytest.raises(DownloadError, match=r'stopped after [\d,]+ of [\d,]+ bytes') as e:
        download_dataset('horse2zebra', root=tmp_path, url=server.zip_url, progress=False)
    assert '127.0.0.1' in str(e.value) and '--dataroot' in str(e.value)
    assert listing(tmp_path) == []


@pytest.mark.parametrize('member', ['../evil.txt', '/abs_evil.txt', 'horse2zebra/../../evil2.txt'])
def test_member_escaping_the_target_is_refused(server, tmp_path, member):
    server.files['/horse2zebra.zip'] = make_zip(extra=[(member, b'gotcha')])
    root = tmp_path / 'a' / 'datasets'
    with pytest.raises(DownloadError, match='refusing to extract') as e:
        download_dataset('horse2zebra', root=root, url=server.zip_url, progress=False)
    assert repr(member) in str(e.value)
    assert listing(tmp_path) == []                      # not even the folders a/datasets/ the call created
    assert not list(tmp_path.rglob('*evil*'))


def test_missing_testB_is_a_layout_error(server, tmp_path):
    server.files['/horse2zebra.zip'] = make_zip(folders=('trainA', 'trainB', 'testA'))
    with pytest.raises(DownloadError, match='no testB folder'):
        download_dataset('horse2zebra', root=tmp_path, url=server.zip_url, progress=False)
    assert listing(tmp_path) == []


def test_not_a_zip(server, tmp_path):
    server.files['/horse2zebra.zip'] = b'<html>maintenance</html>'
    with pytest.raises(DownloadError, match=r'returned a web page \(HTML\) instead of the zip.*--dataroot'):
        download_dataset('horse2zebra', root=tmp_path, url=server.zip_url, progress=False)
    assert listing(tmp_path) == []
    server.files['/junk.zip'] = b'PK\x03\x04 not really a zip'
    with pytest.raises(DownloadError, match='not a valid zip'):
        download_dataset('junk', root=tmp_path, url=server.zip_url, progress=False)
    assert listing(tmp_path) == []


def test_http_404(server, tmp_path):
    with pytest.raises(DownloadError, match='HTTP 404'):
        download_dataset('horse2zebra', root=tmp_path, url=server.zip_url, progress=False)
    assert listing(tmp_path) == []


def test_existing_incomplete_folder_is_not_trusted(server, tmp_path):
    server.files['/horse2zebra.zip'] = make_zip()
    for f in ('trainA', 'trainB', 'testA'): (tmp_path / 'horse2zebra' / f).mkdir(parents=True)
    with pytest.raises(DownloadError, match=r'lacks testB.*force=True'):
        download_dataset('horse2zebra', root=tmp_path, url=server.zip_url, progress=False)
    assert server.hits == []


def test_unknown_and_unhosted_names():
    with pytest.raises(ValueError, match=r"unknown dataset 'horse2zebras'.*horse2zebra.*monet2photo"):
        download_dataset('horse2zebras')
    with pytest.raises(ValueError, match=r"unknown dataset 'horse2zebr': did you mean 'horse2zebra'\?"):
        download_dataset('horse2zebr')
    with pytest.raises(ValueError) as e:
        download_dataset('cifar10')
    assert 'did you mean' not in str(e.value) and 'vangogh2photo' in str(e.value)
    with pytest.raises(ValueError, match=r'licence.*prepare_cityscapes_dataset\.py'):
        download_dataset('cityscapes')
    with pytest.raises(ValueError, match='plain folder name'):
        download_dataset('../x', url='http://127.0.0.1:1/x.zip')


def test_unreachable_url(tmp_path):
    with socket.socket() as s:  # find a free port, then close it: connecting is refused
        s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]
    url = f'http://127.0.0.1:{port}/{{name}}.zip'
    with pytest.raises(DownloadError, match='check your internet connection') as e:
        download_dataset('horse2zebra', root=tmp_path, url=url, progress=False)
    assert f'127.0.0.1:{port}/horse2zebra.zip' in str(e.value) and '--dataroot' in str(e.value)
    assert listing(tmp_path) == []


def test_training_on_an_official_name_downloads_it_once(server, tmp_path, monkeypatch):
    "`cyclegan_edu_train --dataroot horse2zebra` fetches the official zip into ./datasets, then trains on it."
    import cyclegan_edu.data as data
    from cyclegan_edu.cli import train_main
    from cyclegan_edu.checkpoint import load_checkpoint
    server.files['/horse2zebra.zip'] = make_zip()
    monkeypatch.setattr(data, 'DATASET_URL', server.zip_url)
    monkeypatch.chdir(tmp_path)
    args = ['--dataroot', 'horse2zebra', '--name', 'h2z', '--crop_size', '32', '--load_size', '32', '--ngf', '4',
            '--ndf', '4', '--netG', 'resnet_6blocks', '--n_epochs', '1', '--n_epochs_decay', '0', '--num_threads', '0', '--quiet']
    assert train_main(args) == 0
    assert listing(tmp_path / 'datasets' / 'horse2zebra') == ['testA', 'testB', 'trainA', 'trainB']
    assert load_checkpoint(tmp_path / 'checkpoints' / 'h2z' / 'latest.pt')['total_iters'] == 2
    assert train_main(args + ['--resume', '--n_epochs', '2']) == 0     # a second run reuses the folder
    assert server.hits == ['/horse2zebra.zip']


@pytest.mark.parametrize('case', ['http_404', 'html_page', 'no_server'])
def test_a_failed_download_leaves_no_folder_it_created(server, tmp_path, case):
    "A root that did not exist (two levels deep) is removed again when the download fails; an existing one is kept."
    if case == 'html_page': server.files['/horse2zebra.zip'] = b'<!DOCTYPE html><html>Service unavailable</html>'
    url = server.zip_url
    if case == 'no_server':
        with socket.socket() as s:
            s.bind(('127.0.0.1', 0)); url = f'http://127.0.0.1:{s.getsockname()[1]}/{{name}}.zip'
    root = tmp_path / 'new' / 'datasets'
    with pytest.raises(DownloadError) as e:
        download_dataset('horse2zebra', root=root, url=url, progress=False)
    assert '\n' not in str(e.value)
    assert listing(tmp_path) == []
    (tmp_path / 'mine').mkdir(); (tmp_path / 'mine' / 'keep.txt').write_text('x')
    with pytest.raises(DownloadError):
        download_dataset('horse2zebra', root=tmp_path / 'mine' / 'datasets', url=url, progress=False)
    assert listing(tmp_path) == ['mine'] and listing(tmp_path / 'mine') == ['keep.txt']
