from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest

from ddn_ray import datasets
from ddn_ray.errors import DataError

CSV = b"period,nswprice,nswdemand,vicprice,vicdemand,transfer,class\n0,0.1,0.2,0.3,0.4,0.5,1\n0.5,0.2,0.2,0.3,0.4,0.5,0\n"


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
    with pytest.raises(DataError, match="holds no elec2/electricity.csv"):
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
