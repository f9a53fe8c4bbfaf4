"Export to TorchScript and ONNX: both formats match the eager generator, at sizes not used at export time."
import sys

import numpy as np
import pytest
import torch

pytest.importorskip('onnx', reason="ONNX export needs the export extras: pip install 'cyclegan_edu[export]'")
pytest.importorskip('onnxscript', reason="ONNX export needs the export extras: pip install 'cyclegan_edu[export]'")
ort = pytest.importorskip('onnxruntime', reason="checking ONNX files needs onnxruntime: pip install 'cyclegan_edu[export]'")

pytestmark = pytest.mark.filterwarnings(r"ignore:`torch\.jit\.load` is deprecated:FutureWarning")

from cyclegan_edu.core import seed_everything
from cyclegan_edu.export import check_export, export_onnx, export_torchscript
from cyclegan_edu.generator import ResnetGenerator


@pytest.fixture(scope='module')
def G():
    seed_everything(0)
    return ResnetGenerator(input_nc=3, output_nc=3, ngf=4, n_blocks=1).eval()


@pytest.fixture(scope='module')
def files(G, tmp_path_factory):
    d = tmp_path_factory.mktemp('export')
    return {'ts': export_torchscript(G, d / 'G.pt', example_size=(32, 32)),
            'onnx': export_onnx(G, d / 'G.onnx', example_size=(32, 32))}


def _eager(G, x):
    with torch.no_grad(): return G(x)


@pytest.mark.parametrize('fmt', ['ts', 'onnx'])
def test_two_sizes_within_tolerance(G, files, fmt):
    res = check_export(G, files[fmt], sizes=((1, 3, 32, 32), (2, 3, 48, 64)), atol=1e-4)
    assert res['format'] == {'ts': 'torchscript', 'onnx': 'onnx'}[fmt]
    assert set(res['max_abs_diff']) == {'1×3×32×32', '2×3×48×64'}
    assert all(0 <= v < 1e-4 for v in res['max_abs_diff'].values()), res


def test_onnx_axes_are_dynamic(G, files):
    "Batch, height and width differ from the 1×3×32×32 export example, and from each other."
    sess = ort.InferenceSession(str(files['onnx']), providers=['CPUExecutionProvider'])
    dims = [d.dim_param or d.dim_value for d in __import__('onnx').load(str(files['onnx'])).graph.input[0].type.tensor_type.shape.dim]
    assert dims == ['batch', 3, 'height', 'width']
    x = torch.rand(3, 3, 40, 56) * 2 - 1
    out = sess.run(None, {'input': x.numpy()})[0]
    assert out.shape == (3, 3, 40, 56)
    assert np.abs(out - _eager(G, x).numpy()).max() < 1e-4


def test_torchscript_runs_at_other_sizes(G, files):
    ts = torch.jit.load(str(files['ts']))
    x = torch.rand(3, 3, 40, 56) * 2 - 1
    with torch.no_grad(): assert (ts(x) - _eager(G, x)).abs().max() < 1e-4


def test_onnx_is_one_file_with_metadata(files):
    import onnx
    assert not list(files['onnx'].parent.glob('*.data'))
    meta = {p.key: p.value for p in onnx.load(str(files['onnx'])).metadata_props}
    assert '[-1, 1]' in meta['cyclegan_edu.input'] and 'multiples of 4' in meta['cyclegan_edu.size_rule']


def test_size_not_multiple_of_4(G, files):
    "Eager G refuses 30×34; the exported graphs round each side up to a multiple of 4 (32×36), as documented."
    x = torch.rand(1, 3, 30, 34) * 2 - 1
    with pytest.raises(ValueError, match='divisible by 4'): _eager(G, x)
    sess = ort.InferenceSession(str(files['onnx']), providers=['CPUExecutionProvider'])
    assert sess.run(None, {'input': x.numpy()})[0].shape == (1, 3, 32, 36)
    with torch.no_grad(): assert torch.jit.load(str(files['ts']))(x).shape == (1, 3, 32, 36)
    with pytest.raises(ValueError, match='multiples of 4'): check_export(G, files['onnx'], sizes=((1, 3, 30, 34),))
    with pytest.raises(ValueError, match='multiples of 4'): export_onnx(G, files['onnx'].parent / 'x.onnx', example_size=(30, 32))
    with pytest.raises(ValueError, match='multiples of 4'): export_torchscript(G, files['ts'].parent / 'x.pt', example_size=(4, 4))


def test_check_export_catches_a_changed_weight(G, files):
    import copy
    G2 = copy.deepcopy(G)
    with torch.no_grad(): G2.model[-2].bias[0] += 0.01
    for f in files.values():
        with pytest.raises(AssertionError, match='differs from the eager generator'): check_export(G2, f)


def test_static_export_fails_check_at_other_size(G, tmp_path):
    f = export_onnx(G, tmp_path / 'static.onnx', dynamic=False, example_size=(32, 32))
    assert check_export(G, f, sizes=((1, 3, 32, 32),))['max_abs_diff']['1×3×32×32'] < 1e-4
    with pytest.raises(AssertionError, match='dynamic=False'): check_export(G, f, sizes=((2, 3, 32, 32),))


def test_export_leaves_G_alone(files):
    "Exporting a generator in training mode exports eval mode and does not switch the caller's G."
    seed_everything(1)
    G = ResnetGenerator(3, 3, ngf=4, n_blocks=1, use_dropout=True).train()
    f = export_torchscript(G, files['ts'].parent / 'drop.pt', example_size=(32, 32))
    assert G.training and all(p.requires_grad for p in G.parameters())
    ts = torch.jit.load(str(f)); x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad(): assert torch.equal(ts(x), ts(x))          # dropout off: deterministic
    assert check_export(G, f, sizes=((1, 3, 32, 32),))['max_abs_diff']['1×3×32×32'] < 1e-4


def test_errors(G, files, monkeypatch):
    with pytest.raises(FileNotFoundError, match='export it first'): check_export(G, files['onnx'].parent / 'missing.onnx')
    monkeypatch.setitem(sys.modules, 'onnxscript', None)              # as if it were not installed
    with pytest.raises(ImportError, match=r"pip install 'cyclegan_edu\[export\]'"):
        export_onnx(G, files['onnx'].parent / 'y.onnx', example_size=(32, 32))
