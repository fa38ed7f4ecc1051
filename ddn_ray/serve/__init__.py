"""The Serve application: an HTTP endpoint answering with the latest model version.

Each replica loads the controller's latest version *before* it takes traffic (in its
async constructor), then long-polls the controller and swaps in each new version
between requests: a request reads ``(version, model)`` once, so it never sees a
half-loaded model, and every answer carries the version that produced it.

Endpoints (under the app's route prefix):

* ``POST /predict`` ``{"instances": [[f1, ..., fN], ...], "exit_threshold": 0.8}`` ->
  ``{"predictions": [...], "probabilities": [[...]], "model_version": v, "replica": id, "exits": [...],
  "macs": [...]}``: each row is answered by the first exit of a multi-exit model whose confidence exceeds the
  threshold (optional; default ``model.exit_threshold``; :mod:`ddn_ray.exits`), and says which exit and its
  multiply-accumulates (a model with one exit: exit 0, the whole network's MACs)
* ``POST /predict`` ``{"records": [{"amount": 1200, "region": "north"}, ...]}`` (models of a user's table,
  :mod:`ddn_ray.features`): the replica featurizes the named columns with the preprocessing state of the
  version it serves -> ``{"predictions": [class names], "class_ids": [...], "probabilities": [[...]],
  "ids": [...], "model_version": v, ...}`` (``ids``: the table's id column, when it has one); a missing or
  unknown column or a value of the wrong type is a 422 naming ``records[i].column``
* ``POST /predict`` ``{"columns": ["amount", "region"], "data": [[1200, "north"], ...]}``: the same rows in
  pandas' split orientation (``df.to_json(orient="split", index=False)``), the names sent once; the same
  answer, a 422 naming ``columns``, ``data[i]`` or ``data[i].column``
* ``GET /schema`` -> the columns a record takes, by kind, and the classes (also in ``/version`` and the OpenAPI)
* Routes a use case adds for its raw inputs (:class:`InputRoutes`, named by the input spec's ``routes``):
  the built-in ones (:mod:`ddn_ray.usecases.routes`) are ``POST /predict_images`` (base64 PNG files),
  ``/predict_text`` (raw texts), ``/predict_next_state`` (states and actions of a dynamics model) and
  ``/score_anomaly`` (a NAB series' recent values). A replica serves only the routes of its model's inputs.
* Regression models answer ``/predict`` with ``{"outputs": [[...]], "model_version": v, ...}``.
* ``GET /version`` -> ``{"model_version": v, "replica": id, "inputs": {...}}``
* Every route takes ``?min_version=v``: the replica holds the request until it serves version ``v`` or a newer
  one (read your own update: the version a publish returned), for up to ``version_wait_s``; then it answers with
  the version it serves, which the answer's ``model_version`` names (as a long-poll answers once its wait is up).
* Every route takes ``?min_window=w``: the replica holds the request until it knows that the trainer finished
  window ``w``, for up to ``version_wait_s``: a replica hears of the trainer's progress in the same long-poll
  reply as the version it made, so it answers from that version or a newer one. The main job sends each
  window's requests this way while the window before is still being learned: they wait in the replicas, and no
  call to the controller is between the publish and the answer. An answer held by either says for how long:
  ``Server-Timing: hold;dur=<ms>``.

With Serve's direct ingress (``serve.direct_ingress``, on by default for a cluster the main job starts:
:mod:`ddn_ray.serve.ingress`) each replica also answers every route on its own port of ``serve.host``, and the
job's traffic client sends there, past Serve's proxy; the proxy keeps ``serve.port`` for everyone else.

Malformed requests get 422 naming the field (bad JSON, non-numeric, NaN/Inf or past float32's range, wrong
width, empty, text breaking :func:`ddn_ray.guard.normalise_text`), 413 (more than ``max_batch_rows`` rows, or a
body over ``serve.max_body_bytes``, refused before it is parsed), 401 (a missing or wrong bearer token when
``serve.auth_token`` or ``$DDN_RAY_AUTH_TOKEN`` is set), or 400 (rows of numbers to a model of named records,
or the other way round). A model output that is not finite is a 500 that says so; the replica stays healthy.
"""

from ddn_ray.serve.app import AppArgs, Predictor, app_builder, build_app
from ddn_ray.serve.routes import InputRoutes, Replica, Served, current_replica
from ddn_ray.serve.schemas import (
    PredictRequest,
    PredictResponse,
    RecordsResponse,
    ValuesResponse,
    check_instances,
    error_detail,
    http_error,
)

__all__ = [
    "AppArgs",
    "InputRoutes",
    "PredictRequest",
    "PredictResponse",
    "Predictor",
    "RecordsResponse",
    "Replica",
    "Served",
    "ValuesResponse",
    "app_builder",
    "build_app",
    "check_instances",
    "current_replica",
    "error_detail",
    "http_error",
]
