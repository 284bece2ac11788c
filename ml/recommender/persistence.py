"""Saving and loading the recommender: numpy ``.npz`` (``allow_pickle=False``) and JSON, and MLflow.

`save`/`load` never pickle. `log_recommender` logs a saved model as an MLflow "model from
code" pyfunc (`ml.recommender.pyfunc`, logged as that file) with a signature (see
`ml.recommender.model.predict_frame` for the input and output columns); `load_recommender`
loads the version an alias points at.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ml.recommender.model import ItemItemRecommender, RecParams, predict_frame

if TYPE_CHECKING:
    from loopline.settings import Settings

FORMAT_VERSION = 1
ARTIFACT_KEY = "recommender"
# the MLflow model-from-code file, logged as source, never as a cloudpickle
PYFUNC_FILE = Path(__file__).with_name("pyfunc.py")


def save(model: ItemItemRecommender, path: Path) -> Path:
    """Write ``model`` into the folder ``path`` (created) as ``arrays.npz`` and ``model.json``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    np.savez(
        path / "arrays.npz",
        neighbour_idx=model.neighbour_idx,
        neighbour_sim=model.neighbour_sim,
        popularity=model.popularity,
    )
    meta = {
        "format_version": FORMAT_VERSION,
        "kind": "item_item",
        "show_ids": model.show_ids,
        "params": model.params.model_dump(mode="json"),
    }
    (path / "model.json").write_text(json.dumps(meta))
    return path


def load(path: Path) -> ItemItemRecommender:
    """Read a model written by `save`."""
    path = Path(path)
    meta = json.loads((path / "model.json").read_text())
    if meta.get("format_version") != FORMAT_VERSION or meta.get("kind") != "item_item":
        raise ValueError(f"{path} is not an item-item recommender of format {FORMAT_VERSION}")
    with np.load(path / "arrays.npz", allow_pickle=False) as arrays:
        idx, sim, pop = arrays["neighbour_idx"], arrays["neighbour_sim"], arrays["popularity"]
    model = ItemItemRecommender()
    # models saved before histories moved to dbt carry history_window_days and max_history,
    # which the feature set ``recs_user_history`` now defines: read only the current fields
    params = {k: v for k, v in meta["params"].items() if k in RecParams.model_fields}
    model.params = RecParams.model_validate(params)
    model._set_catalogue(meta["show_ids"], pop)
    model._set_neighbours(idx, sim)
    return model


def log_recommender(
    model: ItemItemRecommender,
    name: str,
    input_example: pd.DataFrame,
    registered_model_name: str | None = None,
    k: int = 10,
    pip_requirements: list[str] | None = None,
) -> Any:
    """Log ``model`` as a pyfunc in the active MLflow run; return the ``ModelInfo``.

    The signature is inferred from ``input_example`` and the model's output on it, with the
    param ``k``: an example whose ``history`` holds lists gives an ``Array(string)`` column
    (MLflow then rejects JSON strings), one holding JSON strings gives a ``string`` column. The caller starts the run (and may register via ``registered_model_name``).
    """
    import mlflow
    from mlflow.models import infer_signature

    output = predict_frame(model, input_example, k)
    with warnings.catch_warnings():
        # the hint is about integer *input* columns with missing values; ours are outputs
        warnings.filterwarnings("ignore", message=".*Inferred schema contains integer")
        signature = infer_signature(input_example, output, params={"k": k})
    with tempfile.TemporaryDirectory(prefix="loopline-recs-") as tmp:
        folder = save(model, Path(tmp) / ARTIFACT_KEY)
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=str(PYFUNC_FILE),
            pip_requirements=pip_requirements,
            artifacts={ARTIFACT_KEY: str(folder)},
            signature=signature,
            input_example=input_example,
            registered_model_name=registered_model_name,
        )


@dataclass(frozen=True)
class LoadedRecommender:
    """A registered recommender version, the in-memory model behind its pyfunc, and the
    ``recs_user_history`` version its histories are read from (None: the newest)."""

    version: str
    model: ItemItemRecommender
    history_version: str | None = None


def load_recommender(settings: Settings, alias: str) -> LoadedRecommender | None:
    """The recommender under `alias`, or None if there is none yet.

    The model is read from the version's npz/JSON artifacts, not through its pyfunc: the
    pyfunc's logged code imports this package by the module paths of the day it was logged,
    while the artifact format (`FORMAT_VERSION`) is what stays stable across versions.
    """
    import mlflow

    from ml.registry import RECS_MODEL, alias_version, configure, version_tags

    client = configure(settings)
    version = alias_version(client, RECS_MODEL, alias)
    if version is None:
        return None
    with tempfile.TemporaryDirectory(prefix="loopline-recs-") as tmp:
        root = mlflow.artifacts.download_artifacts(
            f"models:/{RECS_MODEL}/{version}/artifacts/{ARTIFACT_KEY}", dst_path=tmp
        )
        model = load(Path(root))
    tags = version_tags(client, RECS_MODEL, version)
    return LoadedRecommender(version, model, tags.get("history_feature_set_version") or None)
