"""MLflow tracking and the model registry: where runs are logged and champions are chosen.

**Tracking.** `configure` points MLflow at ``settings.resolved_mlflow_uri`` (default: a SQLite
store under ``<data_dir>/mlflow``) and keeps artifacts beside it. There is one experiment per
model (`experiment_for`), described in the UI (`EXPERIMENT_DESCRIPTIONS`); the registered
models carry a description too (`describe_registered_model`). Every run carries lineage
tags (`ml.features.pit.TrainingSet.lineage` plus the dbt manifest hash and `git_commit`).

**Registry.** Every new version gets the alias ``@challenger``. `decide` (pure) turns the
challenger's gate result and the champion's score *on the challenger's holdout* into a
`Decision`; `apply_decision` moves ``@champion`` when the decision says so and writes the
decision onto the version (tags and description); `record_decision` appends it to the
warehouse table ``ml.model_decisions``. The registered model's ``champion_history`` tag lists
past champions, newest last, so `rollback` can restore the previous one.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ml.churn.evaluate import LOWER_IS_BETTER

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from loopline.settings import Settings
from loopline.warehouse import DECISIONS_TABLE

CHURN_MODEL = "loopline-churn"
RECS_MODEL = "loopline-recommender"
CHAMPION = "champion"
CHALLENGER = "challenger"
HISTORY_TAG = "champion_history"

# skops refuses types it does not know; these are the fitted estimators' internals
SKOPS_TRUSTED_TYPES = [
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn._loss.link.LogitLink",
    "sklearn._loss.link.Interval",
    "sklearn._loss.loss.HalfBinomialLoss",
    "sklearn._loss._loss.CyHalfBinomialLoss",
    "numpy.dtype",
]

Action = Literal["promoted", "kept", "rollback"]

DESCRIPTION_TAG = "mlflow.note.content"  # the tag the MLflow UI shows (and edits) as a description
EXPERIMENT_DESCRIPTIONS = {
    CHURN_MODEL: (
        "Training runs of the churn model. One parent run per training: holdout metrics, "
        "plots, the HTML report, lineage tags and the registered version with the "
        "promotion decision. Nested under it, one run per grid-search candidate (kind and "
        "hyperparameters) with its ROC AUC on each time fold: compare them in the table or "
        "chart view."
    ),
    RECS_MODEL: (
        "Training runs of the show recommender: recall@k and NDCG@k against the popularity "
        "baseline on the latest two weeks, curves over k, catalogue coverage and popularity "
        "bias, the HTML report and the registered version with the promotion decision."
    ),
}
MODEL_DESCRIPTIONS = {
    CHURN_MODEL: (
        "Probability that a subscriber cancels within 30 days of an as-of day. Input: the "
        "churn_user_daily feature set (columns in the version's feature_columns tag); output: "
        "predict_proba, calibrated on time folds; the version's threshold tag is the "
        "operating point. @champion serves the API and the daily batch scores; @challenger is "
        "the latest version. Each version's description says why it was or was not promoted."
    ),
    RECS_MODEL: (
        "Next new show to watch: an item-item neighbourhood model blended with a popularity "
        "prior (pyfunc). Input: history (show ids, most recent first) and optionally "
        "just_watched; output: the top k unwatched shows with scores. @champion serves the "
        "API and the daily batch recommendations; it must beat popularity on recall@k."
    ),
}


class RegistryError(RuntimeError):
    """A registry operation that cannot go ahead, with what to do instead."""


class PromotionPolicy(BaseModel):
    """The quality gate and the margin a challenger must beat the champion by."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    gate: dict[str, float] = Field(
        default_factory=lambda: {"roc_auc": 0.6, "brier": 0.25},
        description="metric -> minimum (maximum for log_loss and brier)",
    )
    compare_on: str = "roc_auc"
    margin: float = Field(0.002, ge=0.0, description="how much better than the champion")


@dataclass(frozen=True)
class Decision:
    """One registry decision about one model version, with the numbers behind it."""

    model_name: str
    version: str
    action: Action
    promoted: bool
    reason: str
    metric: str
    challenger_value: float | None
    champion_version: str | None
    champion_value: float | None
    margin: float
    gate_passed: bool
    gate_failures: list[str] = field(default_factory=list)
    run_id: str | None = None
    decided_at: datetime = field(default_factory=lambda: datetime.now(UTC).replace(tzinfo=None))

    def summary(self) -> str:
        """Return one line saying what happened and why."""
        return f"{self.model_name} v{self.version}: {self.action} ({self.reason})"


def _better(metric: str, value: float, other: float, margin: float) -> bool:
    if metric in LOWER_IS_BETTER:
        return value <= other - margin
    return value >= other + margin


def decide(
    model_name: str,
    version: str,
    policy: PromotionPolicy,
    challenger_metrics: Mapping[str, float],
    gate_failures: list[str],
    champion_version: str | None,
    champion_metrics: Mapping[str, float] | None,
    run_id: str | None = None,
) -> Decision:
    """Promote when the gate passed and the challenger beats the champion by the margin.

    ``champion_metrics`` must come from the champion scored on the challenger's holdout.
    With no champion, passing the gate is enough. A champion that cannot score the holdout
    (``champion_metrics`` None while ``champion_version`` is set) is replaced if the gate passed.
    """
    metric = policy.compare_on
    if metric not in challenger_metrics:
        raise ValueError(
            f"compare_on={metric!r} is not a metric; have {sorted(challenger_metrics)}"
        )
    value = float(challenger_metrics[metric])
    champion_value = None if champion_metrics is None else float(champion_metrics[metric])
    common: dict[str, Any] = {
        "model_name": model_name,
        "version": version,
        "metric": metric,
        "challenger_value": value,
        "champion_version": champion_version,
        "champion_value": champion_value,
        "margin": policy.margin,
        "gate_passed": not gate_failures,
        "gate_failures": list(gate_failures),
        "run_id": run_id,
    }
    if gate_failures:
        reason = "failed the quality gate: " + "; ".join(gate_failures)
        return Decision(action="kept", promoted=False, reason=reason, **common)
    if champion_version is None:
        return Decision(
            action="promoted", promoted=True, reason="passed the gate; no champion yet", **common
        )
    if champion_value is None:
        reason = (
            f"passed the gate; champion v{champion_version} cannot be scored fairly on this "
            "holdout (other features or another split rule)"
        )
        return Decision(action="promoted", promoted=True, reason=reason, **common)
    sign = "-" if metric in LOWER_IS_BETTER else "+"
    if _better(metric, value, champion_value, policy.margin):
        reason = (
            f"{metric} {value:.4f} beats champion v{champion_version} "
            f"{champion_value:.4f} {sign} margin {policy.margin}"
        )
        return Decision(action="promoted", promoted=True, reason=reason, **common)
    reason = (
        f"{metric} {value:.4f} does not beat champion v{champion_version} "
        f"{champion_value:.4f} {sign} margin {policy.margin}"
    )
    return Decision(action="kept", promoted=False, reason=reason, **common)


# --------------------------------------------------------------------------------------------
# MLflow plumbing


def configure(settings: Settings) -> MlflowClient:
    """Point MLflow's tracking and registry at the project's store; return a client."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # no machine here reaches it
    # no pickle or cloudpickle model is ever deserialised by MLflow in this process: models
    # load as data (`load_sklearn_version`, `ml.recommender.persistence.load_recommender`)
    os.environ[PICKLE_FLAG] = "false"
    import mlflow
    from mlflow import MlflowClient

    uri = settings.resolved_mlflow_uri
    if uri.startswith("sqlite:///"):
        create_sqlite_store(Path(uri.removeprefix("sqlite:///")))
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def create_sqlite_store(path: Path) -> None:
    """Create MLflow's SQLite store at `path`, whole, unless it exists.

    MLflow creates its tables on first use, in statements SQLite does not undo together: a
    process killed meanwhile left a store that no later process could open ("table ...
    already exists"), and the registry with it (found by `tests/reliability/`). So the store
    is built in a file beside it and linked into place when complete; of two processes
    doing so at once, the first one's stays.
    """
    if path.exists():
        return
    import secrets

    from mlflow.store.tracking import DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    path.parent.mkdir(parents=True, exist_ok=True)
    building = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(3)}.new")
    try:
        # the artifact root MLflow gives the Default experiment when it creates the store
        store = SqlAlchemyStore(f"sqlite:///{building}", DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH)
        store.engine.dispose()
        with suppress(FileExistsError):  # another process created it meanwhile: keep it
            os.link(building, path)
    finally:
        building.unlink(missing_ok=True)


def experiment_for(settings: Settings, model_name: str) -> str:
    """The id of the model's experiment (created on first use, artifacts under data_dir).

    The experiment carries the model's description from `EXPERIMENT_DESCRIPTIONS` (set again
    if it is missing, so stores made before descriptions existed get one too).
    """
    import mlflow

    client = configure(settings)
    description = EXPERIMENT_DESCRIPTIONS.get(model_name)
    existing = mlflow.get_experiment_by_name(model_name)
    if existing is not None:
        if description and existing.tags.get(DESCRIPTION_TAG) is None:
            client.set_experiment_tag(existing.experiment_id, DESCRIPTION_TAG, description)
        return str(existing.experiment_id)
    location = None
    if settings.resolved_mlflow_uri.startswith("sqlite:///"):
        artifacts = settings.data_dir / "mlflow" / "artifacts" / model_name
        artifacts.mkdir(parents=True, exist_ok=True)
        location = artifacts.as_uri()
    tags = {DESCRIPTION_TAG: description} if description else None
    return str(mlflow.create_experiment(model_name, artifact_location=location, tags=tags))


def describe_registered_model(client: MlflowClient, model_name: str) -> None:
    """Give a registered model its description from `MODEL_DESCRIPTIONS` if it has none
    (one written in the UI is kept)."""
    description = MODEL_DESCRIPTIONS.get(model_name)
    if description and not client.get_registered_model(model_name).description:
        client.update_registered_model(model_name, description=description)


def git_commit(repo_dir: Path | None = None) -> str:
    """The checkout's commit (``+dirty`` if it has changes), or ``unknown`` outside git."""
    cwd = repo_dir or Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def model_requirements(*extra: str) -> list[str]:
    """Pinned pip requirements of a logged model, from this environment.

    Passing them skips MLflow's requirement inference, which re-imports the model in a
    subprocess (seconds per model) and guesses.
    """
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for package in ("mlflow", "scikit-learn", "skops", "numpy", "scipy", "pandas", *extra):
        try:
            pins.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            continue
    return pins


def alias_version(client: MlflowClient, model_name: str, alias: str) -> str | None:
    """The version an alias points at, or None if the alias (or the model) does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(model_name, alias).version)
    except MlflowException:
        return None


def champion_history(client: MlflowClient, model_name: str) -> list[str]:
    """Versions that have been champion, oldest first (the last one is the champion)."""
    from mlflow.exceptions import MlflowException

    try:
        tags = client.get_registered_model(model_name).tags
    except MlflowException:  # not registered yet
        return []
    return list(json.loads(tags.get(HISTORY_TAG, "[]")))


def _decision_tags(decision: Decision) -> dict[str, str]:
    # a rollback writes its own keys: the version's original decision stays readable
    prefix = "rollback" if decision.action == "rollback" else "decision"
    tags = {
        "action": decision.action,
        "reason": decision.reason,
        "at": decision.decided_at.isoformat(timespec="seconds"),
        "metric": decision.metric,
        "gate_passed": str(decision.gate_passed).lower(),
        "margin": str(decision.margin),
    }
    if decision.challenger_value is not None:
        tags["challenger_value"] = f"{decision.challenger_value:.6f}"
    if decision.champion_version is not None:
        tags["champion_version"] = decision.champion_version
    if decision.champion_value is not None:
        tags["champion_value"] = f"{decision.champion_value:.6f}"
    return {f"{prefix}.{key}": value for key, value in tags.items()}


def apply_decision(client: MlflowClient, decision: Decision) -> None:
    """Move the aliases as decided and write the decision onto the model version."""
    name, version = decision.model_name, decision.version
    if decision.action != "rollback":
        client.set_registered_model_alias(name, CHALLENGER, version)
    for key, value in _decision_tags(decision).items():
        client.set_model_version_tag(name, version, key, value)
    if decision.action != "rollback":
        client.update_model_version(name, version, description=decision.summary())
    if decision.promoted:
        client.set_registered_model_alias(name, CHAMPION, version)
        if decision.action != "rollback":
            history = [v for v in champion_history(client, name) if v != version]
            client.set_registered_model_tag(name, HISTORY_TAG, json.dumps([*history, version]))


def rollback(client: MlflowClient, model_name: str) -> Decision:
    """Make the previous champion the champion again (the current one leaves the history)."""
    history = champion_history(client, model_name)
    current = alias_version(client, model_name, CHAMPION)
    if current is None or len(history) < 2:
        raise RegistryError(
            f"{model_name}: no previous champion to roll back to (champion history {history})"
        )
    previous = history[-2]
    client.set_registered_model_tag(model_name, HISTORY_TAG, json.dumps(history[:-1]))
    decision = Decision(
        model_name=model_name,
        version=previous,
        action="rollback",
        promoted=True,
        reason=f"rolled back from v{current}",
        metric="",
        challenger_value=None,
        champion_version=current,
        champion_value=None,
        margin=0.0,
        gate_passed=True,
    )
    apply_decision(client, decision)
    client.set_model_version_tag(
        model_name,
        current,
        "rollback.demoted_at",
        decision.decided_at.isoformat(timespec="seconds"),
    )
    return decision


# --------------------------------------------------------------------------------------------
# the warehouse record


def record_decision(settings: Settings, decision: Decision) -> None:
    """Append the decision to ``ml.model_decisions`` in the warehouse (under the writer lock)."""
    from loopline.warehouse import ensure, writing

    row = asdict(decision)
    row["gate_failures"] = json.dumps(row["gate_failures"])
    with writing(settings) as con:
        ensure(con, DECISIONS_TABLE)
        columns = list(row)
        con.execute(
            f"insert into {DECISIONS_TABLE} ({', '.join(columns)}) "
            f"values ({', '.join('?' for _ in columns)})",
            [row[c] for c in columns],
        )


# --------------------------------------------------------------------------------------------
# loading


def version_tags(client: MlflowClient, model_name: str, version: str) -> dict[str, str]:
    """The tags of one model version."""
    return dict(client.get_model_version(model_name, version).tags)


PICKLE_FLAG = "MLFLOW_ALLOW_PICKLE_DESERIALIZATION"


@contextmanager
def mlflow_may_reload_its_own_save() -> Iterator[None]:
    """Let MLflow deserialise models for the duration of a ``log_model`` call.

    ``log_model`` checks its input example by loading the folder it has just written from the
    in-memory model; nothing from the store is read. `configure` switches that off for the
    rest of the process.
    """
    before = os.environ.get(PICKLE_FLAG)
    os.environ[PICKLE_FLAG] = "true"
    try:
        yield
    finally:
        os.environ[PICKLE_FLAG] = before or "false"


class UnsafeArtifactError(RegistryError):
    """A model artifact that could run code on load, or is not the kind of model expected."""


def load_sklearn_version(model_name: str, version: str) -> Any:
    """The fitted scikit-learn model of one registered version, loaded as data only.

    Not through ``mlflow.sklearn.load_model``, which takes the serialisation format *and* the
    skops trusted types from the artifact's own ``MLmodel`` (so a tampered artifact can choose
    cloudpickle, or trust anything): `load_sklearn_dir` reads only skops, with this project's
    `SKOPS_TRUSTED_TYPES`, and checks the loaded object's type.
    """
    import tempfile

    import mlflow

    with tempfile.TemporaryDirectory(prefix="loopline-model-") as tmp:
        local = mlflow.artifacts.download_artifacts(f"models:/{model_name}/{version}", dst_path=tmp)
        return load_sklearn_dir(Path(local), f"{model_name} v{version}")


def load_sklearn_dir(path: Path, what: str = "model") -> Any:
    """Load the skops file of the MLflow model folder `path` (see `load_sklearn_version`).

    Raises `UnsafeArtifactError` for any other serialisation format, a model file outside the
    folder, a type outside `SKOPS_TRUSTED_TYPES` (and skops' own defaults), or a loaded object
    that is not a scikit-learn `Pipeline` or `CalibratedClassifierCV`.
    """
    import skops.io
    import yaml
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.pipeline import Pipeline

    meta = yaml.safe_load((path / "MLmodel").read_text()) or {}
    flavor = (meta.get("flavors") or {}).get("sklearn") or {}
    fmt = flavor.get("serialization_format")
    if fmt != "skops":
        raise UnsafeArtifactError(
            f"{what}: serialization_format is {fmt!r}; only 'skops' is loaded (pickle and "
            "cloudpickle run code from the artifact). Retrain, or restore the artifact."
        )
    root = path.resolve()
    file = (path / str(flavor.get("pickled_model", ""))).resolve()
    if not file.is_relative_to(root) or not file.is_file() or file.suffix != ".skops":
        raise UnsafeArtifactError(f"{what}: model file {flavor.get('pickled_model')!r} refused")
    untrusted = set(skops.io.get_untrusted_types(file=file)) - set(SKOPS_TRUSTED_TYPES)
    if untrusted:
        raise UnsafeArtifactError(
            f"{what}: types outside the project's trusted list: {sorted(untrusted)[:10]}"
        )
    model = skops.io.load(file, trusted=SKOPS_TRUSTED_TYPES)
    if not isinstance(model, (Pipeline, CalibratedClassifierCV)):
        raise UnsafeArtifactError(
            f"{what}: loaded a {type(model).__name__}, expected a scikit-learn Pipeline or "
            "CalibratedClassifierCV"
        )
    return model
