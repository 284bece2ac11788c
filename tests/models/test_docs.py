"""The dbt docs site: an overview page, and every column people query is described."""

from __future__ import annotations

import json

import pytest

from loopline.dbt import run_dbt
from loopline.settings import Settings

# the marts (core, features and labels, monitoring): what people and programs read
DOCUMENTED = ("models/marts/",)


@pytest.fixture(scope="module")
def artifacts(built_warehouse) -> tuple[dict, dict]:
    """(manifest, catalog) of `dbt docs generate` on the session's built warehouse."""
    settings: Settings = built_warehouse[0]
    run_dbt(settings, ["docs", "generate"])
    target = settings.data_dir / "dbt" / "target"
    return (
        json.loads((target / "manifest.json").read_text()),
        json.loads((target / "catalog.json").read_text()),
    )


def test_every_column_of_the_marts_and_feature_sets_is_described(artifacts):
    manifest, catalog = artifacts
    marts = {
        uid: node
        for uid, node in manifest["nodes"].items()
        if node["resource_type"] == "model" and node["original_file_path"].startswith(DOCUMENTED)
    }
    assert {"model.loopline.dim_users", "model.loopline.fs_churn__user_daily",
            "model.loopline.label_churn__user_daily",
            "model.loopline.fct_load_accounting"} <= set(marts)  # fmt: skip
    undocumented = []
    for uid, node in sorted(marts.items()):
        assert uid in catalog["nodes"], f"{uid} was not built"
        described = {
            name.lower(): (column.get("description") or "").strip()
            for name, column in node["columns"].items()
        }
        # the catalog lists the columns the built table really has
        for name in catalog["nodes"][uid]["columns"]:
            if not described.get(name.lower()):
                undocumented.append(f"{node['name']}.{name}")
        if not node["description"].strip():
            undocumented.append(node["name"])
    assert undocumented == [], "describe these in the model's YAML: " + ", ".join(undocumented)


def test_the_docs_site_opens_on_an_overview_of_every_layer(artifacts):
    manifest, _ = artifacts
    overview = manifest["docs"].get("doc.loopline.__overview__")
    assert overview is not None, "models/overview.md must define {% docs __overview__ %}"
    text = overview["block_contents"]
    built_schemas = {
        node["schema"]
        for node in manifest["nodes"].values()
        if node["resource_type"] in ("model", "seed", "snapshot")
    }
    missing = sorted(s for s in built_schemas | {"raw"} if f"`{s}`" not in text)
    assert missing == [], f"the overview does not explain the schemas {missing}"
    for heading in ("Where to start", "Naming", "loop"):
        assert heading in text
