"""A real producer writing parquet files while the main job follows the landing directory.

    python examples/landing_dir.py [--rows 6000] [--rows-per-file 250] [--interval-s 0.2]

The producer thread replays Elec2 as files ``part-00000000.parquet, ...`` (written
atomically: temp name, then rename); the job reads them as they land, cuts windows,
serves, trains, and stops ``stream.idle_timeout_s`` after the last file.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ddn_ray import config, stream
from ddn_ray.usecases import datasets


def produce(directory: Path, rows: int, rows_per_file: int, interval_s: float) -> None:
    table = datasets.load_elec2(max_rows=rows)
    for seq, start in enumerate(range(0, len(table), rows_per_file)):
        end = start + rows_per_file
        stream.write_landing_file(directory, seq, table.features[start:end], table.labels[start:end])
        time.sleep(interval_s)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=6000)
    parser.add_argument("--rows-per-file", type=int, default=250)
    parser.add_argument("--interval-s", type=float, default=0.2)
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "jobs"))
    import continuous  # the main job's recipe

    landing = Path(tempfile.mkdtemp(prefix="ddn_ray_landing_"))
    producer = threading.Thread(target=produce, args=(landing, args.rows, args.rows_per_file, args.interval_s), daemon=True)
    producer.start()
    overrides = config.parse_overrides(
        ["stream.source=landing_dir", f"stream.landing_dir={landing}", "stream.idle_timeout_s=5", *args.set]
    )
    report = continuous.main(config.load(ROOT / "jobs" / "configs" / "elec2_builtin.yaml", overrides))
    producer.join()
    return report


if __name__ == "__main__":
    main()
