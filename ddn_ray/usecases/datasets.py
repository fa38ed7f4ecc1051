"""Data set loaders: find a local copy, or download the canonical file and verify it.

Resolution order for every loader (first hit wins):

1. an explicit ``path`` argument (a file, or a directory holding ``<subdir>/<filename>``);
2. ``$DDN_RAY_DATA_DIR/<subdir>/<filename>`` (the set-up points it at ``../shared/datasets``);
3. a system package's data directory (Fashion-MNIST: Debian's ``dataset-fashion-mnist``
   installs ``/usr/share/datasets/fashion-mnist``);
4. the cache ``$DDN_RAY_CACHE_DIR`` (default ``~/.cache/ddn_ray``) ``/<subdir>/<filename>``;
5. a download of the canonical source into the cache, kept only if its SHA-256 matches.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from ddn_ray.errors import DataError
from ddn_ray.stream import Table

__all__ = [
    "BBC_NEWS",
    "ELEC2",
    "FASHION_MNIST",
    "Corpus",
    "DatasetSpec",
    "cache_dir",
    "find",
    "load_bbc_news",
    "load_elec2",
    "load_fashion_mnist",
]

DATA_DIR_ENV = "DDN_RAY_DATA_DIR"
CACHE_DIR_ENV = "DDN_RAY_CACHE_DIR"


@dataclass(frozen=True)
class DatasetSpec:
    """Where a data set file lives and how to check it.

    Attributes:
        subdir: folder under a data directory, e.g. ``"elec2"``.
        filename: file name inside it, e.g. ``"electricity.csv"``.
        url: canonical download address; ``.gz`` payloads are decompressed. ``None``: the
            file has no public download and must be placed in a data directory.
        sha256: hex digest of the file as stored (decompressed when ``decompress``).
        decompress: gunzip a gzip payload before checking it.
        system_dirs: data directories a system package installs, searched after
            ``$DDN_RAY_DATA_DIR`` and before the cache.
    """

    subdir: str
    filename: str
    url: str | None
    sha256: str
    decompress: bool = True
    system_dirs: tuple[str, ...] = ()


ELEC2 = DatasetSpec(
    subdir="elec2",
    filename="electricity.csv",
    # The CapyMOA project's redistribution of Harries (1999), same columns as this copy.
    url=(
        "https://www.dropbox.com/scl/fi/n6vswhxz8i8f5jd8nc7bu/electricity.csv.gz"
        "?rlkey=oczanfxru37xfk0xn3qf78emh&st=h7vjpwr8&dl=1"
    ),
    sha256="b96c120acb05078af777ec49113a682200a38f4ea93944af27b813c282184b79",
)


BBC_NEWS = DatasetSpec(
    subdir="bbc",
    filename="bbc-text.csv",
    # Greene & Cunningham (2006). This copy holds the first 1,249 of the 2,225 articles; no public host
    # serves exactly this file, so it is looked for in the data directories only.
    url=None,
    sha256="332709fc87ca7e8a8091438e995ca5dbf8df57cc48ceba1a983145dd3e46637a",
)


_FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
FASHION_MNIST = {  # Xiao, Rasul & Vollgraf (2017); the .gz files as published (and as Debian ships them)
    name: DatasetSpec("fashion-mnist", f"{name}.gz", _FASHION_URL + f"{name}.gz", sha, False, ("/usr/share/datasets",))
    for name, sha in {
        "train-images-idx3-ubyte": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
        "train-labels-idx1-ubyte": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
        "t10k-images-idx3-ubyte": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
        "t10k-labels-idx1-ubyte": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
    }.items()
}


def cache_dir() -> Path:
    """The download cache: ``$DDN_RAY_CACHE_DIR`` or ``~/.cache/ddn_ray``."""
    return Path(os.environ.get(CACHE_DIR_ENV) or Path.home() / ".cache" / "ddn_ray")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _download(spec: DatasetSpec, dest: Path, timeout_s: float = 60.0) -> Path:
    if spec.url is None:
        raise DataError(f"{spec.subdir}/{spec.filename} has no download address; put it under $DDN_RAY_DATA_DIR")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=dest.parent, delete=False) as tmp:
        tmp_path = Path(tmp.name)
    try:
        with urllib.request.urlopen(spec.url, timeout=timeout_s) as resp, tmp_path.open("wb") as out:
            shutil.copyfileobj(resp, out)
        if spec.decompress and tmp_path.read_bytes()[:2] == b"\x1f\x8b":
            raw = tmp_path.with_suffix(".raw")
            with gzip.open(tmp_path, "rb") as src, raw.open("wb") as out:
                shutil.copyfileobj(src, out)
            raw.replace(tmp_path)
        got = _sha256(tmp_path)
        if got != spec.sha256:
            raise DataError(
                f"downloaded {spec.url} has sha256 {got}, expected {spec.sha256}; "
                f"place a verified copy at ${DATA_DIR_ENV}/{spec.subdir}/{spec.filename}"
            )
        tmp_path.replace(dest)
        return dest
    except OSError as exc:
        raise DataError(
            f"{spec.filename} not found locally and download from {spec.url} failed ({exc}); "
            f"set ${DATA_DIR_ENV} to a directory holding {spec.subdir}/{spec.filename}"
        ) from exc
    finally:
        tmp_path.unlink(missing_ok=True)


def find(spec: DatasetSpec, path: str | os.PathLike[str] | None = None, download: bool = True) -> Path:
    """Return the local path of a data set file, downloading it if needed.

    Args:
        spec: which file.
        path: an explicit file, or a directory that holds ``<subdir>/<filename>``
            or ``<filename>``. When given it must exist: no fallback is tried.
        download: whether step 4 (download into the cache) may run.

    Returns:
        Path to an existing file.

    Raises:
        DataError: the explicit path does not exist, or nothing was found and the
            download failed or did not match the checksum.
    """
    if path is not None:
        p = Path(path).expanduser()
        for cand in (p, p / spec.subdir / spec.filename, p / spec.filename):
            if cand.is_file():
                return cand
        raise DataError(f"data path {p} holds no {spec.subdir}/{spec.filename}")
    roots = [Path(os.environ[DATA_DIR_ENV]).expanduser()] if os.environ.get(DATA_DIR_ENV) else []
    roots += [Path(d) for d in spec.system_dirs]
    roots.append(cache_dir())
    for root in roots:
        for cand in (root / spec.subdir / spec.filename, root / spec.filename):
            if cand.is_file():
                return cand
    if not download or spec.url is None:
        raise DataError(
            f"{spec.subdir}/{spec.filename} not found under {', '.join(map(str, roots))}; "
            + (
                f"set ${DATA_DIR_ENV} or allow the download"
                if spec.url
                else f"it has no public download: set ${DATA_DIR_ENV}"
            )
        )
    return _download(spec, cache_dir() / spec.subdir / spec.filename)


def load_elec2(path: str | os.PathLike[str] | None = None, max_rows: int | None = None) -> Table:
    """Load Elec2 (Harries 1999, NSW electricity market, 30-minute periods) in time order.

    Columns ``period, nswprice, nswdemand, vicprice, vicdemand, transfer`` are the
    features (already scaled to [0, 1] by the source); ``class`` is the label:
    1 when the price went up relative to its 24 h moving average, else 0.

    Args:
        path: see :func:`find`.
        max_rows: keep only the first ``max_rows`` rows (a slice for tests).

    Returns:
        A :class:`Table` with ``features`` ``(n, 6)`` float32 and ``labels`` ``(n,)`` int64.

    Raises:
        DataError: the file is missing, or a column is missing or not numeric.

    Examples:
        >>> t = load_elec2(max_rows=10)  # doctest: +SKIP
        >>> t.features.shape  # doctest: +SKIP
        (10, 6)
    """
    file = find(ELEC2, path)
    try:
        tab = pacsv.read_csv(file)
    except pa.ArrowInvalid as exc:
        raise DataError(f"{file} is not a readable CSV: {exc}") from exc
    names = ("period", "nswprice", "nswdemand", "vicprice", "vicdemand", "transfer")
    missing = [c for c in (*names, "class") if c not in tab.column_names]
    if missing:
        raise DataError(f"{file} lacks columns {missing}; expected {[*names, 'class']}")
    if max_rows is not None:
        tab = tab.slice(0, max_rows)
    try:
        x = np.column_stack([tab[c].to_numpy().astype(np.float32) for c in names])
        y = tab["class"].to_numpy().astype(np.int64)
    except (ValueError, TypeError, pa.ArrowInvalid) as exc:
        raise DataError(f"{file} has a non-numeric value: {exc}") from exc
    return Table(features=x, labels=y, feature_names=names, num_classes=2)


@dataclass(frozen=True)
class Corpus:
    """Labelled raw texts in file order.

    Attributes:
        texts: one string per document.
        labels: ``(num_docs,)`` int64 class ids in ``[0, len(class_names))``.
        class_names: the topic of each class id, sorted alphabetically.
    """

    texts: tuple[str, ...]
    labels: np.ndarray
    class_names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.texts)


def load_bbc_news(path: str | os.PathLike[str] | None = None) -> Corpus:
    """Load BBC News (Greene & Cunningham 2006, "Practical solutions to the problem of diagonal
    dominance in kernel document clustering"): articles of 5 topics.

    Args:
        path: see :func:`find` (a directory holding ``bbc/bbc-text.csv``, or the file).

    Returns:
        A :class:`Corpus`; classes ``business, entertainment, politics, sport, tech``.

    Raises:
        DataError: the file is missing, lacks the ``category`` / ``text`` columns, or has an empty text.
    """
    file = find(BBC_NEWS, path)
    try:
        tab = pacsv.read_csv(file)
    except pa.ArrowInvalid as exc:
        raise DataError(f"{file} is not a readable CSV: {exc}") from exc
    missing = [c for c in ("category", "text") if c not in tab.column_names]
    if missing:
        raise DataError(f"{file} lacks columns {missing}; expected ['category', 'text']")
    cats = [str(c) for c in tab["category"].to_pylist()]
    texts = tuple(str(t or "") for t in tab["text"].to_pylist())
    empty = [i for i, t in enumerate(texts) if not t.strip()]
    if empty:
        raise DataError(f"{file} has {len(empty)} empty texts, first at row {empty[0]}")
    names = tuple(sorted(set(cats)))
    labels = np.array([names.index(c) for c in cats], dtype=np.int64)
    return Corpus(texts, labels, names)


def _read_idx(file: Path, magic: int) -> np.ndarray:
    """Read a gzipped IDX file (LeCun's MNIST format): big-endian magic, dims, then uint8 data."""
    with gzip.open(file, "rb") as fh:
        raw = fh.read()
    got = int.from_bytes(raw[:4], "big")
    if got != magic:
        raise DataError(f"{file} has IDX magic {got:#x}, expected {magic:#x}")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataError(f"{file} holds {data.size} values, its header says {dims}")
    return data.reshape(dims)


def load_fashion_mnist(path: str | os.PathLike[str] | None = None, split: str = "train") -> Table:
    """Load Fashion-MNIST (Xiao et al. 2017): 28x28 grey images of 10 kinds of clothing.

    Args:
        path: see :func:`find` (a directory holding ``fashion-mnist/<file>.gz``).
        split: ``"train"`` (60,000 images) or ``"test"`` (10,000).

    Returns:
        A :class:`Table` with ``features`` ``(n, 784)`` float32 in ``[0, 1]`` (rows of
        pixels) and ``labels`` ``(n,)`` int64 in ``[0, 10)``.

    Raises:
        ValueError: unknown split.
        DataError: a file is missing or malformed.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    prefix = "train" if split == "train" else "t10k"
    images = _read_idx(find(FASHION_MNIST[f"{prefix}-images-idx3-ubyte"], path), 0x803)
    labels = _read_idx(find(FASHION_MNIST[f"{prefix}-labels-idx1-ubyte"], path), 0x801)
    if len(images) != len(labels):
        raise DataError(f"{len(images)} images but {len(labels)} labels in the {split} split")
    x = images.reshape(len(images), -1).astype(np.float32) / 255.0
    return Table(x, labels.astype(np.int64), tuple(f"px{i}" for i in range(x.shape[1])), 10)
