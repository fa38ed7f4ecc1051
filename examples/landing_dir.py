"""A real producer writing parquet files of a user's columns while the main job follows the landing directory.

    python examples/landing_dir.py [--rows 6000] [--rows-per-file 250] [--interval-s 0.2] [--set SECTION.FIELD=VALUE]

The producer thread replays Elec2's CSV (the file ``jobs/configs/elec2.yaml`` names, with its own
columns: ``period``, ``nswprice``, ..., ``class``) as parquet files ``part-00000.parquet, ...``, each
written as a producer should (to a dot name, then renamed). The main job runs ``elec2.yaml`` with
``data.source`` a landing dir: it reads each file as it lands, cuts windows, serves named columns over
HTTP, trains, and ends ``data.source.idle_timeout_s`` after the last file.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ddn_ray import config, sources

CONFIG = ROOT / "jobs" / "configs" / "elec2.yaml"


def produce(uri: str, directory: Path, rows: int, rows_per_file: int, interval_s: float) -> None:
    """Write the first ``rows`` rows of the table at ``uri`` into ``directory``, ``rows_per_file`` a file."""
    fs, files, _ = sources.resolve(uri)
    with fs.open_input_stream(files[0]) as f:
        table = pacsv.read_csv(f).slice(0, rows)
    for seq, start in enumerate(range(0, table.num_rows, rows_per_file)):
        part = directory / f".part-{seq:05d}.parquet"
        pq.write_table(table.slice(start, rows_per_file), part)
        part.rename(directory / part.name[1:])
        time.sleep(interval_s)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=6000)
    parser.add_argument("--rows-per-file", type=int, default=250)
    parser.add_argument("--interval-s", type=float, default=0.2)
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "jobs"))
    import continuous  # the main job's recipe

    raw = yaml.safe_load(CONFIG.read_text())
    uri = raw["data"]["source"]["uri"]
    landing = Path(tempfile.mkdtemp(prefix="ddn_ray_landing_"))
    raw["data"]["source"] = {"kind": "landing_dir", "path": str(landing), "poll_interval_s": 0.2, "idle_timeout_s": 5}
    cfg = config.load(overrides=config.merge(raw, config.parse_overrides(args.set)))
    producer = threading.Thread(
        target=produce, args=(uri, landing, args.rows, args.rows_per_file, args.interval_s), daemon=True
    )
    producer.start()
    report = continuous.main(cfg)
    producer.join()
    return report


if __name__ == "__main__":
    main()
