"""Tests for hesig.data.

MNIST / Fashion-MNIST / CIFAR-10 tests need the shared data root named by ``HESIG_DATA`` (for
example ``HESIG_DATA=../shared/data``); they are skipped when it is unset or lacks the files. The
root is never written to: the user cache (``XDG_CACHE_HOME``) points at a temporary folder.
"""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

import numpy as np
import platformdirs
import pytest
import torch

from hesig.data import DATASETS, Dataset, load_dataset, resolve_data_root
from hesig.core.errors import DataError, InvalidValueError

_ENV_ROOT = os.environ.get("HESIG_DATA", "").strip()
SHARED = Path(_ENV_ROOT).expanduser().absolute() if _ENV_ROOT else None
MNIST_GZ = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def _shared_root(*parts: str) -> Path:
    """The shared data root, or skip when it is unset or lacks ``parts``."""
    if SHARED is None:
        pytest.skip("HESIG_DATA is not set; point it at the shared data folder to run this test")
    for part in parts:
        if not (SHARED / part).exists():
            pytest.skip(f"HESIG_DATA={SHARED} lacks {part}")
    return SHARED


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("xdg-cache")


@pytest.fixture(autouse=True)
def _isolated_cache(monkeypatch, session_cache):
    """Every test uses a temporary user cache (shared within the session so extraction runs once)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(session_cache))
    assert Path(platformdirs.user_cache_dir("hesig")) == session_cache / "hesig"


@pytest.fixture
def empty_cache(monkeypatch, tmp_path) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    return cache


@pytest.fixture(scope="module")
def mnist_pair(session_cache):
    """(train, test) MNIST loaded once from the shared root through the session cache."""
    root = _shared_root(*(f"MNIST/raw/{f}" for f in MNIST_GZ))
    with pytest.MonkeyPatch.context() as mp:  # module scope runs before the autouse fixture
        mp.setenv("XDG_CACHE_HOME", str(session_cache))
        before = _snapshot(root)
        train = load_dataset("mnist", "train", data_root=root)
        test = load_dataset("mnist", "test", data_root=root)
        assert _snapshot(root) == before, "loading MNIST wrote into the data root"
    return train, test


# ------------------------------------------------------------------------------------------- digits


def test_digits_shapes_range_labels():
    train = load_dataset("digits", "train")
    test = load_dataset("digits", "test")
    assert (len(train), len(test)) == (1347, 450)
    for ds in (train, test):
        assert ds.images.dtype == torch.float32 and ds.labels.dtype == torch.int64
        assert ds.shape == (1, 8, 8) and tuple(ds.images.shape) == (len(ds), 1, 8, 8)
        assert 0.0 <= float(ds.images.min()) and float(ds.images.max()) <= 1.0
        assert ds.num_classes == 10 and ds.classes == tuple(str(i) for i in range(10))
        assert set(ds.labels.tolist()) == set(range(10))
        assert torch.equal(ds.indices, torch.arange(len(ds)))
    assert float(train.images.max()) == 1.0  # 16 / 16
    # stratified: every class has about a quarter of its images in the test split
    counts = torch.bincount(test.labels, minlength=10)
    assert int(counts.min()) >= 40 and int(counts.max()) <= 50


def test_digits_split_deterministic_and_disjoint():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    a, b = load_dataset("digits", "train"), load_dataset("digits", "train")
    assert a.split_hash == b.split_hash and torch.equal(a.images, b.images)
    test = load_dataset("digits", "test")
    digits = load_digits()
    full = torch.from_numpy(digits.images.reshape(1797, -1).astype(np.float32) / 16)
    # the documented split, reproduced here: disjoint, covering all 1797 images
    tr, te = train_test_split(np.arange(1797), test_size=0.25, random_state=0, stratify=digits.target)
    assert not set(tr) & set(te) and len(set(tr) | set(te)) == 1797
    assert torch.equal(a.images.reshape(len(a), -1), full[torch.from_numpy(tr)])
    assert torch.equal(test.images.reshape(len(test), -1), full[torch.from_numpy(te)])
    assert torch.equal(a.labels, torch.from_numpy(digits.target[tr]).long())
    assert a.split_hash != test.split_hash


def test_subset_keeps_indices_and_metadata():
    ds = load_dataset("digits", "test")
    sub = ds.subset([5, 2, 9])
    assert isinstance(sub, Dataset) and len(sub) == 3
    assert sub.indices.tolist() == [5, 2, 9]
    assert torch.equal(sub.images, ds.images[[5, 2, 9]]) and torch.equal(sub.labels, ds.labels[[5, 2, 9]])
    assert (sub.name, sub.split, sub.classes) == (ds.name, ds.split, ds.classes)
    subsub = sub.subset(torch.tensor([2, 0]))
    assert subsub.indices.tolist() == [9, 5]  # positions in the full split, not in `sub`
    assert ds.subset(slice(10, 13)).indices.tolist() == [10, 11, 12]
    mask = ds.labels == 3
    assert ds.subset(mask).indices.tolist() == torch.nonzero(mask).flatten().tolist()
    with pytest.raises(InvalidValueError):
        ds.subset([len(ds)])
    with pytest.raises(InvalidValueError):
        ds.subset([0.5])


def test_unknown_dataset_and_split():
    with pytest.raises(InvalidValueError) as exc:
        load_dataset("imagenet")
    msg = str(exc.value)
    assert "imagenet" in msg and all(n in msg for n in DATASETS) and "\n" not in msg
    with pytest.raises(InvalidValueError, match="split"):
        load_dataset("digits", "validation")


def test_resolve_data_root(monkeypatch, tmp_path, session_cache):
    monkeypatch.setenv("HESIG_DATA", str(tmp_path / "env"))
    assert resolve_data_root(tmp_path / "explicit") == tmp_path / "explicit"
    assert resolve_data_root(None) == tmp_path / "env"
    monkeypatch.delenv("HESIG_DATA")
    assert resolve_data_root(None) == session_cache / "hesig" / "data"


# ------------------------------------------------------------------------------------ missing / corrupt


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist", "cifar10"])
def test_missing_root_raises_one_line_data_error(tmp_path, empty_cache, name):
    with pytest.raises(DataError) as exc:
        load_dataset(name, "test", data_root=tmp_path / "nothing-here", download=False)
    msg = str(exc.value)
    assert "HESIG_DATA" in msg and "--download" in msg and "\n" not in msg
    assert str(tmp_path / "nothing-here") in msg


def test_corrupt_gz_raises_data_error(tmp_path, empty_cache):
    raw = tmp_path / "root" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in MNIST_GZ:
        (raw / name).write_bytes(gzip.compress(b"not an idx file"))
    with pytest.raises(DataError) as exc:
        load_dataset("mnist", "test", data_root=tmp_path / "root")
    assert "corrupt" in str(exc.value) and "\n" not in str(exc.value)
    # nothing half-written is left in the cache mirror
    mirror = empty_cache / "hesig" / "torchvision" / "MNIST" / "raw"
    assert not any(p.name.endswith("-ubyte") or p.name.endswith(".tmp") for p in mirror.glob("*"))


def test_corrupt_extracted_files_raise_data_error(tmp_path, empty_cache):
    raw = tmp_path / "root" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for name in MNIST_GZ:
        (raw / name[: -len(".gz")]).write_bytes(b"\x00\x00\x08\x03garbage")
    with pytest.raises(DataError, match="fashion-mnist"):
        load_dataset("fashion-mnist", "train", data_root=tmp_path / "root")


def test_corrupt_cifar_npz_raises_data_error(tmp_path, empty_cache):
    path = tmp_path / "root" / "cifar10" / "cifar10.npz"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"PK\x03\x04 truncated zip")
    with pytest.raises(DataError, match="cifar10"):
        load_dataset("cifar10", "test", data_root=tmp_path / "root")
    # a readable archive with the wrong arrays is also a DataError
    np.savez(path, x_test=np.zeros((4, 32, 32), np.uint8), y_test=np.zeros(4, np.uint8))
    with pytest.raises(DataError, match="unexpected arrays"):
        load_dataset("cifar10", "test", data_root=tmp_path / "root")


def test_corrupt_torchvision_cifar_raises_data_error(tmp_path, empty_cache):
    (tmp_path / "root" / "cifar-10-batches-py").mkdir(parents=True)
    with pytest.raises(DataError, match="missing or corrupt"):
        load_dataset("cifar10", "test", data_root=tmp_path / "root")


# ------------------------------------------------------------------------------------- real datasets


def test_mnist_train_and_test(mnist_pair):
    train, test = mnist_pair
    assert tuple(train.images.shape) == (60000, 1, 28, 28) and tuple(test.images.shape) == (10000, 1, 28, 28)
    for ds in (train, test):
        assert ds.images.dtype == torch.float32 and ds.labels.dtype == torch.int64
        assert float(ds.images.min()) == 0.0 and float(ds.images.max()) == 1.0
        assert ds.num_classes == 10 and ds.shape == (1, 28, 28)
        assert torch.equal(ds.indices, torch.arange(len(ds)))
    assert train.labels[:5].tolist() == [5, 0, 4, 1, 9]  # canonical first training labels
    assert torch.bincount(test.labels, minlength=10).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_mnist_split_hash_stable_and_subset(mnist_pair):
    _, test = mnist_pair
    again = load_dataset("mnist", "test", data_root=SHARED)  # second load goes through the filled mirror
    assert again.split_hash == test.split_hash and len(test.split_hash) == 16
    # the hash every committed MNIST result records (results/*/summary.json): the numpy idx reader
    # gives the same bytes as torchvision's reader did
    assert test.split_hash == "10bff9b63105200d"
    sub = test.subset(torch.arange(100, 110))
    assert sub.indices.tolist() == list(range(100, 110))
    assert sub.split_hash != test.split_hash


def test_extracted_files_in_root_are_read_in_place(mnist_pair, session_cache, tmp_path, empty_cache):
    _, test = mnist_pair
    src = session_cache / "hesig" / "torchvision" / "MNIST" / "raw"
    raw = tmp_path / "root" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for gz in MNIST_GZ:
        name = gz[: -len(".gz")]
        try:
            os.link(src / name, raw / name)
        except OSError:
            shutil.copyfile(src / name, raw / name)
    ds = load_dataset("mnist", "test", data_root=tmp_path / "root")
    assert ds.split_hash == test.split_hash
    assert not empty_cache.exists()  # nothing copied into the (empty) user cache


def test_mnist_like_names_are_torchvisions():
    from torchvision.datasets import MNIST, FashionMNIST

    from hesig.data import _MNIST_FILES, _MNIST_LIKE
    for name, cls in (("mnist", MNIST), ("fashion-mnist", FashionMNIST)):
        folder, classes = _MNIST_LIKE[name]
        assert folder == cls.__name__ and classes == tuple(cls.classes)
        assert [gz for gz, _ in cls.resources] == [f"{f}.gz" for f in _MNIST_FILES]


@pytest.mark.parametrize("damage", ["truncate", "magic"])
def test_a_damaged_extracted_idx_file_is_one_line(mnist_pair, session_cache, tmp_path, empty_cache, damage):
    src = session_cache / "hesig" / "torchvision" / "MNIST" / "raw"
    raw = tmp_path / "root" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for gz in MNIST_GZ:
        name = gz[: -len(".gz")]
        shutil.copyfile(src / name, raw / name)
    victim = raw / "t10k-images-idx3-ubyte"
    blob = victim.read_bytes()
    victim.write_bytes(blob[:-100] if damage == "truncate" else b"\x00\x00\x09" + blob[3:])
    with pytest.raises(DataError, match=r"cannot read mnist test from .*t10k-images-idx3-ubyte") as info:
        load_dataset("mnist", "test", data_root=tmp_path / "root")
    assert "\n" not in str(info.value)
    assert victim.read_bytes() != blob  # the input is left as it was


def test_fashion_mnist_test():
    root = _shared_root(*(f"FashionMNIST/raw/{f}" for f in MNIST_GZ))
    before = _snapshot(root)
    ds = load_dataset("fashion-mnist", "test", data_root=root)
    assert _snapshot(root) == before
    assert tuple(ds.images.shape) == (10000, 1, 28, 28) and ds.labels.dtype == torch.int64
    assert 0.0 <= float(ds.images.min()) and float(ds.images.max()) <= 1.0
    assert ds.classes[0] == "T-shirt/top" and ds.num_classes == 10
    assert torch.bincount(ds.labels, minlength=10).tolist() == [1000] * 10


def test_hesig_data_env_is_used(monkeypatch):
    root = _shared_root(*(f"MNIST/raw/{f}" for f in MNIST_GZ))
    monkeypatch.setenv("HESIG_DATA", str(root))
    ds = load_dataset("mnist", "test")  # no data_root: taken from the environment
    assert len(ds) == 10000


def test_cifar10_test_permuted_and_balanced():
    root = _shared_root("cifar10/cifar10.npz")
    before = _snapshot(root)
    a = load_dataset("cifar10", "test", data_root=root)
    assert _snapshot(root) == before
    assert tuple(a.images.shape) == (10000, 3, 32, 32)
    assert a.images.dtype == torch.float32 and a.labels.dtype == torch.int64
    assert 0.0 <= float(a.images.min()) and float(a.images.max()) <= 1.0
    assert a.classes == ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    assert torch.bincount(a.labels, minlength=10).tolist() == [1000] * 10
    first = torch.bincount(a.labels[:1000], minlength=10)
    assert int(first.min()) >= 60 and int(first.max()) <= 140, first.tolist()
    # the documented permutation of the class-sorted archive, and stable across loads
    with np.load(root / "cifar10" / "cifar10.npz", allow_pickle=False) as z:
        y = z["y_test"].astype(np.int64)
    perm = np.random.default_rng(0).permutation(len(y))
    assert a.labels.tolist() == y[perm].tolist()
    b = load_dataset("cifar10", "test", data_root=root)
    assert a.split_hash == b.split_hash
