"""Dataset readers, built on tiny fixtures in every real on-disk format."""
import io
import json
import pickle
import re
import struct
import tarfile
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import lowdiff
from lowdiff.data import (DatasetError, ImageDataset, load_cifar10, load_fashion_mnist, load_image_folder,
                          make_synthetic, open_dataset, read_idx, save_image_folder, write_idx)

FASHION_ROOT = Path("/usr/share/datasets/fashion-mnist")


# ---------------------------------------------------------------------------------------------------- IDX / Fashion

@pytest.mark.parametrize("name", ["a.idx", "a-idx3-ubyte.gz"])
def test_idx_round_trip(tmp_path, name):
    array = np.random.default_rng(0).integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    write_idx(tmp_path / name, array)
    raw = (tmp_path / name).read_bytes()
    assert raw[:2] == (b"\x1f\x8b" if name.endswith(".gz") else b"\x00\x00")
    out = read_idx(tmp_path / name)
    assert out.dtype == np.uint8 and np.array_equal(out, array)


def test_idx_errors(tmp_path):
    (tmp_path / "float.idx").write_bytes(struct.pack(">BBBBI", 0, 0, 0x0D, 1, 1) + b"\0\0\0\0")
    with pytest.raises(DatasetError, match="0x0d"):
        read_idx(tmp_path / "float.idx")
    write_idx(tmp_path / "short.idx", np.zeros((4, 4), np.uint8))
    (tmp_path / "short.idx").write_bytes((tmp_path / "short.idx").read_bytes()[:-3])
    with pytest.raises(DatasetError, match="short.idx.*truncated"):
        read_idx(tmp_path / "short.idx")
    with pytest.raises(DatasetError, match="missing.idx"):
        read_idx(tmp_path / "missing.idx")


def make_fake_fashion(root: Path, n: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Four Fashion-MNIST files with n random 28x28 images (nonzero pixels) per split."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    images = rng.integers(1, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)
    for prefix in ("train", "t10k"):
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return images, labels


def test_fashion_loader_pads_to_32(tmp_path):
    images, labels = make_fake_fashion(tmp_path / "fm")
    ds = load_fashion_mnist(tmp_path / "fm", split="test")
    assert ds.images.shape == (20, 1, 32, 32) and (ds.resolution, ds.channels, ds.num_classes) == (32, 1, 10)
    assert np.array_equal(ds.images[:, 0, 2:30, 2:30], images)
    border = np.ones((32, 32), bool)
    border[2:30, 2:30] = False
    assert (ds.images[:, 0][:, border] == 0).all()
    assert np.array_equal(ds.labels, labels) and ds.labels.dtype == np.int64
    assert ds.class_names[0] == "T-shirt/top" and ds.class_names[9] == "Ankle boot"
    img, label = ds[3]
    assert isinstance(img, torch.Tensor) and img.dtype == torch.uint8 and img.shape == (1, 32, 32) and label == 3
    assert load_fashion_mnist(tmp_path / "fm", pad_to=None).resolution == 28


def test_fashion_missing_dir_message(tmp_path):
    with pytest.raises(DatasetError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path / "nowhere")


def test_idx_spec_finds_sibling_labels(tmp_path):
    images, labels = make_fake_fashion(tmp_path)
    ds = open_dataset(str(tmp_path / "train-images-idx3-ubyte.gz"))
    assert ds.images.shape == (20, 1, 28, 28) and np.array_equal(ds.labels, labels)
    assert open_dataset(str(tmp_path / "train-images-idx3-ubyte.gz"), pad_to=32).resolution == 32


@pytest.mark.skipif(not FASHION_ROOT.is_dir(), reason="Debian package dataset-fashion-mnist not installed")
def test_real_fashion_mnist():
    ds = open_dataset("fashion-mnist")
    assert ds.images.shape == (60000, 1, 32, 32)
    assert (np.bincount(ds.labels) == 6000).all()


# ---------------------------------------------------------------------------------------------------- CIFAR-10

def cifar_batch(data: np.ndarray, labels: list[int], protocol: int = 2) -> bytes:
    """A batch file as the Python 3 CIFAR tools would write it."""
    return pickle.dumps({b"batch_label": b"batch", b"labels": labels, b"data": data,
                         b"filenames": [f"img{i}.png".encode() for i in range(len(labels))]}, protocol=protocol)


def py2_cifar_batch(data: np.ndarray, labels: list[int]) -> bytes:
    """A batch file in the byte layout of the official (Python 2 cPickle) release: str keys, BINSTRING data."""
    raw = data.tobytes()
    return b"".join([
        b"\x80\x02}q\x01(U\x04dataq\x02cnumpy.core.multiarray\n_reconstruct\nq\x03cnumpy\nndarray\nq\x04",
        b"K\x00\x85U\x01b\x87Rq\x05(K\x01M", struct.pack("<H", len(data)), b"M\x00\x0c\x86",
        b"cnumpy\ndtype\nq\x06U\x02u1K\x00K\x01\x87Rq\x07(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb",
        b"\x89T", struct.pack("<I", len(raw)), raw, b"tb",
        b"U\x06labelsq\x08]q\x09(", b"".join(b"K" + bytes([v]) for v in labels), b"eu."])


def make_fake_cifar(root: Path, per_batch: int = 4, protocol: int = 2, batch_fn=None) -> tuple[dict, Path]:
    """A tiny cifar-10-python.tar.gz; returns ({batch: (data, labels)}, archive path)."""
    rng = np.random.default_rng(2)
    batches = {}
    files = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=per_batch)]
        batches[name] = (data, labels)
        files[name] = batch_fn(data, labels) if batch_fn else cifar_batch(data, labels, protocol)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    files["batches.meta"] = pickle.dumps({b"num_cases_per_batch": per_batch, b"label_names": names,
                                          b"num_vis": 3072}, protocol=protocol)
    archive = root / "cifar-10-python.tar.gz"
    write_tar(archive, files)
    return batches, archive


def write_tar(archive: Path, files: dict[str, bytes]) -> None:
    """Write files under cifar-10-batches-py/ in a gzipped tar."""
    with tarfile.open(archive, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def check_cifar(ds: ImageDataset, batches: dict, names: list[str]) -> None:
    data = np.concatenate([batches[n][0] for n in names])
    labels = np.concatenate([batches[n][1] for n in names])
    assert ds.images.shape == (len(data), 3, 32, 32)
    assert np.array_equal(ds.images.reshape(len(data), -1), data)
    assert np.array_equal(ds.labels, labels)
    assert ds.num_classes == 10 and ds.class_names[1] == "automobile"


@pytest.mark.parametrize("protocol", [2, 4])
def test_cifar_archive_round_trip(tmp_path, protocol):
    batches, archive = make_fake_cifar(tmp_path, protocol=protocol)
    check_cifar(load_cifar10(archive), batches, [f"data_batch_{i}" for i in range(1, 6)])
    check_cifar(load_cifar10(archive, split="test"), batches, ["test_batch"])


def test_cifar_python2_layout_and_extracted_dir(tmp_path):
    batches, archive = make_fake_cifar(tmp_path, batch_fn=py2_cifar_batch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = pickle.loads(py2_cifar_batch(*batches["test_batch"]), encoding="latin1")
    assert np.array_equal(reference["data"], batches["test_batch"][0])
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path, filter="data")
    ds = open_dataset(str(tmp_path / "cifar-10-batches-py"), split="test")
    check_cifar(ds, batches, ["test_batch"])
    check_cifar(open_dataset(str(archive)), batches, [f"data_batch_{i}" for i in range(1, 6)])


def test_cifar_corrupt_batches(tmp_path):
    batches, archive = make_fake_cifar(tmp_path)
    data, labels = batches["test_batch"]
    broken = {"truncated": cifar_batch(data, labels)[:5000], "count mismatch": cifar_batch(data, labels + [1]),
              "garbage": b"\x80\x02not a pickle at all"}
    for expected, payload in broken.items():
        write_tar(archive, {"test_batch": payload})
        with pytest.raises(DatasetError, match="test_batch"):
            load_cifar10(archive, split="test")
    with pytest.raises(DatasetError, match="data_batch_1"):
        load_cifar10(archive)
    with pytest.raises(DatasetError, match="cifar-10-python.tar.gz"):
        load_cifar10(tmp_path / "absent.tar.gz")


def test_package_never_unpickles():
    for module in Path(lowdiff.__file__).parent.rglob("*.py"):           # the CIFAR reader and everything else
        source = module.read_text()
        assert not re.search(r"^\s*(import pickle\b|from pickle\b)", source, re.M), module
        assert "pickle.load" not in source and "__import__" not in source, module


# ---------------------------------------------------------------------------------------------------- image folders

def write_png(path: Path, array: np.ndarray, mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path)


def test_image_folder_dir_and_zip_with_labels(tmp_path):
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, size=(3, 8, 8, 3), dtype=np.uint8)
    root = tmp_path / "imgs"
    rels = ["b/x.png", "a.png", "b/a.png"]
    for rel, img in zip(rels, rgb):
        write_png(root / rel, img)
    (root / "dataset.json").write_text(json.dumps({"labels": [[r, i] for i, r in enumerate(rels)]}))
    ds = load_image_folder(root)
    assert ds.images.shape == (3, 3, 8, 8) and ds.name == "imgs"
    order = sorted(range(3), key=lambda i: rels[i])
    assert np.array_equal(ds.images, rgb[order].transpose(0, 3, 1, 2))
    assert ds.labels.tolist() == order and ds.num_classes == 3
    assert load_image_folder(root, use_labels=False).labels is None

    archive = tmp_path / "imgs.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in root.rglob("*"):
            if p.is_file():
                zf.write(p, p.relative_to(root).as_posix())
    dz = open_dataset(str(archive))
    assert dz.name == "imgs" and np.array_equal(dz.images, ds.images) and np.array_equal(dz.labels, ds.labels)


def test_image_folder_modes(tmp_path):
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8)
    write_png(tmp_path / "g/0.png", gray)
    write_png(tmp_path / "g/1.png", gray[::-1].copy())
    ds = load_image_folder(tmp_path / "g")
    assert ds.channels == 1 and ds.labels is None and ds.num_classes == 0 and ds[0][1] == -1
    assert np.array_equal(ds.images[0, 0], gray)

    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:2, :, 3] = 255
    write_png(tmp_path / "c/0.png", rgba)
    palette = Image.fromarray(np.full((4, 4, 3), 7, np.uint8)).convert("P", palette=Image.Palette.ADAPTIVE)
    palette.save(tmp_path / "c/1.png")
    dc = load_image_folder(tmp_path / "c")
    assert dc.channels == 3
    assert dc.images[0, :, 0, 0].tolist() == [200, 0, 0] and dc.images[0, :, 3, 0].tolist() == [255, 255, 255]
    assert dc.images[1, :, 0, 0].tolist() == [7, 7, 7]


def test_image_folder_errors(tmp_path):
    def folder(name: str, files: dict) -> Path:
        for rel, content in files.items():
            (tmp_path / name / rel).parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                (tmp_path / name / rel).write_bytes(content)
            else:
                write_png(tmp_path / name / rel, content)
        return tmp_path / name

    g8, g4 = np.zeros((8, 8), np.uint8), np.zeros((4, 4), np.uint8)
    with pytest.raises(DatasetError, match=r"b\.png.*4x4.*a\.png is 8x8"):
        load_image_folder(folder("sizes", {"a.png": g8, "b.png": g4}))
    with pytest.raises(DatasetError, match=r"bad\.png"):
        load_image_folder(folder("corrupt", {"a.png": g8, "bad.png": b"\x89PNG\r\n\x1a\nthis is not a png"}))
    with pytest.raises(DatasetError, match=r"b\.png.*3 channel"):
        load_image_folder(folder("chan", {"a.png": g8, "b.png": np.zeros((8, 8, 3), np.uint8)}))
    with pytest.raises(DatasetError, match="square"):
        load_image_folder(folder("rect", {"a.png": np.zeros((8, 6), np.uint8)}))
    with pytest.raises(DatasetError, match="no images"):
        load_image_folder(folder("empty", {"notes.txt": b"hi"}))
    with pytest.raises(DatasetError, match="does not exist"):
        load_image_folder(tmp_path / "absent")

    labelled = folder("labels", {"a.png": g8, "b.png": g8})
    for labels, pattern in [([["a.png", 0]], r"label mismatch.*b\.png"),
                            ([["a.png", 0], ["b.png", 1], ["c.png", 2]], r"label mismatch.*c\.png"),
                            ([["a.png", 0], ["b.png", 1.5]], "not a non-negative integer")]:
        (labelled / "dataset.json").write_text(json.dumps({"labels": labels}))
        with pytest.raises(DatasetError, match=pattern):
            load_image_folder(labelled)
    (labelled / "dataset.json").write_text(json.dumps({"labels": None}))
    assert load_image_folder(labelled).labels is None


@pytest.mark.parametrize("target", ["out", "out.zip"])
def test_save_then_load_round_trip(tmp_path, target):
    ds = make_synthetic(num=12, resolution=8, channels=3, num_classes=4)
    save_image_folder(ds, tmp_path / target)
    if target.endswith(".zip"):
        with zipfile.ZipFile(tmp_path / target) as zf:
            assert "00000/img00000011.png" in zf.namelist()
            assert all(info.compress_type == zipfile.ZIP_STORED for info in zf.infolist())
    back = load_image_folder(tmp_path / target)
    assert np.array_equal(back.images, ds.images) and np.array_equal(back.labels, ds.labels)
    assert back.class_names == ds.class_names


# ---------------------------------------------------------------------------------------------- synthetic / dispatch

def test_synthetic_is_deterministic():
    a, b = make_synthetic(num=20, seed=5), make_synthetic(num=20, seed=5)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.images, make_synthetic(num=20, seed=6).images)
    assert a.labels.tolist() == [i % 10 for i in range(20)] and a.images.shape == (20, 1, 32, 32)
    assert make_synthetic(num=4, channels=3, num_classes=0).labels is None


def test_open_dataset_dispatch(tmp_path):
    assert len(open_dataset("synthetic")) == 256
    ds = open_dataset("synthetic:10:16")
    assert (len(ds), ds.resolution) == (10, 16)
    assert open_dataset("synthetic:10:16", pad_to=20).resolution == 20
    save_image_folder(make_synthetic(num=3, resolution=8), tmp_path / "folder")
    assert len(open_dataset(str(tmp_path / "folder"))) == 3
    with pytest.raises(DatasetError, match="accepted dataset specs"):
        open_dataset("imagenet")
    with pytest.raises(DatasetError, match="bad synthetic"):
        open_dataset("synthetic:many")
