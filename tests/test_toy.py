"Tests of the built-in toy task (cyclegan_edu.toy): determinism, splits, sizes, files on disk, metrics."
import random

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from cyclegan_edu.core import pil_to_tensor
from cyclegan_edu.toy import (ToyDataset, format_metrics, ground_truth_metrics, psnr, random_scene, render_scene,
                              toy_pairs, toy_scene, write_toy_dataset)


def test_random_scene_is_deterministic_by_seed():
    assert random_scene(3) == random_scene(3) == random_scene(np.random.default_rng(3))
    assert random_scene(3) != random_scene(4)
    for style in ('day', 'night'):
        assert torch.equal(render_scene(random_scene(3), style, 32), render_scene(random_scene(3), style, 32))


def test_day_and_night_of_one_scene_belong_together():
    A, B = toy_pairs(32, 32)
    assert all(not torch.equal(A[0], A[i]) and not torch.equal(B[0], B[i]) for i in range(1, 32))
    assert (psnr(A, B) < 10).all()                                 # night is far from day, pixel by pixel
    # but the layout is shared: where blue exceeds green (sky, lake) in the day image it still does at night,
    # so each night image correlates best with the day image of its own scene
    layout = lambda x: (x[:, 2] - x[:, 1]).flatten(1)
    a, b = layout(A), layout(B)
    a = (a - a.mean(1, keepdim=True)) / a.std(1, keepdim=True)
    b = (b - b.mean(1, keepdim=True)) / b.std(1, keepdim=True)
    corr = a @ b.T / a.shape[1]                                    # (32 day, 32 night)
    assert torch.equal(corr.argmax(0), torch.arange(32))


def test_train_streams_are_disjoint_and_seeded():
    key = repr
    A = {key(toy_scene('trainA', i)) for i in range(300)}
    B = {key(toy_scene('trainB', i)) for i in range(300)}
    T = {key(toy_scene('test', i)) for i in range(300)}
    assert len(A) == len(B) == len(T) == 300
    assert not A & B and not T & (A | B)
    assert toy_scene('trainA', 5, seed=1) != toy_scene('trainA', 5, seed=0)
    with pytest.raises(ValueError, match='expected one of'):
        toy_scene('val', 0)


def test_dataset_items_and_pairing():
    ds = ToyDataset(n=20, size=16)
    random.seed(1)
    item = ds[7]
    assert set(item) == {'A', 'B', 'A_paths', 'B_paths'} and len(ds) == 20
    assert item['A'].shape == item['B'].shape == (3, 16, 16) and item['A'].dtype == torch.float32
    assert item['A_paths'] == 'toy://train/A/7' and item['B_paths'].startswith('toy://train/B/')
    random.seed(1)
    assert ds[7]['B_paths'] == item['B_paths']                    # B drawn with python's random
    assert torch.equal(item['A'], render_scene(toy_scene('trainA', 7), 'day', 16))
    j = int(item['B_paths'].rsplit('/', 1)[1])
    assert torch.equal(item['B'], render_scene(toy_scene('trainB', j), 'night', 16))
    assert ToyDataset(n=20, size=16, serial_batches=True)[7]['B_paths'] == 'toy://train/B/7'
    # the test phase is paired and equals toy_pairs
    test = ToyDataset(n=4, size=16, seed=9, phase='test')
    A, B = toy_pairs(4, 16, seed=9)
    for i in range(4):
        assert torch.equal(test[i]['A'], A[i]) and torch.equal(test[i]['B'], B[i])
        assert test[i]['A_paths'] == f'toy://test/A/{i}' and test[i]['B_paths'] == f'toy://test/B/{i}'
    with pytest.raises(ValueError, match="expected 'train'"):
        ToyDataset(phase='val')


@pytest.mark.parametrize('size', [4, 16, 32, 64, 128])
def test_sizes(size):
    x = render_scene(random_scene(0), 'night', size)
    assert x.shape == (3, size, size) and x.min() >= -1 and x.max() <= 1
    A, B = toy_pairs(2, size)
    assert A.shape == B.shape == (2, 3, size, size)


@pytest.mark.parametrize('size', [30, 33, 0, -8, 2])
def test_size_not_multiple_of_4_is_refused(size):
    with pytest.raises(ValueError, match='multiple of 4'):
        render_scene(random_scene(0), 'day', size)
    with pytest.raises(ValueError, match='multiple of 4'):
        ToyDataset(size=size)
    with pytest.raises(ValueError, match='multiple of 4'):
        toy_pairs(2, size)


def test_bad_style_is_refused():
    with pytest.raises(ValueError, match="'day'"):
        render_scene(random_scene(0), 'dusk', 32)


def test_write_toy_dataset_layout_and_overwrite(tmp_path):
    root = write_toy_dataset(tmp_path / 'toy', n_train=5, n_test=3, size=16, seed=2)
    names = {sub: sorted(p.name for p in (root / sub).iterdir()) for sub in ('trainA', 'trainB', 'testA', 'testB')}
    assert names['trainA'] == names['trainB'] == [f'{i:04d}.png' for i in range(5)]
    assert names['testA'] == names['testB'] == ['0000.png', '0001.png', '0002.png']
    A, B = toy_pairs(3, 16, seed=2)
    for i in range(3):  # paired test files: same name = same scene (8-bit rounding only)
        assert (pil_to_tensor(Image.open(root / 'testA' / f'000{i}.png')) - A[i]).abs().max() <= 1 / 255 + 1e-6
        assert (pil_to_tensor(Image.open(root / 'testB' / f'000{i}.png')) - B[i]).abs().max() <= 1 / 255 + 1e-6
    assert Image.open(root / 'trainA' / '0000.png').size == (16, 16)
    with pytest.raises(FileExistsError, match='overwrite=True'):
        write_toy_dataset(root, n_train=2, n_test=1, size=16)
    assert len(list((root / 'trainA').iterdir())) == 5           # refused: nothing touched
    (root / 'notes.txt').write_text('keep me')
    write_toy_dataset(root, n_train=2, n_test=1, size=16, overwrite=True)
    assert len(list((root / 'trainA').iterdir())) == 2 and (root / 'notes.txt').exists()
    with pytest.raises(ValueError, match='multiple of 4'):
        write_toy_dataset(tmp_path / 'other', size=30)


def test_psnr():
    black, grey = -torch.ones(3, 4, 4), torch.zeros(3, 4, 4)
    assert psnr(black, grey).item() == pytest.approx(10 * np.log10(4), abs=1e-5)
    assert psnr(grey, grey).item() == float('inf')
    assert psnr(torch.stack([black, grey]), torch.stack([grey, grey])).shape == (2,)
    with pytest.raises(ValueError, match='same shape'):
        psnr(black, grey[:, :2])


class _Oracle(nn.Module):
    "Returns the true translation of each input by looking it up among the known pairs."
    def __init__(self, src, dst):
        super().__init__()
        self.src, self.dst, self.conv = src, dst, nn.Conv2d(1, 1, 1)  # a parameter, so the device is inferred
    def forward(self, x):
        return self.dst[[int((self.src - xi).abs().flatten(1).amax(1).argmin()) for xi in x]]


def test_ground_truth_metrics_identity_vs_oracle():
    A, B = toy_pairs(16, 16)
    m_id = ground_truth_metrics(nn.Identity(), nn.Identity(), n=16, size=16, batch_size=5)
    m_or = ground_truth_metrics(_Oracle(A, B), _Oracle(B, A), n=16, size=16, batch_size=5)
    assert set(m_id) == {'AtoB_psnr', 'AtoB_l1', 'BtoA_psnr', 'BtoA_l1', 'identity_psnr', 'identity_l1'}
    assert 5 < m_id['identity_psnr'] < 9 and 0.3 < m_id['identity_l1'] < 0.5  # far from the identity
    assert m_id['AtoB_psnr'] == m_id['BtoA_psnr'] == m_id['identity_psnr']
    assert m_or['AtoB_psnr'] == m_or['BtoA_psnr'] == float('inf') and m_or['AtoB_l1'] == 0
    assert m_or['identity_psnr'] == m_id['identity_psnr']
    # a half-way "generator" (the mean of day and truth) sits in between
    half = _Oracle(A, (A + B) / 2)
    m_half = ground_truth_metrics(half, None, n=16, size=16)
    assert m_id['AtoB_psnr'] + 5 < m_half['AtoB_psnr'] < float('inf') and 'BtoA_psnr' not in m_half
    table = format_metrics(m_or)
    assert 'inf' in table and 'identity' in table and len(table.splitlines()) == 4


def test_ground_truth_metrics_restores_training_modes():
    G_A = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.Dropout(0.5), nn.Tanh()).train()
    G_A[1].eval()                                                   # a mixed state must survive too
    G_B = nn.Sequential(nn.Conv2d(3, 3, 1), nn.InstanceNorm2d(3)).eval()
    before = [m.training for G in (G_A, G_B) for m in G.modules()]
    seen = []
    G_A.register_forward_pre_hook(lambda m, x: seen.append((m.training, torch.is_inference_mode_enabled())))
    ground_truth_metrics(G_A, G_B, n=3, size=16, device='cpu', batch_size=2)
    assert seen == [(False, True), (False, True)]                  # eval() and inference mode, 2 batches
    assert [m.training for G in (G_A, G_B) for m in G.modules()] == before
