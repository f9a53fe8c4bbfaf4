"""Folder dataset, preprocessing and loader semantics (tiny images, CPU, seeded)."""
import random

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import SequentialSampler
from torchvision import transforms as T

from cyclegan_edu.core import seed_everything
from cyclegan_edu.data import (IMG_EXTENSIONS, BadImageError, ImageTooSmallError, UnpairedImageDataset,
                               create_dataloader, get_transform, is_image_file, load_image, make_dataset, show_batch)

SMALL = dict(load_size=36, crop_size=32)


def rgb(w=40, h=40, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def make_root(tmp_path, n_A=5, n_B=3, size=(40, 40)):
    root = tmp_path / 'ds'
    for dom, n in (('trainA', n_A), ('trainB', n_B)):
        (root / dom).mkdir(parents=True)
        for i in range(n): rgb(*size, seed=i + 100 * (dom == 'trainB')).save(root / dom / f'{dom[-1]}{i}.png')
    return root


def name(p): return p.replace('\\', '/').rsplit('/', 1)[-1]


# --- finding files ------------------------------------------------------------------------------------------

def test_make_dataset_recursive_sorted_truncated(tmp_path):
    (tmp_path / 'sub').mkdir()
    for f in ['b.png', 'a.JPG', 'sub/c.jpeg', 'notes.txt', 'd.Jpg']: rgb(4, 4).save(tmp_path / f, 'PNG')
    assert [p.name for p in make_dataset(tmp_path)] == ['a.JPG', 'b.png', 'c.jpeg']
    assert [p.name for p in make_dataset(tmp_path, max_dataset_size=2)] == ['a.JPG', 'b.png']
    assert '.webp' in IMG_EXTENSIONS and '.TIFF' in IMG_EXTENSIONS and is_image_file('x.pgm')


def test_make_dataset_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match='nope not found.*trainA'):
        make_dataset(tmp_path / 'nope')
    with pytest.raises(FileNotFoundError, match=r'no images in .*\.jpg.*\.png'):
        make_dataset(tmp_path)


# --- loading ------------------------------------------------------------------------------------------------

def test_mixed_modes_give_right_shape_and_range(tmp_path):
    root = make_root(tmp_path, n_A=0, n_B=1)
    base = rgb(40, 40)
    for mode in ['L', 'LA', 'RGBA', 'P']: base.convert(mode).save(root / 'trainA' / f'{mode}.png')
    base.convert('CMYK').save(root / 'trainA' / 'cmyk.jpg')
    Image.fromarray(np.full((40, 40), 40000, np.uint16)).save(root / 'trainA' / 'i16.png')  # 16-bit PNG
    assert Image.open(root / 'trainA' / 'i16.png').mode.startswith('I')
    for nc in (3, 1):
        ds = UnpairedImageDataset(root, input_nc=nc, serial_batches=True, **SMALL)
        assert ds.A_size == 6
        for i in range(len(ds)):
            A = ds[i]['A']
            assert A.shape == (nc, 32, 32) and A.dtype == torch.float32
            assert -1 <= A.min() and A.max() <= 1
    # 16 bit: 40000 / 256 = 156.25 → 156 in 8 bits, not clipped to white
    A16 = UnpairedImageDataset(root, preprocess='none', no_flip=True, serial_batches=True)[5]['A']
    assert name(UnpairedImageDataset(root)[5]['A_paths']) == 'i16.png'
    assert torch.allclose(A16, torch.full_like(A16, 156 / 255 * 2 - 1), atol=1e-6)


def test_load_image_modes(tmp_path):
    Image.fromarray(np.full((6, 5), 1000, np.uint16)).save(tmp_path / 'x.png')
    assert load_image(tmp_path / 'x.png').mode == 'RGB' and load_image(tmp_path / 'x.png', nc=1).mode == 'L'
    assert load_image(tmp_path / 'x.png').size == (5, 6)
    with pytest.raises(ValueError, match='nc=4'):
        load_image(tmp_path / 'x.png', nc=4)


@pytest.mark.parametrize('kind', ['garbage', 'truncated_jpg', 'truncated_png', 'empty'])
def test_corrupt_file_names_the_file(tmp_path, kind):
    good = tmp_path / 'good.jpg'; rgb(64, 64).save(good, quality=95)
    gpng = tmp_path / 'good.png'; rgb(64, 64).save(gpng)
    data = {'garbage': b'this is not an image', 'truncated_jpg': good.read_bytes()[:400],
            'truncated_png': gpng.read_bytes()[:300], 'empty': b''}[kind]
    bad = tmp_path / f'bad_{kind}.{"png" if "png" in kind else "jpg"}'
    bad.write_bytes(data)
    with pytest.raises(BadImageError, match=f'bad_{kind}.*skip_bad_images'):
        load_image(bad)


# --- preprocessing ------------------------------------------------------------------------------------------

@pytest.mark.parametrize('mode,shape', [('resize_and_crop', (3, 64, 64)), ('crop', (3, 64, 64)),
                                        ('scale_width', (3, 64, 72)),  # W 72, H max(int(72·70/100)=50, 64)
                                        ('scale_width_and_crop', (3, 64, 64)),
                                        ('none', (3, 72, 100))])       # 70/4 = 17.5 rounds to 18 (half to even)
def test_preprocess_mode_sizes(mode, shape):
    x = get_transform(mode, load_size=72, crop_size=64)(rgb(100, 70))
    assert x.shape == shape and -1 <= x.min() and x.max() <= 1


def _official(mode, load=72, crop=64, gray=False):
    "The official get_transform rebuilt from torchvision, with its __scale_width/__make_power_2 formulas."
    bic = Image.BICUBIC
    def scale_width(img):
        ow, oh = img.size
        return img if ow == load and oh >= crop else img.resize((load, int(max(load * oh / ow, crop))), bic)
    def power2(img):
        ow, oh = img.size
        w, h = int(round(ow / 4) * 4), int(round(oh / 4) * 4)
        return img if (w, h) == (ow, oh) else img.resize((w, h), bic)
    steps = [T.Grayscale(1)] if gray else []
    if 'resize' in mode: steps.append(T.Resize([load, load], T.InterpolationMode.BICUBIC))
    elif 'scale_width' in mode: steps.append(T.Lambda(scale_width))
    if 'crop' in mode: steps.append(T.RandomCrop(crop))
    if mode == 'none': steps.append(T.Lambda(power2))
    c = 1 if gray else 3
    return T.Compose(steps + [T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize((0.5,) * c, (0.5,) * c)])


@pytest.mark.parametrize('mode', ['resize_and_crop', 'crop', 'scale_width', 'scale_width_and_crop', 'none'])
@pytest.mark.parametrize('gray', [False, True])
def test_same_pixels_as_official_pipeline(mode, gray):
    img, ours, ref = rgb(101, 70), get_transform(mode, 72, 64, grayscale=gray), _official(mode, gray=gray)
    state = random.getstate()
    for seed in range(5):
        torch.manual_seed(seed); a = ref(img)
        torch.manual_seed(seed); b = ours(img)
        assert torch.equal(a, b), seed
    assert random.getstate() == state  # only torch's generator is used


def test_transform_errors():
    with pytest.raises(ValueError, match='resize_and_crop, crop, scale_width, scale_width_and_crop, none'):
        get_transform('resize')
    with pytest.raises(ValueError, match='load_size ≥ crop_size'):
        get_transform(load_size=200, crop_size=256)
    with pytest.raises(ImageTooSmallError, match=r'100×70.*crop_size is 128.*resize_and_crop'):
        get_transform('crop', crop_size=128)(rgb(100, 70))


def test_crop_larger_than_image_names_the_file(tmp_path):
    root = make_root(tmp_path, size=(40, 30))
    ds = UnpairedImageDataset(root, preprocess='crop', crop_size=32)
    with pytest.raises(ImageTooSmallError, match=r'A0\.png.*40×30.*crop_size is 32'):
        ds[0]


# --- the dataset --------------------------------------------------------------------------------------------

def test_len_is_max_and_items(tmp_path):
    root = make_root(tmp_path, n_A=5, n_B=3)
    ds = UnpairedImageDataset(root, **SMALL)
    assert (len(ds), ds.A_size, ds.B_size) == (5, 5, 3)
    it = ds[4]
    assert set(it) == {'A', 'B', 'A_paths', 'B_paths'} and isinstance(it['A_paths'], str)
    assert it['A'].shape == it['B'].shape == (3, 32, 32)
    assert [name(ds[i]['A_paths']) for i in range(5)] == ['A0.png', 'A1.png', 'A2.png', 'A3.png', 'A4.png']
    ds2 = UnpairedImageDataset(make_root(tmp_path / 'x', n_A=2, n_B=7), **SMALL)
    assert len(ds2) == 7 and [name(ds2[i]['A_paths']) for i in range(7)][-1] == 'A0.png'  # A wraps around


def test_max_dataset_size(tmp_path):
    ds = UnpairedImageDataset(make_root(tmp_path, 5, 3), max_dataset_size=2, **SMALL)
    assert (ds.A_size, ds.B_size, len(ds)) == (2, 2, 2)


def test_serial_vs_random_B(tmp_path):
    root = make_root(tmp_path, n_A=6, n_B=3)
    serial = UnpairedImageDataset(root, serial_batches=True, **SMALL)
    assert [name(serial[i]['B_paths']) for i in range(6)] == ['B0.png', 'B1.png', 'B2.png'] * 2
    ds = UnpairedImageDataset(root, **SMALL)
    def Bs(seed):
        random.seed(seed); return [name(ds[i]['B_paths']) for i in range(6) for _ in range(3)]
    assert Bs(0) == Bs(0) and Bs(1) == Bs(1)
    assert Bs(0) != Bs(1)
    assert len(set(Bs(0))) == 3  # 18 draws reach all three B images


def test_seeded_items_are_reproducible(tmp_path):
    ds = UnpairedImageDataset(make_root(tmp_path), **SMALL)
    seed_everything(3); a = ds[1]
    seed_everything(3); b = ds[1]
    assert torch.equal(a['A'], b['A']) and torch.equal(a['B'], b['B']) and a['B_paths'] == b['B_paths']


def test_direction_BtoA_swaps_channel_counts(tmp_path):
    root = make_root(tmp_path)
    ab = UnpairedImageDataset(root, direction='AtoB', input_nc=1, output_nc=3, **SMALL)[0]
    ba = UnpairedImageDataset(root, direction='BtoA', input_nc=1, output_nc=3, **SMALL)[0]
    assert (ab['A'].shape[0], ab['B'].shape[0]) == (1, 3)
    assert (ba['A'].shape[0], ba['B'].shape[0]) == (3, 1)  # input_nc now belongs to B, as official
    assert name(ba['A_paths']).startswith('A') and name(ba['B_paths']).startswith('B')
    with pytest.raises(ValueError, match='AtoB'):
        UnpairedImageDataset(root, direction='A2B')


def test_grayscale_for_nc_1(tmp_path):
    it = UnpairedImageDataset(make_root(tmp_path), input_nc=1, output_nc=1, **SMALL)[0]
    assert it['A'].shape == it['B'].shape == (1, 32, 32)


def test_layout_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match='dataset root .*missing not found'):
        UnpairedImageDataset(tmp_path / 'missing')
    root = make_root(tmp_path, n_A=2, n_B=0)
    with pytest.raises(FileNotFoundError, match=r'trainB/ is empty under .*ds.*trainA/ and trainB/.*testA/ and testB/'):
        UnpairedImageDataset(root)
    (root / 'trainB').rmdir()
    with pytest.raises(FileNotFoundError, match=r'trainB/ not found under .*ds'):
        UnpairedImageDataset(root)
    with pytest.raises(FileNotFoundError, match=r'testA/ not found'):
        UnpairedImageDataset(make_root(tmp_path / 'y'), phase='test')
    with pytest.raises(FileNotFoundError, match=r'did you mean --dataroot .*ds'):
        UnpairedImageDataset(make_root(tmp_path / 'z').parent)


def test_corrupt_file_in_dataset_names_it(tmp_path):
    root = make_root(tmp_path, n_A=2, n_B=2)
    (root / 'trainA' / 'A1.png').write_bytes(b'\x89PNG\r\n\x1a\n broken')
    ds = UnpairedImageDataset(root, **SMALL)
    ds[0]
    with pytest.raises(BadImageError, match=r'A1\.png'):
        ds[1]


def test_skip_bad_images_counts_and_continues(tmp_path):
    root = make_root(tmp_path, n_A=4, n_B=3)
    (root / 'trainA' / 'A1.png').write_bytes(b'junk')
    good = (root / 'trainB' / 'B0.png').read_bytes()
    (root / 'trainB' / 'B1.png').write_bytes(good[: len(good) // 2])
    with pytest.warns(UserWarning, match=r'skipped 2 unreadable'):
        ds = UnpairedImageDataset(root, skip_bad_images=True, **SMALL)
    assert ds.n_skipped == 2 and sorted(map(name, ds.skipped_paths)) == ['A1.png', 'B1.png']
    assert (ds.A_size, ds.B_size, len(ds)) == (3, 2, 3)
    for _ in range(3):
        for i in range(len(ds)): assert ds[i]['A'].shape == (3, 32, 32)
    with pytest.warns(UserWarning, match=r'skipped 2 unreadable'):
        capped = UnpairedImageDataset(root, skip_bad_images=True, max_dataset_size=2, **SMALL)
    assert [name(p) for p in capped.A_paths] == ['A0.png', 'A2.png']  # skip first, then keep 2


# --- the loader ---------------------------------------------------------------------------------------------

def _batches(ds, seed, n=3, **kw):
    dl = create_dataloader(ds, batch_size=2, num_workers=2, seed=seed, **kw)
    out = [b for _, b in zip(range(n), dl)]
    del dl
    return out


def test_dataloader_workers_reproducible(tmp_path):
    ds = UnpairedImageDataset(make_root(tmp_path, n_A=6, n_B=4), **SMALL)
    a, b, c = _batches(ds, 0), _batches(ds, 0), _batches(ds, 1)
    for x, y in zip(a, b):
        assert torch.equal(x['A'], y['A']) and torch.equal(x['B'], y['B'])
        assert x['A_paths'] == y['A_paths'] and x['B_paths'] == y['B_paths']
    assert a[0]['A'].shape == (2, 3, 32, 32) and isinstance(a[0]['A_paths'], list)
    assert not all(torch.equal(x['A'], y['A']) for x, y in zip(a, c))


def test_dataloader_options(tmp_path):
    ds = UnpairedImageDataset(make_root(tmp_path), **SMALL)
    dl = create_dataloader(ds, num_workers=0, serial_batches=True)
    assert isinstance(dl.sampler, SequentialSampler) and dl.pin_memory == torch.cuda.is_available()
    assert [name(b['A_paths'][0]) for b in dl] == [f'A{i}.png' for i in range(5)]
    dl2 = create_dataloader(ds, num_workers=2, batch_size=2, drop_last=True)
    assert dl2.persistent_workers and not isinstance(dl2.sampler, SequentialSampler) and len(dl2) == 2


def test_show_batch(tmp_path):
    import matplotlib
    matplotlib.use('Agg')
    ds = UnpairedImageDataset(make_root(tmp_path), input_nc=1, **SMALL)
    batch = next(iter(create_dataloader(ds, batch_size=3, num_workers=0, seed=0)))
    assert len(show_batch(batch, n=2).axes) == 4
    assert len(show_batch(ds[0]).axes) == 2


# --- files that are not images: one BadImageError line naming the file --------------------------------------

def _bad_files(d):
    "Every kind of unreadable file a real folder collects, made in `d`: {file name: words the message must contain}."
    import os
    good = d / 'good.jpg'; rgb(64, 64).save(good, quality=95)
    (d / 'empty.jpg').write_bytes(b'')
    (d / 'cut.jpg').write_bytes(good.read_bytes()[:600])                       # truncated JPEG
    (d / '._photo.jpg').write_bytes(b'\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        ' + bytes(64))  # AppleDouble
    (d / 'page.jpg').write_bytes(b'<!DOCTYPE html>\n<html><head><title>404</title></head></html>')
    os.symlink(d / 'moved_away.jpg', d / 'dangling.jpg')
    os.symlink(d / 'loop.jpg', d / 'loop.jpg')
    Image.new('P', (20000, 10000)).save(d / 'bomb.png')                        # 200 million pixels in ~24 KB
    return {'empty.jpg': 'empty (0 bytes)', 'cut.jpg': 'truncated', '._photo.jpg': 'macOS metadata',
            'page.jpg': 'HTML', 'dangling.jpg': 'does not exist', 'loop.jpg': 'leads back to itself',
            'bomb.png': '200,000,000 pixels'}


@pytest.mark.skipif(not hasattr(__import__('os'), 'symlink'), reason='needs symbolic links')
def test_every_unreadable_file_is_one_bad_image_line(tmp_path):
    expected = _bad_files(tmp_path)
    assert (tmp_path / 'bomb.png').stat().st_size < 50_000
    pil_limit = Image.MAX_IMAGE_PIXELS
    for f, words in expected.items():
        with pytest.raises(BadImageError) as e:
            load_image(tmp_path / f)
        msg = str(e.value)
        assert f in msg and words in msg and '\n' not in msg, msg
        assert '--skip_bad_images' in msg and 'skip_bad_images=True' in msg
    bomb = pytest.raises(BadImageError, load_image, tmp_path / 'bomb.png').value
    assert '--max_image_pixels 200000000' in str(bomb) and 'max_image_pixels=200000000' in str(bomb)
    assert Image.MAX_IMAGE_PIXELS == pil_limit                                 # PIL's global limit is untouched


def test_a_file_deleted_after_listing_stays_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_image(tmp_path / 'gone.png')


def test_max_pixels_raises_and_lowers_the_limit_for_one_call(tmp_path, monkeypatch):
    rgb(50, 50).save(tmp_path / 'x.png')                                       # 2,500 pixels
    monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 1000)                       # PIL refuses above 2,000
    with pytest.raises(BadImageError, match=r'50×50 = 2,500 pixels, more than the limit of 2,000.*--max_image_pixels 2500'):
        load_image(tmp_path / 'x.png')
    assert load_image(tmp_path / 'x.png', max_pixels=0).size == (50, 50)       # 0: no limit
    assert load_image(tmp_path / 'x.png', max_pixels=2500).size == (50, 50)    # a higher limit, for this call only
    assert Image.MAX_IMAGE_PIXELS == 1000
    with pytest.raises(BadImageError, match='limit of 2,499'):
        load_image(tmp_path / 'x.png', max_pixels=2499)
    assert Image.MAX_IMAGE_PIXELS == 1000
    with pytest.raises(BadImageError):
        load_image(tmp_path / 'x.png')                                         # the default is PIL's limit again
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match='max_pixels'):
            load_image(tmp_path / 'x.png', max_pixels=bad)


def test_make_dataset_leaves_out_appledouble_files(tmp_path):
    rgb(8, 8).save(tmp_path / 'a.jpg')
    (tmp_path / '._a.jpg').write_bytes(b'\x00\x05\x16\x07' + bytes(60))
    (tmp_path / '__MACOSX').mkdir(); (tmp_path / '__MACOSX' / '._b.jpg').write_bytes(b'\x00\x05\x16\x07' + bytes(60))
    assert [p.name for p in make_dataset(tmp_path)] == ['a.jpg']
    assert not is_image_file('._a.jpg') and is_image_file('a.jpg')


@pytest.mark.skipif(not hasattr(__import__('os'), 'symlink'), reason='needs symbolic links')
def test_skip_bad_images_skips_every_kind(tmp_path):
    root = make_root(tmp_path, n_A=2, n_B=2)
    expected = _bad_files(root / 'trainA')                                     # plus good.jpg
    (root / 'trainA' / '._photo.jpg').unlink()                                 # make_dataset never lists it anyway
    with pytest.warns(UserWarning, match=r'skipped 6 unreadable'):
        ds = UnpairedImageDataset(root, skip_bad_images=True, **SMALL)
    assert sorted(map(name, ds.skipped_paths)) == sorted(set(expected) - {'._photo.jpg'})
    assert sorted(map(name, ds.A_paths)) == ['A0.png', 'A1.png', 'good.jpg'] and ds.n_skipped == 6
    without = UnpairedImageDataset(root, serial_batches=True, **SMALL)        # without skipping: the error names the file
    with pytest.raises(BadImageError, match=r'dangling\.jpg.*does not exist'):
        without[[name(p) for p in without.A_paths].index('dangling.jpg')]


def test_dataset_passes_max_image_pixels(tmp_path):
    root = make_root(tmp_path, n_A=2, n_B=2)                                   # 40×40 = 1,600 pixels each
    ds = UnpairedImageDataset(root, max_image_pixels=1000, **SMALL)
    with pytest.raises(BadImageError, match=r'1,600 pixels.*--max_image_pixels 1600'):
        ds[0]
    assert UnpairedImageDataset(root, max_image_pixels=1600, **SMALL)[0]['A'].shape == (3, 32, 32)
    with pytest.raises(FileNotFoundError, match=r'trainA/ under .* holds no readable image: all 2 files were skipped.*A0\.png'):
        UnpairedImageDataset(root, max_image_pixels=1000, skip_bad_images=True, **SMALL)


def test_missing_root_suggests_an_official_name(tmp_path):
    with pytest.raises(FileNotFoundError, match=r'horse2zebr not found \(did you mean horse2zebra\?\): .*--dataroot horse2zebra'):
        UnpairedImageDataset(tmp_path / 'horse2zebr')
    with pytest.raises(FileNotFoundError) as e:
        UnpairedImageDataset(tmp_path / 'my_photos')
    assert 'did you mean' not in str(e.value) and 'trainA/' in str(e.value) and '07_data' not in str(e.value)


def test_suggest_dataset():
    from cyclegan_edu.data import suggest_dataset
    assert suggest_dataset('horse2zebr') == ['horse2zebra']
    assert suggest_dataset('HORSE2ZEBRA') == ['horse2zebra']
    assert suggest_dataset('monet2photo', n=1) == ['monet2photo']
    assert suggest_dataset('vangogh') == ['vangogh2photo']
    assert suggest_dataset('cifar10') == []
    assert suggest_dataset('my_photos') != [] and suggest_dataset('my_photos', cutoff=0.8) == []
