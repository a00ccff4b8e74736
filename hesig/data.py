"""Image datasets as float32 tensors in [0, 1] (NCHW) plus int64 labels.

Datasets (:data:`DATASETS`), each with a ``"train"`` and a ``"test"`` split:

``digits``
    scikit-learn's bundled ``load_digits()`` (1,797 images, 8×8, values 0..16, divided by 16),
    shape ``[N, 1, 8, 8]``. Never downloaded. There is no official split, so hesig fixes one:
    ``train_test_split(arange(1797), test_size=0.25, random_state=0, stratify=y)``, giving 1,347
    train and 450 test images, in the (shuffled) order ``train_test_split`` returns them.
``mnist`` / ``fashion-mnist``
    The canonical releases in torchvision's ``MNIST`` / ``FashionMNIST`` layout, read with numpy
    (torchvision is imported only to download or to check MD5s), shape ``[N, 1, 28, 28]``, 60,000
    train / 10,000 test, in the canonical file order. Looked up under the data root as::

        <root>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]
        <root>/FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]

    In order: (1) if the extracted files are there, they are read in place; (2) else if the four
    ``.gz`` files are there, they are copied (once; same-size copies are kept) into a writable
    mirror ``<user cache>/torchvision/<Folder>/raw/``, checked against torchvision's MD5s and
    extracted there atomically, and read from the mirror, so a read-only root is never written to
    and no network is used; (3) else a mirror already filled by an earlier run is used; (4) else,
    only with ``download=True``, torchvision downloads into the root (or into the mirror when the
    root is not writable); (5) else :class:`~hesig.core.errors.DataError`.
``cifar10``
    Shape ``[N, 3, 32, 32]``, 50,000 train / 10,000 test. First ``<root>/cifar10/cifar10.npz``
    (arrays ``x_train`` uint8 [50000,32,32,3], ``y_train``, ``x_test``, ``y_test``, loaded with
    ``allow_pickle=False``). Its rows are sorted by class, so each split is reordered by the fixed
    permutation ``np.random.default_rng(0).permutation(n)``; that permuted order *is* the split
    order (``indices`` count positions in it), so any prefix is class-balanced and reproducible.
    Else torchvision's ``CIFAR10`` (``cifar-10-batches-py``, original batch order) under
    ``<root>``, ``<root>/cifar10`` or the mirror ``<user cache>/torchvision``; download only with
    ``download=True``.

The data root is the explicit ``data_root`` argument, else the environment variable
``HESIG_DATA``, else ``platformdirs.user_cache_dir("hesig")/data``. The user cache is
``platformdirs.user_cache_dir("hesig")`` (``$XDG_CACHE_HOME/hesig`` on Linux); nothing except the
extracted MNIST-style mirror (and explicit downloads) is written to disk. The mirror is read on its
own only when no root is named: a named root (argument or ``HESIG_DATA``) without the data is an
error naming what was looked for.

Missing, corrupt or unreadable files raise a one-line :class:`~hesig.core.errors.DataError`; unknown
dataset or split names raise :class:`~hesig.core.errors.InvalidValueError`.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import os
import pickle
import shutil
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import platformdirs
import torch

from .core.defaults import DATASETS, HALVES, SPLITS
from .core.errors import DataError, InvalidValueError, ShapeError
from .core.io import tensor_hash

__all__ = ["DATASETS", "SPLITS", "HALVES", "CIFAR10_CLASSES", "Dataset", "resolve_data_root", "load_dataset",
           "train_half"]

#: Dataset names accepted by :func:`load_dataset`.
#: Split names accepted by :func:`load_dataset`.

#: Environment variable naming the data root.
ENV_VAR = "HESIG_DATA"
#: CIFAR-10 class names in label order.
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

#: Fixed digits split: ``train_test_split(..., test_size=DIGITS_TEST_SIZE, random_state=DIGITS_SEED, stratify=y)``.
DIGITS_TEST_SIZE = 0.25
DIGITS_SEED = 0
#: Seed of the per-split permutation applied to the class-sorted CIFAR-10 archive.
CIFAR10_PERMUTATION_SEED = 0

# Exceptions that numpy / torchvision / gzip / zipfile / pickle raise on corrupt or unreadable files.
_READ_ERRORS = (
    RuntimeError, OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, KeyError, IndexError,
    TypeError, AssertionError, pickle.UnpicklingError, MemoryError,
)

_MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _choices(options: Sequence[str]) -> str:
    return ", ".join(options)


def _errmsg(exc: BaseException) -> str:
    """Short one-line description of an exception."""
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    if "download=True" in str(text):  # torchvision's "not found or corrupted. You can use download=True"
        return "files missing or corrupt"
    return " ".join(str(text).split())[:200]


@dataclass(eq=False, repr=False)
class Dataset:
    """One split of a dataset, fully in memory.

    Attributes:
        name: canonical dataset name (one of :data:`DATASETS`).
        split: ``"train"`` or ``"test"``.
        images: float32 ``[N, C, H, W]`` with values in ``[0, 1]``.
        labels: int64 ``[N]`` with values in ``[0, num_classes)``.
        classes: class names in label order.
        indices: int64 ``[N]``, each image's position in the full split (``arange(N)`` for a full
            split; :meth:`subset` keeps the original positions).
    """

    name: str
    split: str
    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]
    indices: torch.Tensor = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.classes = tuple(str(c) for c in self.classes)
        if self.images.ndim != 4:
            raise ShapeError(f"{self.name} images must be [N, C, H, W], got shape {tuple(self.images.shape)}")
        n = self.images.shape[0]
        if self.indices is None:
            self.indices = torch.arange(n, dtype=torch.int64)
        if tuple(self.labels.shape) != (n,) or tuple(self.indices.shape) != (n,):
            raise ShapeError(
                f"{self.name}: {n} images but labels {tuple(self.labels.shape)} and indices {tuple(self.indices.shape)}"
            )

    @property
    def num_classes(self) -> int:
        """Number of classes (``len(classes)``)."""
        return len(self.classes)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Shape of one image, ``(C, H, W)``."""
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __repr__(self) -> str:
        return f"Dataset(name={self.name!r}, split={self.split!r}, n={len(self)}, shape={self.shape}, classes={self.num_classes})"

    @cached_property
    def split_hash(self) -> str:
        """``tensor_hash(images, labels)``, computed once (do not modify the tensors in place)."""
        return tensor_hash(self.images, self.labels)

    def subset(self, idx: Any) -> "Dataset":
        """The images at ``idx`` (ints, a slice, an int tensor/array, or a bool mask of length N).

        The result's ``indices`` are the original positions in the full split.
        """
        n = len(self)
        if isinstance(idx, slice):
            sel = torch.arange(n, dtype=torch.int64)[idx]
        else:
            try:
                sel = torch.as_tensor(np.asarray(idx) if not isinstance(idx, torch.Tensor) else idx)
            except (TypeError, ValueError, RuntimeError) as exc:
                raise InvalidValueError(f"subset index must be integers or a boolean mask ({_errmsg(exc)})") from None
            if sel.dtype == torch.bool:
                if tuple(sel.shape) != (n,):
                    raise InvalidValueError(f"boolean subset mask has shape {tuple(sel.shape)}, expected ({n},)")
                sel = sel.nonzero().flatten()
            elif sel.numel() == 0:
                sel = sel.reshape(0).to(torch.int64)
            elif sel.is_floating_point() or sel.is_complex():
                raise InvalidValueError("subset index must be integers or a boolean mask")
            sel = sel.reshape(-1).to(torch.int64)
            if sel.numel() and (int(sel.min()) < -n or int(sel.max()) >= n):
                raise InvalidValueError(f"subset index out of range for {self.name} {self.split} (size {n})")
            sel = torch.where(sel < 0, sel + n, sel)
        return Dataset(
            name=self.name,
            split=self.split,
            images=self.images[sel],
            labels=self.labels[sel],
            classes=self.classes,
            indices=self.indices[sel],
        )


# --------------------------------------------------------------------------------------------- roots


def _user_cache() -> Path:
    return Path(platformdirs.user_cache_dir("hesig"))


def _mirror_root() -> Path:
    """Writable torchvision-style root inside the user cache."""
    return _user_cache() / "torchvision"


def resolve_data_root(data_root: str | os.PathLike | None = None) -> Path:
    """The data root: ``data_root`` if given, else ``$HESIG_DATA``, else ``user_cache_dir("hesig")/data``.

    The result is absolute (``~`` expanded); it need not exist.
    """
    if data_root is None or str(data_root) == "":
        env = os.environ.get(ENV_VAR, "").strip()
        path = Path(env) if env else _user_cache() / "data"
    else:
        path = Path(data_root)
    return path.expanduser().absolute()


def _is_writable(path: Path) -> bool:
    """Whether ``path`` (or the directory it would be created in) can be written to."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".probe."):
            pass
        return True
    except OSError:
        return False


def _not_found(name: str, root: Path, looked_for: str) -> DataError:
    return DataError(
        f"{name} not found under {root} (looked for {looked_for}); set {ENV_VAR} or the data root to a "
        f"folder that has it, or pass --download to fetch it"
    )


# ------------------------------------------------------------------------------------------- loaders


def load_dataset(
    name: str, split: str = "train", data_root: str | os.PathLike | None = None, download: bool = False
) -> Dataset:
    """Load one split of a dataset fully into memory.

    Args:
        name: one of :data:`DATASETS` (case-insensitive; ``_`` may stand for ``-``).
        split: ``"train"`` or ``"test"``.
        data_root: folder holding the data; see :func:`resolve_data_root`. Unused for ``digits``.
        download: let torchvision fetch missing MNIST / Fashion-MNIST / CIFAR-10 files.

    Returns:
        A :class:`Dataset` with float32 images ``[N, C, H, W]`` in ``[0, 1]`` and int64 labels
        ``[N]``: digits ``[1347|450, 1, 8, 8]``, mnist / fashion-mnist ``[60000|10000, 1, 28, 28]``,
        cifar10 ``[50000|10000, 3, 32, 32]``.

    Raises:
        InvalidValueError: unknown dataset or split.
        DataError: the files are missing (and ``download`` is off), corrupt, or cannot be read.
    """
    key = name.strip().lower().replace("_", "-") if isinstance(name, str) else None
    if key not in DATASETS:
        raise InvalidValueError(f"unknown dataset {name!r} (choose from {_choices(DATASETS)})")
    split_key = split.strip().lower() if isinstance(split, str) else None
    if split_key not in SPLITS:
        raise InvalidValueError(f"unknown split {split!r} (choose from {_choices(SPLITS)})")
    if key == "digits":
        return _load_digits(split_key)
    root = resolve_data_root(data_root)
    # The user-cache copy stands in only when no root was named: a named root (--data-root or
    # $HESIG_DATA) that lacks the data is an error naming what was looked for.
    named = bool(str(data_root or "").strip() or os.environ.get(ENV_VAR, "").strip())
    if key in ("mnist", "fashion-mnist"):
        return _load_mnist_like(key, split_key, root, download, use_cache=not named)
    return _load_cifar10(split_key, root, download, use_cache=not named)


def _load_digits(split: str) -> Dataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = np.asarray(bunch.images, dtype=np.float32) / 16.0  # [1797, 8, 8], 0..16 -> [0, 1]
    y = np.asarray(bunch.target, dtype=np.int64)
    train_idx, test_idx = train_test_split(
        np.arange(len(y)), test_size=DIGITS_TEST_SIZE, random_state=DIGITS_SEED, stratify=y
    )
    sel = train_idx if split == "train" else test_idx
    images = torch.from_numpy(np.ascontiguousarray(x[sel])).unsqueeze(1)
    labels = torch.from_numpy(y[sel])
    classes = tuple(str(c) for c in bunch.target_names)
    return Dataset("digits", split, images.clamp_(0.0, 1.0), labels, classes)


# MNIST / Fashion-MNIST ------------------------------------------------------------------------------


#: Folder and class names of the MNIST-style releases, as torchvision names them
#: (tests/test_data.py checks them against torchvision). hesig reads the idx files itself, with
#: numpy, so that loading MNIST does not import torchvision: the import alone adds about 170 MB of
#: resident memory to every process that fingerprints (benchmarks/ckks_memory_stages.py).
#: torchvision is imported only to download or to check a copy against its MD5s.
_MNIST_LIKE = {
    "mnist": ("MNIST", ("0 - zero", "1 - one", "2 - two", "3 - three", "4 - four", "5 - five", "6 - six",
                        "7 - seven", "8 - eight", "9 - nine")),
    "fashion-mnist": ("FashionMNIST", ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                                       "Sneaker", "Bag", "Ankle boot")),
}


def _mnist_class(name: str):
    """torchvision's dataset class: its download and its MD5s (``resources``)."""
    from torchvision.datasets import MNIST, FashionMNIST

    return MNIST if name == "mnist" else FashionMNIST


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """An uncompressed idx file of unsigned bytes (magic 0x00 0x00 0x08 ndim, big-endian int32
    dimensions, then the data) as a uint8 array of those dimensions."""
    blob = path.read_bytes()
    if len(blob) < 4 + 4 * ndim or blob[:3] != b"\x00\x00\x08" or blob[3] != ndim:
        raise ValueError(f"{path.name} is not an idx file of {ndim}-d unsigned bytes")
    dims = [int.from_bytes(blob[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    body = len(blob) - 4 - 4 * ndim
    if body != int(np.prod(dims)):
        raise ValueError(f"{path.name} holds {body} bytes after its header, its dimensions {dims} say {int(np.prod(dims))}")
    return np.frombuffer(blob, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _idx_file_ok(path: Path) -> bool:
    """Cheap check that an extracted idx file is complete: its size matches its header."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError:
        return False
    if len(head) < 8 or head[0:2] != b"\x00\x00" or head[2] != 0x08:
        return False
    nd = head[3]
    if nd not in (1, 3) or len(head) < 4 + 4 * nd:
        return False
    dims = [int.from_bytes(head[4 + 4 * i : 8 + 4 * i], "big") for i in range(nd)]
    return size == 4 + 4 * nd + int(np.prod(dims))


def _md5(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fill_mirror(name: str, src_raw: Path, dst_raw: Path) -> None:
    """Copy the ``.gz`` files from ``src_raw`` to ``dst_raw``, verify their MD5s, extract atomically."""
    if all(_idx_file_ok(dst_raw / f) for f in _MNIST_FILES):
        return  # filled earlier: nothing to check against torchvision's MD5s
    try:
        dst_raw.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create the data cache {dst_raw}: {_errmsg(exc)}") from None
    for gz_name, md5 in _mnist_class(name).resources:
        out = dst_raw / gz_name[: -len(".gz")]
        if _idx_file_ok(out):
            continue
        src, dst = src_raw / gz_name, dst_raw / gz_name
        try:
            if not (dst.is_file() and src.stat().st_size == dst.stat().st_size and _md5(dst) == md5):
                fd, tmp = tempfile.mkstemp(dir=dst_raw, prefix=f".{gz_name}.", suffix=".tmp")
                try:
                    with os.fdopen(fd, "wb") as fout, open(src, "rb") as fin:
                        shutil.copyfileobj(fin, fout, 1 << 20)
                    if _md5(Path(tmp)) != md5:
                        raise DataError(f"{name} file {src} is corrupt (MD5 does not match the canonical release)")
                    os.replace(tmp, dst)
                finally:
                    Path(tmp).unlink(missing_ok=True)
            fd, tmp = tempfile.mkstemp(dir=dst_raw, prefix=f".{out.name}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as fout, gzip.open(dst, "rb") as fin:
                    shutil.copyfileobj(fin, fout, 1 << 20)
                if not _idx_file_ok(Path(tmp)):
                    raise DataError(f"{name} file {src} is corrupt (its contents are not an idx file)")
                os.replace(tmp, out)
            finally:
                Path(tmp).unlink(missing_ok=True)
        except DataError:
            raise
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"cannot prepare {name} from {src} in {dst_raw}: {_errmsg(exc)}") from None


def _read_mnist_like(name: str, root: Path, split: str, download: bool = False) -> Dataset:
    folder, classes = _MNIST_LIKE[name]
    raw = root / folder / "raw"
    prefix = "train" if split == "train" else "t10k"
    try:
        if download:  # torchvision fetches and extracts into raw/; hesig reads what it wrote
            with contextlib.redirect_stdout(io.StringIO()):
                _mnist_class(name)(str(root), train=(split == "train"), download=True)
        data = _read_idx(raw / f"{prefix}-images-idx3-ubyte", 3)
        targets = _read_idx(raw / f"{prefix}-labels-idx1-ubyte", 1)
        if targets.shape[0] != data.shape[0]:
            raise ValueError(f"{data.shape[0]} images but {targets.shape[0]} labels")
    except DataError:
        raise
    except _READ_ERRORS as exc:
        what = "download or read" if download else "read"
        raise DataError(f"cannot {what} {name} {split} from {raw}: {_errmsg(exc)}") from None
    labels = torch.from_numpy(targets.astype(np.int64))
    if labels.numel() and int(labels.max()) >= len(classes):
        raise DataError(f"{name} {split} labels under {raw} are out of range (corrupt file?)")
    images = torch.from_numpy(data.copy()).unsqueeze(1).to(torch.float32).div_(255.0)
    return Dataset(name, split, images, labels, classes)


def _load_mnist_like(name: str, split: str, root: Path, download: bool, use_cache: bool = True) -> Dataset:
    folder = _MNIST_LIKE[name][0]
    raw = root / folder / "raw"
    mirror = _mirror_root()
    mirror_raw = mirror / folder / "raw"

    # (1) extracted files in the root: read in place.
    if all((raw / f).is_file() for f in _MNIST_FILES):
        return _read_mnist_like(name, root, split)
    # (2) .gz files in the root: copy + extract into the writable mirror, read from there.
    if all((raw / f"{f}.gz").is_file() for f in _MNIST_FILES):
        _fill_mirror(name, raw, mirror_raw)
        return _read_mnist_like(name, mirror, split)
    # (3) a mirror filled earlier (from another root or by a download), when no root was named.
    if use_cache and all(_idx_file_ok(mirror_raw / f) for f in _MNIST_FILES):
        return _read_mnist_like(name, mirror, split)
    # (4) download, only when asked.
    if download:
        target = root if _is_writable(root) else mirror
        return _read_mnist_like(name, target, split, download=True)
    raise _not_found(name, root, f"{folder}/raw/*-ubyte.gz")


# CIFAR-10 -------------------------------------------------------------------------------------------


def _cifar_dataset(split: str, x: Any, y: Any, source: Path, permute: bool) -> Dataset:
    x = np.asarray(x)
    y = np.asarray(y).reshape(-1)
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != (32, 32, 3) or y.shape[0] != x.shape[0]:
        raise DataError(
            f"cifar10 {split} in {source} has unexpected arrays: images {x.dtype} {x.shape}, labels {y.shape}"
        )
    if not np.issubdtype(y.dtype, np.integer) or (y.size and (y.min() < 0 or y.max() >= len(CIFAR10_CLASSES))):
        raise DataError(f"cifar10 {split} labels in {source} are not integers in 0..9")
    xt = torch.from_numpy(np.ascontiguousarray(x))
    yt = torch.from_numpy(y.astype(np.int64))
    if permute:
        perm = torch.from_numpy(np.random.default_rng(CIFAR10_PERMUTATION_SEED).permutation(x.shape[0]))
        xt, yt = xt[perm], yt[perm]
    images = xt.permute(0, 3, 1, 2).contiguous().to(torch.float32).div_(255.0)
    return Dataset("cifar10", split, images, yt, CIFAR10_CLASSES)


def _load_cifar10_npz(path: Path, split: str) -> Dataset:
    try:
        with np.load(path, allow_pickle=False) as archive:
            x, y = archive[f"x_{split}"], archive[f"y_{split}"]
    except _READ_ERRORS as exc:
        raise DataError(f"cannot read cifar10 {split} from {path}: {_errmsg(exc)}") from None
    return _cifar_dataset(split, x, y, path, permute=True)


def _load_cifar10_torchvision(root: Path, split: str, download: bool = False) -> Dataset:
    from torchvision.datasets import CIFAR10

    folder = root / CIFAR10.base_folder
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            ds = CIFAR10(str(root), train=(split == "train"), download=download)
        x, y = ds.data, ds.targets
    except _READ_ERRORS as exc:
        what = "download or read" if download else "read"
        raise DataError(f"cannot {what} cifar10 {split} from {folder}: {_errmsg(exc)}") from None
    return _cifar_dataset(split, x, y, folder, permute=False)


def _load_cifar10(split: str, root: Path, download: bool, use_cache: bool = True) -> Dataset:
    from torchvision.datasets import CIFAR10

    npz = root / "cifar10" / "cifar10.npz"
    if npz.is_file():
        return _load_cifar10_npz(npz, split)
    mirror = _mirror_root()
    for candidate in (root, root / "cifar10", *((mirror,) if use_cache else ())):
        if (candidate / CIFAR10.base_folder).is_dir():
            return _load_cifar10_torchvision(candidate, split)
    if download:
        target = root if _is_writable(root) else mirror
        return _load_cifar10_torchvision(target, split, download=True)
    raise _not_found("cifar10", root, f"cifar10/cifar10.npz or {CIFAR10.base_folder}/")


# --------------------------------------------------------------------------------------------- halves

#: Parts of a training split: all of it, or one of two fixed disjoint halves.
#: Seed of the fixed permutation that cuts a training split into halves a and b.
HALF_SEED = 0


def train_half(train: Dataset, half: str) -> Dataset:
    """Half ``a`` or ``b`` of a training split (or ``all`` of it), by a fixed seeded permutation.

    He et al. distinguish an adversary who queries with the target's own training set from one
    with "a different set from the same distribution". MNIST has no second training set, so hesig
    trains the target on half ``a`` (``perm[:N//2]`` of ``np.random.default_rng(0).permutation(N)``)
    and gives the adversary half ``b`` (``perm[N//2:]``): disjoint, same distribution.
    """
    if half not in HALVES:
        raise InvalidValueError(f"unknown training half {half!r} (choose from {_choices(HALVES)})")
    if half == "all":
        return train
    perm = torch.from_numpy(np.random.default_rng(HALF_SEED).permutation(len(train)))
    cut = len(train) // 2
    return train.subset(perm[:cut] if half == "a" else perm[cut:])
