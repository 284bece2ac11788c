"""The shape of the dbt DAG, read from manifest.json.

The rules are dbt-project-evaluator's modelling rules that matter here (the package itself
cannot be installed offline): a source is read by one model, only a base model joins a
source to other models, staging reads only base models, sources and seeds, and nothing
downstream reads a source. An exception is allowed only where the model's (or the source
table's) YAML explains it under `config: meta: evaluator_exceptions: {<rule>: <why>}`, and
an explanation for a rule the node no longer breaks fails too, so none go stale.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

import pytest

from loopline.dbt import project_dir, run_dbt
from loopline.settings import Settings


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """manifest.json of `dbt parse` (no warehouse needed)."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("parse") / "data")
    run_dbt(settings, ["parse"])
    return json.loads((settings.data_dir / "dbt" / "target" / "manifest.json").read_text())


def layer(node: dict) -> str:
    """The evaluator's model type: from the name's prefix, marts from the folder."""
    name = node["name"]
    for prefix, kind in (("base_", "base"), ("stg_", "staging"), ("int_", "intermediate")):
        if name.startswith(prefix):
            return kind
    return "marts" if node["original_file_path"].startswith("models/marts/") else "other"


def exceptions(node: dict) -> dict[str, str]:
    meta = node.get("config", {}).get("meta") or node.get("meta") or {}
    return meta.get("evaluator_exceptions") or {}


def violations(manifest: dict) -> dict[str, set[str]]:
    """rule -> unique ids of the nodes (models, or sources for fan-out) that break it."""
    nodes, sources = manifest["nodes"], manifest["sources"]
    models = {uid: n for uid, n in nodes.items() if n["resource_type"] == "model"}
    found: dict[str, set[str]] = defaultdict(set)
    children: dict[str, set[str]] = defaultdict(set)
    for uid, node in models.items():
        parents = node["depends_on"]["nodes"]
        parent_sources = [p for p in parents if p.startswith("source.")]
        parent_models = [p for p in parents if p in models]
        for source in parent_sources:
            children[source].add(uid)
        kind = layer(node)
        if parent_sources and parent_models:
            found["direct_join_to_source"].add(uid)
        if parent_sources and kind in ("intermediate", "marts"):
            found["marts_or_intermediate_dependent_on_source"].add(uid)
        if kind == "staging":
            for parent in parent_models:
                if layer(models[parent]) == "staging":
                    found["staging_dependent_on_staging"].add(uid)
                if layer(models[parent]) in ("intermediate", "marts"):
                    found["staging_dependent_on_marts_or_intermediate"].add(uid)
    for source, readers in children.items():
        if len(readers) > 1 and source in sources:
            found["source_fanout"].add(source)
    return found


def test_the_dag_follows_the_modelling_rules_or_says_why_not(manifest):
    documents = manifest["nodes"] | manifest["sources"]
    unexplained = sorted(
        f"{rule}: {uid}"
        for rule, uids in violations(manifest).items()
        for uid in uids
        if not str(exceptions(documents[uid]).get(rule, "")).strip()
    )
    assert unexplained == [], "fix the DAG, or explain the exception in the YAML"


def test_every_documented_exception_is_still_needed(manifest):
    found = violations(manifest)
    stale = sorted(
        f"{rule}: {uid}"
        for uid, node in (manifest["nodes"] | manifest["sources"]).items()
        for rule in exceptions(node)
        if uid not in found.get(rule, set())
    )
    assert stale == []


def test_the_rules_catch_staging_reading_staging(manifest):
    """The checks can fail: a staging model made to read another one is flagged."""
    broken = json.loads(json.dumps(manifest))
    stg = broken["nodes"]["model.loopline.stg_catalogue__shows"]
    stg["depends_on"]["nodes"].append("model.loopline.stg_oltp__users")
    assert (
        "model.loopline.stg_catalogue__shows" in violations(broken)["staging_dependent_on_staging"]
    )


def test_each_source_table_that_needs_cleaning_is_classified_once_in_a_base_model(manifest):
    """Staging and quarantine of a source both select from one base model."""
    models = {n["name"]: n for n in manifest["nodes"].values() if n["resource_type"] == "model"}
    quarantines = [name for name in models if name.startswith("quarantine_")]
    assert len(quarantines) == 4
    for name in quarantines:
        entity = name.removeprefix("quarantine_")
        (parent,) = models[name]["depends_on"]["nodes"]
        assert parent == f"model.loopline.base_{entity}"
        assert models[f"stg_{entity}"]["depends_on"]["nodes"] == [parent]


# the warehouse relations a consumer reads, as the Python code names them
RELATION = re.compile(r"\b(staging|intermediate|core|features|monitoring)\.([a-z0-9_]+)\b")


def test_exposures_list_what_the_loop_really_reads(manifest):
    models = {
        f"{n['schema']}.{n['alias']}": uid
        for uid, n in manifest["nodes"].items()
        if n["resource_type"] == "model"
    }
    read = {
        models[".".join(match)]
        for path in (project_dir() / "ml").rglob("*.py")
        for match in RELATION.findall(Path(path).read_text())
        if ".".join(match) in models
    }
    listed = {
        parent
        for exposure in manifest["exposures"].values()
        for parent in exposure["depends_on"]["nodes"]
    }
    assert read, "ml/ names no warehouse model: the pattern is out of date"
    assert listed == read
