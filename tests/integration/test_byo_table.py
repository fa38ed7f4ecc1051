"""Bring your own data: ``ddn-ray run --config`` on tables no loader knows, written by the tests.

One classification run on a drifting CSV (numeric and string columns, missing values, string
labels, bad rows, shuffled file order) is shared by the tests that check its report, its HTTP
answers from a checkpoint, and its resume; a regression table runs with a user's model builder;
a landing directory receives parquet files while the job runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import requests
import yaml
from ray import serve

from ddn_ray import checkpoint as checkpoint_io
from ddn_ray import cli
from ddn_ray.serve import app_builder
from tests.integration import byo_streams
from tests.integration.session_ports import SERVE_PORT

ROWS, FIRST_RUN_ROWS, WINDOW = 3000, 2000, 100
# Offsets (after ordering) of rows the stream must quarantine: an unknown class, and a whole window
# (12) of missing labels, which is neither served nor trained and must not stall the stream.
BAD_LABELS = {150: "maybe", **dict.fromkeys(range(1200, 1300))}


def _write_config(path: Path, data: dict[str, Any], tmp: Path, **sections: Any) -> Path:
    cfg = {
        "run_name": sections.pop("run_name"),
        "storage_path": str(tmp / "storage"),
        "data": data,
        "stream": {"window_size": WINDOW},
        "serve": {"port": SERVE_PORT, "num_replicas": 1},
        "report": {"output_dir": str(tmp / "runs"), "static_windows": 5},
        **sections,
    }
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _run(config: Path, *overrides: str) -> dict[str, Any]:
    sets = [a for o in overrides for a in ("--set", o)]
    return cli.main(["run", "--config", str(config), *sets])


@pytest.fixture(scope="module")
def loans(ray_cluster, tmp_path_factory) -> dict[str, Any]:
    """A 3,000-row loans CSV in shuffled order (``order_by: created_at`` restores it); drift at row 1,000;
    the first run streams 2,000 rows and checkpoints every 10 windows."""
    tmp = tmp_path_factory.mktemp("loans")
    table = byo_streams.loans(ROWS, seed=3, drift_at=1 / 3)
    labels = table["defaulted"].to_pylist()
    for offset, label in BAD_LABELS.items():
        labels[offset] = label
    table = table.set_column(table.schema.get_field_index("defaulted"), "defaulted", pa.array(labels, pa.string()))
    shuffled = table.take(np.random.default_rng(0).permutation(ROWS))
    pacsv.write_csv(shuffled, tmp / "loans.csv")
    data = {
        "source": {"kind": "table", "uri": str(tmp / "loans.csv")},
        "features": ["amount", "term_months", "region", "channel"],
        "categorical": ["region", "channel"],
        "label": "defaulted",
        "classes": ["no", "yes"],
        "order_by": "created_at",
        "id": "loan_id",
    }
    config = _write_config(tmp / "loans.yaml", data, tmp, run_name="loans", train={"checkpoint_every_windows": 10})
    report = _run(config, f"data.max_rows={FIRST_RUN_ROWS}")
    return {"tmp": tmp, "config": config, "report": report, "table": table}


def test_loans_csv_runs_end_to_end_and_beats_static(loans) -> None:
    report = loans["report"]
    run = report["run"]
    assert run["windows"] == FIRST_RUN_ROWS // WINDOW - 1 and run["versions_published"] == run["windows"]
    assert 12 not in [w for w, _, _ in run["window_versions"]]
    assert report["http"]["failed"] == 0 and report["http"]["requests"] > 0
    # The bad labels were quarantined with their offsets and reasons, never served nor trained on.
    assert run["rows_quarantined"] == len(BAD_LABELS) == 101
    quarantined = dict(run["quarantined"])  # the first 100
    assert list(quarantined) == sorted(BAD_LABELS)[:100]
    assert "not in the declared classes" in quarantined[150] and quarantined[1200] == "missing label defaulted"
    assert run["rows_served"] == run["rows_trained"] == FIRST_RUN_ROWS - len(BAD_LABELS)
    scores = report["scores"]
    assert scores["dynamic (served)"]["accuracy"] > scores["static (frozen after training)"]["accuracy"] + 0.1
    assert scores["dynamic (served)"]["accuracy"] > scores["no-change (same label delay)"]["accuracy"] + 0.1
    data = report["data"]
    assert data["classes"] == ["no", "yes"] and data["vocabulary_sizes"] == {"region": 4, "channel": 3}
    assert data["rows_fitted"] == run["rows_served"]
    # order_by restored the creation order; the id column went through every request and into the report.
    ids = np.load(Path(report["files"]["predictions"]), allow_pickle=False)["id"]
    expected = [i for o, i in enumerate(loans["table"]["loan_id"].to_pylist()[:FIRST_RUN_ROWS]) if o not in BAD_LABELS]
    assert ids.tolist() == expected
    # The console script re-renders the report from the run directory alone, and exits 0.
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "ddn-ray"),
            "report",
            "--no-write",
            str(Path(report["files"]["report"]).parent),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"{report['scores']['dynamic (served)']['accuracy']:.2%}" in done.stdout


@pytest.fixture(scope="module")
def checkpoint_app(loans) -> tuple[str, str]:
    """The first run's last checkpoint, served alone over HTTP (``ddn_ray.serve:app_builder``)."""
    metas = list(Path(loans["tmp"], "storage", "loans").glob("checkpoint_*/meta.json"))
    last = max(metas, key=lambda p: json.loads(p.read_text())["next_offset"]).parent
    serve.run(app_builder({"checkpoint": str(last)}), name="byo_ckpt", route_prefix="/byo")
    yield f"http://127.0.0.1:{SERVE_PORT}/byo", str(last)
    serve.delete("byo_ckpt")


def _record(**over: Any) -> dict[str, Any]:
    return {"loan_id": "new-1", "amount": 3100.0, "term_months": 36, "region": "north", "channel": "web", **over}


def test_checkpoint_serves_named_records_with_class_names_and_ids(checkpoint_app) -> None:
    url, last = checkpoint_app
    records = [_record(), _record(loan_id="new-2", amount=None, region="atlantis")]  # missing value, unseen category
    r = requests.post(f"{url}/predict", json={"records": records}, timeout=10)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["ids"] == ["new-1", "new-2"] and set(body["predictions"]) <= {"no", "yes"}
    assert all(abs(sum(p) - 1.0) < 1e-5 for p in body["probabilities"])
    version, _, meta = checkpoint_io.read(last)
    assert body["model_version"] == version
    # The replica featurizes with the checkpoint's state: its vocabularies, not refitted on requests.
    state = meta["preprocessing"]
    assert sorted(state["vocabularies"]["region"]) == sorted(byo_streams.REGIONS)
    schema = requests.get(f"{url}/schema", timeout=10).json()
    assert schema["classes"] == ["no", "yes"] and set(schema["numeric"]) == {"amount", "term_months"}
    assert requests.get(f"{url}/version", timeout=10).json()["schema"]["categorical"] == ["region", "channel"]
    api = requests.get(f"{url}/openapi.json", timeout=10).json()
    assert "Record" in api["components"]["schemas"]
    columns = api["components"]["schemas"]["PredictRequest"]["properties"]["columns"]["anyOf"][0]["items"]
    assert set(columns["enum"]) == {"amount", "term_months", "region", "channel", "loan_id"}
    # The same rows in pandas' split orientation (names once, any column order): the same answer.
    names = ["region", "loan_id", "channel", "term_months", "amount"]
    split = requests.post(
        f"{url}/predict", json={"columns": names, "data": [[r[c] for c in names] for r in records]}, timeout=10
    )
    assert split.status_code == 200, split.text
    assert {k: v for k, v in split.json().items() if k != "replica"} == {
        k: v for k, v in body.items() if k != "replica"
    }


@pytest.mark.parametrize(
    "bad,status,needle",
    [
        ({"records": [_record(), {k: v for k, v in _record().items() if k != "region"}]}, 422, "records[1].region"),
        ({"records": [_record(amount="1200")]}, 422, "records[0].amount"),
        ({"records": [_record(colour="red")]}, 422, "records[0].colour"),
        ({"records": [_record(), 7]}, 422, '"records",1'),
        ({"records": []}, 422, "records"),
        ({"columns": ["amount", "region"], "data": [[1.0, "north"]]}, 422, "columns: missing column"),
        ({"columns": list(_record()), "data": [list(_record().values()), [1.0]]}, 422, "data[1]"),
        ({"columns": list(_record()), "data": [list(_record(amount="1200").values())]}, 422, "data[0].amount"),
        ({"columns": list(_record())}, 422, "'data' is missing"),
        ({"columns": list(_record()), "data": [list(_record().values())], "records": [_record()]}, 422, "exactly one"),
    ],
)
def test_bad_records_are_422_naming_row_and_column_and_replica_stays_up(checkpoint_app, bad, status, needle) -> None:
    url, _ = checkpoint_app
    r = requests.post(f"{url}/predict", json=bad, timeout=10)
    assert r.status_code == status, r.text
    assert needle in r.text
    assert requests.post(f"{url}/predict", json={"records": [_record()]}, timeout=10).status_code == 200


def test_resumed_run_keeps_the_vocabularies_and_scaling(loans) -> None:
    first = loans["report"]
    again = _run(loans["config"], f"data.max_rows={ROWS}")
    # Resumed at the last checkpoint (window 20, offset 2,000), with its featurizer state:
    # rows fitted keep counting from the first run's, and no class or category was re-learned.
    assert again["run"]["window_versions"][0][0] == FIRST_RUN_ROWS // WINDOW
    # its report covers every row once: the first run's answers before the checkpoint, its own after
    a, b = again["run"]["attempts"]
    assert b["first_offset"] == FIRST_RUN_ROWS and b["rows"] == ROWS - FIRST_RUN_ROWS
    assert a["rows"] == first["run"]["rows_served"] and again["run"]["rows_served"] == a["rows"] + b["rows"]
    assert again["data"]["rows_fitted"] == first["data"]["rows_fitted"] + b["rows"]
    assert again["data"]["vocabulary_sizes"] == first["data"]["vocabulary_sizes"]
    assert again["scores"]["dynamic (served)"]["accuracy"] > 0.75


def test_regression_table_with_a_user_model_builder_on_two_workers(ray_cluster, tmp_path) -> None:
    pq.write_table(byo_streams.demand(1500), tmp_path / "demand.parquet")
    data = {
        "source": {"kind": "table", "uri": f"file://{tmp_path}/demand.parquet"},
        "features": ["price", "promo"],
        "label": "units",
    }  # promo: categorical from its string type
    model = {
        "task": "regression",
        "builder": "tests.integration.user_models:residual_mlp",
        "options": {"width": 24, "blocks": 2},
    }
    config = _write_config(
        tmp_path / "demand.yaml", data, tmp_path, run_name="demand", model=model, train={"num_workers": 2}
    )  # two DDP ranks, each trained on its shard of every window
    report = _run(config)
    assert report["run"]["windows"] == 15 and report["http"]["failed"] == 0
    assert report["run"]["rows_trained"] == report["run"]["rows_served"] == 1500
    assert report["data"]["categorical"] == ["promo"] and report["data"]["numeric"] == ["price"]
    scores = report["scores"]
    # The slope turns gradually: the learning model keeps up, the frozen one drifts away.
    assert scores["dynamic (served)"]["mse"] < 0.5 * scores["static (frozen after training)"]["mse"]
    ckpt = max(Path(tmp_path, "storage", "demand").glob("checkpoint_*/meta.json")).parent
    _, weights, meta = checkpoint_io.read(str(ckpt))
    assert meta["model"]["builder"] == "tests.integration.user_models:residual_mlp"
    assert any(k.startswith("body.2.fc") for k in weights)  # the user's residual blocks were trained and saved


def test_landing_dir_receives_parquet_files_while_the_job_runs(ray_cluster, tmp_path) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    table = byo_streams.loans(1200, seed=5, drift_at=0.5)
    done = threading.Event()

    def produce() -> None:  # six files of 200 rows, written as a producer would: to a dot name, then renamed
        for i in range(6):
            part = table.slice(200 * i, 200)
            pq.write_table(part, landing / f".part-{i:03d}.parquet")
            (landing / f".part-{i:03d}.parquet").rename(landing / f"part-{i:03d}.parquet")
            if i == 2:  # files the job cannot read: quarantined, listed, and the stream goes on
                raw = (landing / "part-002.parquet").read_bytes()
                (landing / "part-002b.parquet").write_bytes(raw[: len(raw) // 2])  # truncated
                pq.write_table(part.drop_columns(["amount"]), landing / "part-002c.parquet")  # wrong schema
                (landing / "part-002d.xlsx").write_bytes(b"PK\x03\x04")  # a format it does not read
            time.sleep(1.0)
        done.set()

    producer = threading.Thread(target=produce, daemon=True)
    data = {
        "source": {"kind": "landing_dir", "path": str(landing), "poll_interval_s": 0.2, "idle_timeout_s": 6.0},
        "features": ["amount", "term_months", "region", "channel"],
        "categorical": ["region", "channel"],
        "label": "defaulted",
        "allow_new_classes": True,
        "id": "loan_id",
    }  # classes learned as they appear
    config = _write_config(tmp_path / "landing.yaml", data, tmp_path, run_name="landing")
    producer.start()
    report = _run(config)
    producer.join(timeout=30)
    assert done.is_set()
    assert report["data"]["files_read"] == 6 and report["run"]["rows_served"] == 1200
    reasons = dict(report["run"]["files_quarantined"])
    assert sorted(Path(f).name for f in reasons) == ["part-002b.parquet", "part-002c.parquet", "part-002d.xlsx"]
    assert "missing column 'amount'" in reasons[str(landing / "part-002c.parquet")]
    assert "unknown format" in reasons[str(landing / "part-002d.xlsx")]
    assert report["run"]["windows"] == 12 and report["http"]["failed"] == 0
    assert sorted(report["data"]["classes"]) == ["no", "yes"]


def test_a_file_without_a_feature_column_stops_at_start_naming_file_and_column(ray_cluster, tmp_path) -> None:
    from ddn_ray.errors import DataError

    good = byo_streams.loans(300, seed=1)
    pacsv.write_csv(good, tmp_path / "a.csv")
    pacsv.write_csv(good.drop_columns(["channel"]), tmp_path / "b.csv")
    data = {
        "source": {"kind": "table", "uri": str(tmp_path / "*.csv")},
        "features": ["amount", "region", "channel"],
        "label": "defaulted",
        "classes": ["no", "yes"],
    }
    config = _write_config(tmp_path / "bad.yaml", data, tmp_path, run_name="bad")
    with pytest.raises(DataError, match=r"b\.csv: missing column 'channel'"):
        _run(config)
    assert not (tmp_path / "storage" / "bad").exists()  # refused before Ray Train started


def test_a_stream_whose_every_row_is_bad_fails_with_the_reasons_and_trains_on_nothing(ray_cluster, tmp_path) -> None:
    from ddn_ray.errors import DataError

    table = byo_streams.loans(300, seed=2)
    table = table.set_column(table.schema.get_field_index("defaulted"), "defaulted", pa.array(["maybe"] * 300))
    pq.write_table(table, tmp_path / "all_bad.parquet")
    data = {
        "source": {"kind": "table", "uri": str(tmp_path / "all_bad.parquet")},
        "features": ["amount", "region"],
        "label": "defaulted",
        "classes": ["no", "yes"],
    }
    config = _write_config(tmp_path / "all_bad.yaml", data, tmp_path, run_name="all_bad")
    with pytest.raises(
        DataError, match=r"every row of the stream was quarantined \(300 rows\), e.g. offset 0: label not"
    ):
        _run(config)


def test_a_users_use_case_module_runs_the_main_job_with_its_own_settings(ray_cluster, tmp_path) -> None:
    """``data.name`` names a user's UseCase by ``module:attribute``; ``data.options`` are its own settings. The
    main job streams it, serves it over HTTP and reports its extras, as it does for the built-in use cases."""
    data = {
        "name": "tests.integration.byo_streams:FLIP",
        "scenario": "flip",
        "options": {"num_rows": 1000, "flip_at": 500},
    }  # the label flips where the static model is frozen
    report = _run(_write_config(tmp_path / "flip.yaml", data, tmp_path, run_name="flip", policy={"name": "all"}))
    run = report["run"]
    assert run["rows_served"] == 1000 and report["http"]["failed"] == 0 and report["http"]["requests"] > 0
    assert run["traffic_route"] == "/predict"
    assert report["flip"] == {"rows_after_flip": 500}  # the use case's report extras, from its own options
    after = {p["phase"]: p for p in report["phases"]}[1]
    # After the flip the frozen model answers the inverted concept; the learning one turns with it.
    assert after["dynamic"] > after["static"] + 0.5, report["phases"]
