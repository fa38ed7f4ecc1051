"""A client of the ddn_ray service, as another system would be one: it sends rows to ``/predict``, keeps each
answer's ``event_id``, and sends the labels to ``/feedback`` later (after a random delay, for only part of the
rows), as they become known. Copy it as the start of your own client.

    ddn-ray serve-learn --config jobs/configs/service.yaml            # in one shell
    python examples/service_client.py --url http://127.0.0.1:8000 \\
        --table ../shared/datasets/elec2/electricity.csv --label class --rows 2000   # in another
    curl -s http://127.0.0.1:8000/stats

The table is any file pyarrow reads (Parquet, CSV, JSON lines) with the service's feature columns and the label.
Requests that fail (the service restarting, a 5xx) are sent again; a label whose answer the service does not know
yet (its log is written a moment after the answer) is sent again a little later. ``--out`` writes one row per
answered row: its event id, the version and class that answered, the label, and what became of the feedback.
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import random
import threading
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import requests


def post(session: requests.Session, url: str, body: Any, deadline: float) -> requests.Response:
    """POST, retrying connection errors and 5xx answers until ``deadline`` (the service may be restarting)."""
    delay = 0.2
    while True:
        try:
            r = session.post(url, json=body, timeout=60)
            if r.status_code < 500:
                return r
            why = f"{r.status_code} {r.text[:200]}"
        except requests.RequestException as exc:
            why = repr(exc)
        if time.monotonic() > deadline:
            raise RuntimeError(f"POST {url} kept failing: {why}")
        time.sleep(delay)
        delay = min(2 * delay, 2.0)


class FeedbackSender(threading.Thread):
    """Sends each scheduled label when it is due, in batches; unknown ids are tried again a few times."""

    def __init__(self, url: str, deadline: float, retries: int = 10) -> None:
        super().__init__(daemon=True)
        self.url, self.deadline, self.retries = url + "/feedback", deadline, retries
        self.queue: list[tuple[float, int, str, Any, int]] = []  # (due, row, event id, label, tries)
        self.lock = threading.Lock()
        self.outcome: dict[int, str] = {}
        self.closed = False
        self.session = requests.Session()

    def schedule(self, due: float, row: int, event_id: str, label: Any, tries: int = 0) -> None:
        with self.lock:
            heapq.heappush(self.queue, (due, row, event_id, label, tries))

    def run(self) -> None:
        while True:
            now = time.monotonic()
            with self.lock:
                due = []
                while self.queue and self.queue[0][0] <= now and len(due) < 100:
                    due.append(heapq.heappop(self.queue))
                empty = not self.queue
            if not due:
                if empty and self.closed:
                    return
                time.sleep(0.05)
                continue
            r = post(self.session, self.url, [{"event_id": e, "label": y} for _, _, e, y, _ in due], self.deadline)
            if r.status_code not in (200, 404):
                raise RuntimeError(f"/feedback answered {r.status_code}: {r.text[:300]}")
            body = r.json()
            unknown, dup = set(body.get("unknown", [])), set(body.get("duplicate", []))
            late = {x["event_id"] for x in body.get("late", [])}
            for _, row, e, y, tries in due:
                if e in unknown and tries < self.retries:
                    self.schedule(time.monotonic() + 1.0, row, e, y, tries + 1)
                else:
                    self.outcome[row] = (
                        "unknown" if e in unknown else "late" if e in late else "duplicate" if e in dup else "joined"
                    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--table", required=True, help="rows to send: a Parquet, CSV or JSON-lines file")
    p.add_argument("--label", required=True, help="the label column (sent to /feedback, never to /predict)")
    p.add_argument("--rows", type=int, default=None, help="send at most this many rows")
    p.add_argument("--batch", type=int, default=20, help="rows per /predict request")
    p.add_argument("--rate", type=float, default=5.0, help="/predict requests per second")
    p.add_argument("--feedback-fraction", type=float, default=0.7, help="share of rows whose label is sent")
    p.add_argument(
        "--max-delay-s", type=float, default=2.0, help="a label is sent 0..this many seconds after its answer"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout-s", type=float, default=900.0, help="give up after this long")
    p.add_argument("--out", default=None, help="write one row per answered row here (Parquet)")
    args = p.parse_args(argv)

    deadline = time.monotonic() + args.timeout_s
    fmt = {".csv": "csv", ".json": "json", ".jsonl": "json"}.get(Path(args.table).suffix.lower(), "parquet")
    table = ds.dataset(args.table, format=fmt).to_table()
    if args.rows is not None:
        table = table.slice(0, args.rows)
    url = args.url.rstrip("/")
    session = requests.Session()
    schema = session.get(url + "/schema", timeout=60).json()
    columns = [*schema["numeric"], *schema["categorical"], *([schema["id"]] if schema.get("id") else [])]
    labels = table[args.label].to_pylist()
    rng = random.Random(args.seed)
    sender = FeedbackSender(url, deadline)
    sender.start()
    answered: list[dict[str, Any]] = []
    t0 = time.monotonic()
    for k, start in enumerate(range(0, table.num_rows, args.batch)):
        time.sleep(max(0.0, t0 + k / args.rate - time.monotonic()))
        chunk = table.slice(start, args.batch).select(columns).to_pylist()
        records = [{c: (None if isinstance(v, float) and math.isnan(v) else v) for c, v in r.items()} for r in chunk]
        r = post(session, url + "/predict", {"records": records}, deadline)
        if r.status_code != 200:
            raise RuntimeError(f"/predict answered {r.status_code}: {r.text[:300]}")
        body = r.json()
        for i, eid in enumerate(body["event_ids"]):
            row = start + i
            answered.append(
                {
                    "row": row,
                    "event_id": eid,
                    "model_version": body["model_version"],
                    "replica": body["replica"],
                    "predicted": json.dumps(body["predictions"][i]),
                    "label": json.dumps(labels[row]),
                    "sent_at_s": time.time(),
                }
            )
            if rng.random() < args.feedback_fraction:
                sender.schedule(time.monotonic() + rng.uniform(0, args.max_delay_s), row, eid, labels[row])
    sender.closed = True
    sender.join(max(0.0, deadline - time.monotonic()))
    for a in answered:
        a["feedback"] = sender.outcome.get(a["row"], "not sent")
    correct = [json.loads(a["predicted"]) == json.loads(a["label"]) for a in answered]
    summary = {
        "rows_answered": len(answered),
        "feedback": {
            k: sum(a["feedback"] == k for a in answered) for k in ("joined", "unknown", "duplicate", "late", "not sent")
        },
        "served_accuracy": sum(correct) / max(1, len(correct)),
        "versions": [answered[0]["model_version"], answered[-1]["model_version"]] if answered else None,
        "wall_s": time.monotonic() - t0,
    }
    if args.out:
        pq.write_table(pa.Table.from_pylist(answered), args.out)
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
