import json

import numpy as np
import pytest
import torch

from lowdiff.data import make_synthetic
from lowdiff.eval.classifier import (ClassifierError, ImageClassifier, _augment, load_classifier, num_parameters,
                                     train_classifier)
from lowdiff.eval.features import ClassifierFeatures, FeatureExtractor, InceptionFeatures, extract


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("classifier")
    meta = train_classifier(out, epochs=1, batch=8, lr=3e-3, seed=0, width=16, progress=False,
                            train=make_synthetic(512, seed=0), test=make_synthetic(100, seed=1))
    return out, meta


def test_train_writes_files_and_metadata(trained):
    out, meta = trained
    assert (out / "classifier.safetensors").is_file() and (out / "classifier.json").is_file()
    on_disk = json.loads((out / "classifier.json").read_text())
    assert on_disk == meta
    for key in ("arch", "test_accuracy", "epochs", "seed", "feature_dim", "train_seconds"):
        assert key in meta
    assert meta["epochs"] == 1 and meta["seed"] == 0 and meta["feature_dim"] == 64
    assert meta["arch"]["width"] == 16 and meta["train_seconds"] > 0
    assert meta["test_accuracy"] >= 0.5, meta      # 10 synthetic classes: chance is 0.1


def test_load_round_trip_identical_logits(trained):
    out, _ = trained
    model = load_classifier(out)
    assert not model.training
    images = torch.from_numpy(make_synthetic(24, seed=5).images)
    again = load_classifier(out)
    with torch.inference_mode():
        assert torch.equal(model(images), again(images))
    feats, logits = model.features_and_logits(images)
    assert feats.shape == (24, 64) and feats.dtype == torch.float32 and logits.shape == (24, 10)
    assert (feats >= 0).all()                      # after ReLU + average pool


def test_deterministic_training(tmp_path):
    kw = dict(epochs=1, batch=16, seed=3, width=8, progress=False,
              train=make_synthetic(48, seed=0), test=make_synthetic(10, seed=1))
    before = torch.are_deterministic_algorithms_enabled()
    rng = torch.get_rng_state()
    train_classifier(tmp_path / "a", **kw)
    train_classifier(tmp_path / "b", **kw)
    assert torch.are_deterministic_algorithms_enabled() == before
    assert torch.equal(torch.get_rng_state(), rng)          # the global RNG is left untouched
    a, b = load_classifier(tmp_path / "a"), load_classifier(tmp_path / "b")
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb), ka
    train_classifier(tmp_path / "c", **{**kw, "seed": 4})
    c = load_classifier(tmp_path / "c")
    assert not torch.equal(a.fc.weight, c.fc.weight)


def test_model_size_and_inputs():
    model = ImageClassifier().eval()
    assert 100_000 <= num_parameters(model) <= 300_000 and model.feature_dim == 128
    gray = torch.randint(0, 256, (3, 1, 32, 32), dtype=torch.uint8)
    with torch.inference_mode():
        assert model(gray).shape == (3, 10)
        assert torch.allclose(model(gray.expand(3, 3, 32, 32)), model(gray), atol=1e-4)
    with pytest.raises(ValueError, match="pad"):
        model(torch.zeros(2, 1, 28, 28, dtype=torch.uint8))


def test_augment_flip_and_shift():
    images = torch.arange(2 * 32 * 32, dtype=torch.int64).view(2, 1, 32, 32).to(torch.uint8)
    out = _augment(images, torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.dtype == torch.uint8
    assert torch.equal(out, _augment(images, torch.Generator().manual_seed(0)))
    # every output is the input, maybe mirrored, shifted by at most 2 px with zero fill
    for img, res in zip(images, out):
        candidates = []
        for src in (img, img.flip(-1)):
            padded = torch.nn.functional.pad(src, (2, 2, 2, 2))
            candidates += [padded[:, dy:dy + 32, dx:dx + 32] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(res, c) for c in candidates)


def test_extract_batching_equals_one_shot(trained):
    out, _ = trained
    ext = ClassifierFeatures(load_classifier(out))
    assert isinstance(ext, FeatureExtractor) and ext.name == "classifier" and ext.feature_dim == 64
    images = make_synthetic(37, seed=7).images
    f1, l1 = extract(ext, images, batch=37)
    f2, l2 = extract(ext, torch.from_numpy(images), batch=8)
    assert f1.dtype == np.float64 and f1.shape == (37, 64) and l1.shape == (37, 10)
    np.testing.assert_allclose(f1, f2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(l1, l2, rtol=1e-5, atol=1e-5)


def test_inception_wrapper_generic_module():
    class Fake(torch.nn.Module):
        feature_dim = 5

        def forward(self, x):
            f = x.float().mean((2, 3)).repeat(1, 5)[:, :5]
            return f, None

    ext = InceptionFeatures(Fake())
    assert ext.name == "inception" and ext.feature_dim == 5
    feats, logits = extract(ext, np.zeros((9, 1, 8, 8), np.uint8), batch=4)
    assert feats.shape == (9, 5) and logits is None


def test_missing_and_corrupt_directory(tmp_path, trained):
    with pytest.raises(ClassifierError, match="lowdiff eval train-classifier"):
        load_classifier(tmp_path / "nowhere")
    out, _ = trained
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "classifier.json").write_text((out / "classifier.json").read_text())
    (bad / "classifier.safetensors").write_bytes((out / "classifier.safetensors").read_bytes()[:100])
    with pytest.raises(ClassifierError, match="lowdiff eval train-classifier"):
        load_classifier(bad)
    (bad / "classifier.json").write_text("{not json")
    with pytest.raises(ClassifierError, match="corrupt"):
        load_classifier(bad)


def test_default_classifier_is_the_bundled_one_unless_the_user_has_their_own(tmp_path, monkeypatch):
    from lowdiff.eval import classifier as C
    monkeypatch.delenv("LOWDIFF_CLASSIFIER", raising=False)
    monkeypatch.setattr(C, "DEFAULT_CLASSIFIER_DIR", tmp_path / "cache")
    assert C.default_classifier_dir() == C.BUNDLED_CLASSIFIER_DIR
    bundled = load_classifier()                                        # the docs' feature space, offline
    meta = json.loads((C.BUNDLED_CLASSIFIER_DIR / "classifier.json").read_text())
    assert meta["test_accuracy"] > 0.91 and bundled.feature_dim == 128
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "classifier.safetensors").write_bytes(b"")
    assert C.default_classifier_dir() == tmp_path / "cache"             # one the user trained wins
    monkeypatch.setenv("LOWDIFF_CLASSIFIER", str(tmp_path / "env"))
    assert C.default_classifier_dir() == tmp_path / "env"


def test_the_default_feature_space_follows_the_images_and_the_reference(tmp_path, monkeypatch, capsys):
    """RGB data get the bundled CIFAR-10 classifier and gray data the Fashion-MNIST one; an FID
    against a reference uses the classifier that made it, whatever the images' channels."""
    from helpers import run
    from lowdiff.data import ImageDataset, save_image_folder
    from lowdiff.eval import classifier as C
    monkeypatch.delenv("LOWDIFF_CLASSIFIER", raising=False)
    monkeypatch.setattr(C, "CACHE", tmp_path / "cache")
    monkeypatch.setattr(C, "DEFAULT_CLASSIFIER_DIR", tmp_path / "cache" / "fashion-classifier")
    assert C.default_classifier_dir(3) == C.bundled.ASSETS / "cifar-classifier"
    rgb = load_classifier(channels=3)
    meta = json.loads((C.bundled.ASSETS / "cifar-classifier" / "classifier.json").read_text())
    assert rgb.in_channels == 3 and rgb.arch()["name"] == "cifar-cnn-v1" and meta["test_accuracy"] >= 0.80
    images = np.random.default_rng(0).integers(0, 256, (12, 3, 32, 32), dtype=np.uint8)
    save_image_folder(ImageDataset(images, None, "rgb"), tmp_path / "rgb.zip")
    code, out, err = run(capsys, "eval", "ref", "--data", tmp_path / "rgb.zip", "--out", tmp_path / "rgb.npz",
                         "--no-progress")
    assert code == 0 and "cifar-cnn-v1 (3-channel" in err, err
    assert int(np.load(tmp_path / "rgb.npz")["feature_dim"]) == rgb.feature_dim
    code, out, err = run(capsys, "eval", "fid", "--stats", tmp_path / "rgb.npz", "--ref", tmp_path / "rgb.npz")
    assert code == 0
    gray = ImageDataset(images[:, :1].copy(), None, "gray")
    save_image_folder(gray, tmp_path / "gray")
    code, out, err = run(capsys, "eval", "fid", "--images", tmp_path / "gray", "--ref", tmp_path / "rgb.npz",
                         "--no-progress")
    assert code == 2 and "RGB images, these are 32x32 grayscale" in err, err   # another kind of image: refused
