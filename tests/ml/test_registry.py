"""The promotion rule (pure) and the registry moves it drives, on a real MLflow store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sklearn.linear_model import LogisticRegression

from loopline.settings import Settings
from ml.registry import (
    CHALLENGER,
    CHAMPION,
    CHURN_MODEL,
    DESCRIPTION_TAG,
    EXPERIMENT_DESCRIPTIONS,
    MODEL_DESCRIPTIONS,
    RECS_MODEL,
    PromotionPolicy,
    RegistryError,
    alias_version,
    apply_decision,
    champion_history,
    configure,
    decide,
    describe_registered_model,
    experiment_for,
    model_requirements,
    record_decision,
    rollback,
)
from tests.conftest import query

POLICY = PromotionPolicy(gate={"roc_auc": 0.6}, compare_on="roc_auc", margin=0.01)


def _decide(auc: float, champion_auc: float | None, failures: list[str] | None = None):
    return decide(
        "m", "2", POLICY, {"roc_auc": auc, "brier": 0.1}, failures or [],
        None if champion_auc is None and failures is None else "1",
        None if champion_auc is None else {"roc_auc": champion_auc, "brier": 0.1},
    )  # fmt: skip


def test_first_version_passing_the_gate_is_promoted() -> None:
    decision = decide("m", "1", POLICY, {"roc_auc": 0.7}, [], None, None)
    assert decision.promoted and decision.action == "promoted"
    assert "no champion" in decision.reason


def test_gate_failure_is_never_promoted_even_without_champion() -> None:
    decision = decide(
        "m", "1", POLICY, {"roc_auc": 0.55}, ["roc_auc=0.55 is below 0.6"], None, None
    )
    assert not decision.promoted and decision.action == "kept"
    assert "quality gate" in decision.reason and not decision.gate_passed


def test_challenger_must_beat_champion_by_the_margin() -> None:
    assert not _decide(0.805, 0.80).promoted  # better, but within the margin
    assert not _decide(0.75, 0.80).promoted  # worse
    better = _decide(0.82, 0.80)
    assert better.promoted and better.champion_version == "1"
    assert better.champion_value == pytest.approx(0.80)
    assert "beats champion v1" in better.reason


def test_lower_is_better_metrics_compare_downwards() -> None:
    policy = PromotionPolicy(gate={}, compare_on="brier", margin=0.005)
    worse = decide("m", "2", policy, {"brier": 0.12}, [], "1", {"brier": 0.10})
    better = decide("m", "2", policy, {"brier": 0.09}, [], "1", {"brier": 0.10})
    assert not worse.promoted and better.promoted


def test_champion_that_cannot_score_the_holdout_is_replaced_if_gate_passes() -> None:
    decision = decide("m", "2", POLICY, {"roc_auc": 0.7}, [], "1", None)
    assert decision.promoted and "cannot be scored fairly" in decision.reason


def test_unknown_compare_metric_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="compare_on"):
        decide("m", "1", PromotionPolicy(compare_on="auc"), {"roc_auc": 0.7}, [], None, None)


def _registered(tmp_path: Path, name: str, versions: int):
    """A real MLflow store with `versions` registered versions of a tiny model `name`."""
    import mlflow

    settings = Settings(data_dir=tmp_path / "data")
    client = configure(settings)
    experiment = experiment_for(settings, name)
    model = LogisticRegression().fit([[0.0], [1.0], [2.0], [3.0]], [0, 0, 1, 1])
    for _ in range(versions):
        with mlflow.start_run(experiment_id=experiment):
            mlflow.sklearn.log_model(
                model, name="model", registered_model_name=name,
                pip_requirements=model_requirements(),
            )  # fmt: skip
    return settings, client


@pytest.fixture
def registry(tmp_path: Path):
    """A real MLflow store with three registered versions of a tiny model."""
    return _registered(tmp_path, "tiny", 3)


def test_aliases_history_and_rollback_follow_the_decisions(registry) -> None:
    settings, client = registry
    first = decide("tiny", "1", POLICY, {"roc_auc": 0.7}, [], None, None)
    apply_decision(client, first)
    assert alias_version(client, "tiny", CHAMPION) == "1"
    assert alias_version(client, "tiny", CHALLENGER) == "1"

    worse = decide("tiny", "2", POLICY, {"roc_auc": 0.69}, [], "1", {"roc_auc": 0.7})
    apply_decision(client, worse)
    assert alias_version(client, "tiny", CHAMPION) == "1"
    assert alias_version(client, "tiny", CHALLENGER) == "2"
    tags = client.get_model_version("tiny", "2").tags
    assert tags["decision.action"] == "kept"
    assert tags["decision.champion_value"] == "0.700000"
    assert "does not beat" in client.get_model_version("tiny", "2").description

    better = decide("tiny", "3", POLICY, {"roc_auc": 0.8}, [], "1", {"roc_auc": 0.7})
    apply_decision(client, better)
    assert alias_version(client, "tiny", CHAMPION) == "3"
    assert champion_history(client, "tiny") == ["1", "3"]

    back = rollback(client, "tiny")
    assert back.version == "1" and back.action == "rollback"
    assert alias_version(client, "tiny", CHAMPION) == "1"
    assert champion_history(client, "tiny") == ["1"]
    one = client.get_model_version("tiny", "1").tags
    assert one["decision.action"] == "promoted"  # its own decision is kept
    assert one["rollback.reason"] == "rolled back from v3"
    assert "rollback.demoted_at" in client.get_model_version("tiny", "3").tags
    with pytest.raises(RegistryError, match="no previous champion"):
        rollback(client, "tiny")

    for decision in (first, worse, better, back):
        record_decision(settings, decision)
    rows = query(
        settings,
        "select version, action, promoted, champion_version, gate_failures "
        "from ml.model_decisions order by decided_at",
    )
    assert [r[:3] for r in rows] == [
        ("1", "promoted", True), ("2", "kept", False), ("3", "promoted", True),
        ("1", "rollback", True),
    ]  # fmt: skip
    assert json.loads(rows[0][4]) == []


def test_cli_rollback_moves_the_champion_at_once_and_names_who_delays_its_record(
    tmp_path: Path,
) -> None:
    """`loopline promote --rollback` while another process writes the warehouse: @champion
    moves (and says so) before the decision's record waits for the writer lock, the wait
    names the holder, and the record lands once the lock is free."""
    import os
    import subprocess
    import sys

    from loopline.warehouse import writing

    settings, client = _registered(tmp_path, CHURN_MODEL, 2)
    apply_decision(client, decide(CHURN_MODEL, "1", POLICY, {"roc_auc": 0.7}, [], None, None))
    apply_decision(
        client, decide(CHURN_MODEL, "2", POLICY, {"roc_auc": 0.8}, [], "1", {"roc_auc": 0.7})
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPLINE_")}
    env |= {"LOOPLINE_DATA_DIR": str(settings.data_dir), "LOOPLINE_PROGRESS": "log"}
    with writing(settings):  # this test process holds the writer lock
        cli = subprocess.Popen(
            [sys.executable, "-m", "loopline.cli", "promote", "--rollback"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        assert cli.stdout is not None
        seen: list[str] = []
        for line in cli.stdout:
            seen.append(line)
            if "waiting for the warehouse" in line:
                break
        assert any("@champion is v1 again" in line for line in seen), seen
        assert alias_version(client, CHURN_MODEL, CHAMPION) == "1"
        assert f"pid {os.getpid()}" in seen[-1], seen
    rest, _ = cli.communicate(timeout=120)
    assert cli.returncode == 0, "".join(seen) + rest
    assert "recorded in ml.model_decisions" in rest
    assert query(settings, "select version, action from ml.model_decisions") == [("1", "rollback")]


def test_experiments_and_registered_models_carry_descriptions(tmp_path: Path) -> None:
    """Created with one, given one if made before descriptions existed, a hand-written one
    kept; read back from a real MLflow store."""
    import mlflow

    settings = Settings(data_dir=tmp_path / "data")
    client = configure(settings)
    churn = experiment_for(settings, CHURN_MODEL)
    assert (
        client.get_experiment(churn).tags[DESCRIPTION_TAG] == EXPERIMENT_DESCRIPTIONS[CHURN_MODEL]
    )
    older = mlflow.create_experiment(RECS_MODEL)  # a store from before descriptions
    assert DESCRIPTION_TAG not in client.get_experiment(older).tags
    assert experiment_for(settings, RECS_MODEL) == older
    assert client.get_experiment(older).tags[DESCRIPTION_TAG] == EXPERIMENT_DESCRIPTIONS[RECS_MODEL]
    client.set_experiment_tag(churn, DESCRIPTION_TAG, "written in the UI")
    experiment_for(settings, CHURN_MODEL)
    assert client.get_experiment(churn).tags[DESCRIPTION_TAG] == "written in the UI"

    client.create_registered_model(CHURN_MODEL)
    describe_registered_model(client, CHURN_MODEL)
    assert client.get_registered_model(CHURN_MODEL).description == MODEL_DESCRIPTIONS[CHURN_MODEL]
    client.update_registered_model(CHURN_MODEL, description="written in the UI")
    describe_registered_model(client, CHURN_MODEL)
    assert client.get_registered_model(CHURN_MODEL).description == "written in the UI"


# -- loading: a tampered artifact never runs code ----------------------------------------------


class _WritesMarker:
    """Unpickling this opens (creates) the marker file: proof that the pickle ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (open, (str(self.marker), "w"))


def _log_churn_like(settings: Settings) -> str:
    """Register a small skops-serialised calibrated pipeline as the churn champion."""
    import mlflow
    import numpy as np
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from ml.registry import SKOPS_TRUSTED_TYPES

    rng = np.random.default_rng(3)
    x = rng.normal(size=(60, 2))
    y = (x[:, 0] > 0).astype(int)
    model = CalibratedClassifierCV(make_pipeline(StandardScaler(), LogisticRegression()), cv=2)
    client = configure(settings)
    with mlflow.start_run(experiment_id=experiment_for(settings, CHURN_MODEL)):
        info = mlflow.sklearn.log_model(
            model.fit(x, y), name="model", serialization_format="skops",
            skops_trusted_types=SKOPS_TRUSTED_TYPES, registered_model_name=CHURN_MODEL,
        )  # fmt: skip
    version = str(info.registered_model_version)
    client.set_registered_model_alias(CHURN_MODEL, CHAMPION, version)
    return version


def _model_folders(settings: Settings) -> list[Path]:
    return [p.parent for p in (settings.data_dir / "mlflow").rglob("MLmodel")]


def test_a_churn_artifact_switched_to_cloudpickle_is_refused_and_never_unpickled(tmp_path):
    import pickle

    import mlflow

    from ml.registry import UnsafeArtifactError, load_sklearn_version

    settings = Settings(data_dir=tmp_path / "data")
    version = _log_churn_like(settings)
    assert type(load_sklearn_version(CHURN_MODEL, version)).__name__ == "CalibratedClassifierCV"

    marker = tmp_path / "pwned"
    for folder in _model_folders(settings):
        mlmodel = folder / "MLmodel"
        text = mlmodel.read_text().replace(
            "serialization_format: skops", "serialization_format: cloudpickle"
        )
        mlmodel.write_text(text.replace("pickled_model: model.skops", "pickled_model: model.pkl"))
        (folder / "model.pkl").write_bytes(pickle.dumps(_WritesMarker(marker)))

    with pytest.raises(UnsafeArtifactError, match="only 'skops' is loaded"):
        load_sklearn_version(CHURN_MODEL, version)
    # MLflow's own loader refuses it too: `configure` switched pickle deserialisation off
    with pytest.raises(Exception, match="MLFLOW_ALLOW_PICKLE_DESERIALIZATION"):
        mlflow.sklearn.load_model(f"models:/{CHURN_MODEL}/{version}")
    assert not marker.exists()


def test_a_churn_artifact_that_trusts_its_own_types_or_holds_another_object_is_refused(tmp_path):
    import os

    import skops.io
    from sklearn.preprocessing import FunctionTransformer

    from ml.registry import UnsafeArtifactError, load_sklearn_version

    settings = Settings(data_dir=tmp_path / "data")
    version = _log_churn_like(settings)
    folders = _model_folders(settings)
    # a skops file holding os.system, with the MLmodel trusting it: the artifact's list is ignored
    for folder in folders:
        skops.io.dump(FunctionTransformer(func=os.system), folder / "model.skops")
        untrusted = skops.io.get_untrusted_types(file=folder / "model.skops")
        mlmodel = folder / "MLmodel"
        mlmodel.write_text(mlmodel.read_text().replace(
            "skops_trusted_types:", "skops_trusted_types:\n" + "".join(f"    - {t}\n" for t in untrusted), 1
        ))  # fmt: skip
    with pytest.raises(UnsafeArtifactError, match="outside the project's trusted list"):
        load_sklearn_version(CHURN_MODEL, version)
    # a trusted type but not the kind of model the project serves
    for folder in folders:
        skops.io.dump(LogisticRegression(), folder / "model.skops")
    with pytest.raises(UnsafeArtifactError, match="expected a scikit-learn Pipeline"):
        load_sklearn_version(CHURN_MODEL, version)


def test_the_recommender_loads_without_running_its_logged_code(tmp_path):
    import mlflow
    import pandas as pd

    from ml.recommender.model import ItemItemRecommender, RecParams
    from ml.recommender.persistence import PYFUNC_FILE, load_recommender, log_recommender

    settings = Settings(data_dir=tmp_path / "data")
    client = configure(settings)
    interactions = pd.DataFrame({
        "user_id": [u for u in range(6) for _ in range(2)],
        "show_id": ["a", "b"] * 3 + ["c", "d"] * 3,
        "first_watched_at": pd.Timestamp("2026-02-01"),
        "watched_seconds": 600.0,
    })  # fmt: skip
    model = ItemItemRecommender().fit(interactions, RecParams(neighbours=2, shrinkage=0.0))
    example = pd.DataFrame({"history": [["a"], ["c"]], "just_watched": [None, None]})
    with mlflow.start_run(experiment_id=experiment_for(settings, RECS_MODEL)):
        info = log_recommender(model, "recommender", example, registered_model_name=RECS_MODEL)
    version = str(info.registered_model_version)
    client.set_registered_model_alias(RECS_MODEL, CHAMPION, version)

    marker = tmp_path / "ran"
    logged = [p for p in (settings.data_dir / "mlflow").rglob(PYFUNC_FILE.name)]
    assert logged  # the model-from-code file is in the artifact store
    for path in logged:
        path.write_text(path.read_text() + f"\nopen({str(marker)!r}, 'w').close()\n")

    loaded = load_recommender(settings, CHAMPION)
    assert loaded is not None and loaded.version == version
    assert [show for show, _ in loaded.model.recommend(["a"], 1)] == ["b"]
    assert not marker.exists()
    # the appended line is live: MLflow's pyfunc loader would have run it
    mlflow.pyfunc.load_model(f"models:/{RECS_MODEL}/{version}")
    assert marker.exists()


DIES_WHILE_MLFLOW_CREATES_ITS_TABLES = """
import os, sys
from pathlib import Path
from alembic.operations import Operations
from loopline.settings import Settings
from ml.registry import alias_version, configure

real, calls = Operations.create_table, [0]

def dying(self, *args, **kwargs):
    result = real(self, *args, **kwargs)
    calls[0] += 1
    if calls[0] == 3:  # a few migrations in: the process dies
        os._exit(3)
    return result

Operations.create_table = dying
alias_version(configure(Settings(data_dir=Path(sys.argv[1]))), "m", "champion")
"""


def test_a_process_killed_while_mlflow_creates_its_store_leaves_a_store_that_opens(tmp_path):
    """MLflow creates its tables on first use, in statements SQLite does not undo together: a
    process killed meanwhile used to leave a store no later process could open ("table ...
    already exists"), the registry with it. The store now appears whole or not at all."""
    import subprocess
    import sys

    died = subprocess.run(
        [sys.executable, "-c", DIES_WHILE_MLFLOW_CREATES_ITS_TABLES, str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert died.returncode == 3, died.stderr
    client = configure(Settings(data_dir=tmp_path))
    assert alias_version(client, CHURN_MODEL, CHAMPION) is None  # opens, answers
    experiment_for(Settings(data_dir=tmp_path), CHURN_MODEL)
    assert [e.name for e in client.search_experiments()] == [CHURN_MODEL, "Default"]
