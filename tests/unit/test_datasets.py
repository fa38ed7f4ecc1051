from __future__ import annotations

import gzip
import hashlib
import re
from pathlib import Path

import numpy as np
import pytest

from ddn_ray.errors import DataError
from ddn_ray.usecases import datasets

CSV = (
    b"period,nswprice,nswdemand,vicprice,vicdemand,transfer,class\n0,0.1,0.2,0.3,0.4,0.5,1\n0.5,0.2,0.2,0.3,0.4,0.5,0\n"
)


def _spec(url: str, payload: bytes = CSV) -> datasets.DatasetSpec:
    return datasets.DatasetSpec("elec2", "electricity.csv", url, hashlib.sha256(payload).hexdigest())


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv(datasets.DATA_DIR_ENV, raising=False)
    monkeypatch.setenv(datasets.CACHE_DIR_ENV, str(tmp_path / "cache"))
    return tmp_path


def test_explicit_path_then_env_dir_then_cache(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _spec("file:///nonexistent")
    for root in ("explicit", "env", "cache"):
        (isolated / root / "elec2").mkdir(parents=True)
        (isolated / root / "elec2" / "electricity.csv").write_bytes(CSV)
    assert datasets.find(spec, isolated / "explicit") == isolated / "explicit" / "elec2" / "electricity.csv"
    monkeypatch.setenv(datasets.DATA_DIR_ENV, str(isolated / "env"))
    assert datasets.find(spec).parent.parent.name == "env"
    monkeypatch.delenv(datasets.DATA_DIR_ENV)
    assert datasets.find(spec).parent.parent.name == "cache"


def test_missing_explicit_path_does_not_fall_back(isolated: Path) -> None:
    with pytest.raises(DataError, match=re.escape("holds no elec2/electricity.csv")):
        datasets.find(_spec("file:///x"), isolated / "nowhere")


def test_download_is_decompressed_and_checksummed(isolated: Path) -> None:
    src = isolated / "remote.csv.gz"
    src.write_bytes(gzip.compress(CSV))
    got = datasets.find(_spec(src.as_uri()))
    assert got == isolated / "cache" / "elec2" / "electricity.csv" and got.read_bytes() == CSV


def test_download_with_wrong_checksum_is_refused_and_not_kept(isolated: Path) -> None:
    src = isolated / "remote.csv"
    src.write_bytes(CSV + b"tampered\n")
    with pytest.raises(DataError, match="sha256"):
        datasets.find(_spec(src.as_uri()))
    assert not (isolated / "cache" / "elec2" / "electricity.csv").exists()


def test_unreachable_download_says_how_to_fix(isolated: Path) -> None:
    with pytest.raises(DataError, match="DDN_RAY_DATA_DIR"):
        datasets.find(_spec((isolated / "absent.csv").as_uri()))


def test_load_elec2_parses_and_slices(tmp_path: Path) -> None:
    (tmp_path / "electricity.csv").write_bytes(CSV)
    t = datasets.load_elec2(tmp_path, max_rows=1)
    assert t.features.dtype == np.float32 and t.features.shape == (1, 6) and t.labels.tolist() == [1]


def test_load_elec2_names_missing_columns(tmp_path: Path) -> None:
    (tmp_path / "electricity.csv").write_bytes(b"period,class\n0,1\n")
    with pytest.raises(DataError, match="lacks columns"):
        datasets.load_elec2(tmp_path)


def _write_idx(path: Path, data: np.ndarray, magic: int) -> None:
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in data.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + data.astype(np.uint8).tobytes())


def test_fashion_mnist_reads_idx_files_from_a_data_dir(tmp_path: Path) -> None:
    d = tmp_path / "fashion-mnist"
    d.mkdir()
    images = np.arange(3 * 28 * 28).reshape(3, 28, 28) % 256
    _write_idx(d / "t10k-images-idx3-ubyte.gz", images, 0x803)
    _write_idx(d / "t10k-labels-idx1-ubyte.gz", np.array([9, 0, 3]), 0x801)
    t = datasets.load_fashion_mnist(tmp_path, split="test")
    assert t.features.shape == (3, 784) and t.features.dtype == np.float32
    assert t.features[0, 255] == 1.0 and t.labels.tolist() == [9, 0, 3] and t.num_classes == 10
    _write_idx(d / "t10k-labels-idx1-ubyte.gz", np.array([9, 0]), 0x801)
    with pytest.raises(DataError, match="3 images but 2 labels"):
        datasets.load_fashion_mnist(tmp_path, split="test")
    _write_idx(d / "t10k-labels-idx1-ubyte.gz", np.array([9, 0, 3]), 0x803)
    with pytest.raises(DataError, match="IDX magic"):
        datasets.load_fashion_mnist(tmp_path, split="test")
    with pytest.raises(ValueError, match="split"):
        datasets.load_fashion_mnist(tmp_path, split="val")


@pytest.mark.skipif(
    not Path("/usr/share/datasets/fashion-mnist").is_dir(), reason="dataset-fashion-mnist not installed"
)
def test_fashion_mnist_from_the_debian_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DDN_RAY_DATA_DIR", raising=False)
    monkeypatch.setenv("DDN_RAY_CACHE_DIR", "/nonexistent")  # found in the system dir, not downloaded
    t = datasets.load_fashion_mnist(split="test")
    assert t.features.shape == (10_000, 784) and np.bincount(t.labels).tolist() == [1000] * 10
