"""Use case: text classification with topic drift on BBC News (Greene & Cunningham 2006).

Serve replicas answer raw text over HTTP (``/predict_text``) and featurize it as the stream
did. Two scenarios (``ddn_ray.usecases.scenarios``): topics arriving one at a time
(``topic_incremental``) and a shifting topic mix (``topic_shift``). Two models: an MLP on
hashed word 1-2-grams learned from scratch, and transfer learning: a frozen pretrained
sentence encoder (all-MiniLM-L6-v2, from the ``[text]`` extra) with an MLP head fine-tuned on
the stream at a lower learning rate. Every run also scores the static model, frozen after the
first ``report.static_windows`` windows.

Run:  python jobs/bbc_news.py [--variants topic_shift/hashing,...] [--set data.max_rows=400 ...]
Writes runs/bbc_news/summary.{md,json} and accuracy.png, and each run's own report.
"""

from __future__ import annotations

from typing import Any

import usecase

TRANSFER = ["data.options.text_features=minilm", "train.lr=0.001"]
VARIANTS: dict[str, list[str]] = {
    "topic_incremental/hashing": ["data.scenario=topic_incremental"],
    "topic_incremental/minilm": ["data.scenario=topic_incremental", *TRANSFER],
    "topic_shift/hashing": ["data.scenario=topic_shift"],
    "topic_shift/minilm": ["data.scenario=topic_shift", *TRANSFER],
}


def cli(argv: list[str] | None = None) -> dict[str, Any]:
    return usecase.cli("bbc_news", __doc__, VARIANTS, argv)


if __name__ == "__main__":
    cli()
