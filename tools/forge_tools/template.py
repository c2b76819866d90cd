"""template.yaml's own resource definitions, read once for every stand-in of the stack: the
embedded emulator creates its tables from them, and so does the in-memory twin."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from forge.store.memory import Faults, MemoryDynamoDB

# CloudFormation properties of AWS::DynamoDB::Table that CreateTable takes as they are.
_TABLE_PROPERTIES = (
    "KeySchema",
    "AttributeDefinitions",
    "BillingMode",
    "StreamSpecification",
    "GlobalSecondaryIndexes",
    "LocalSecondaryIndexes",
)


class _CfnLoader(yaml.SafeLoader):
    """Reads a SAM template, keeping intrinsic functions (!Ref, !Sub...) as plain values."""


def _intrinsic(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return {suffix: loader.construct_scalar(node)}
    if isinstance(node, yaml.SequenceNode):
        return {suffix: loader.construct_sequence(node, deep=True)}
    assert isinstance(node, yaml.MappingNode)
    return {suffix: loader.construct_mapping(node, deep=True)}


_CfnLoader.add_multi_constructor("!", _intrinsic)


def load_template(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as fh:
        return dict(yaml.load(fh, Loader=_CfnLoader))  # noqa: S506 - SafeLoader subclass


def table_specs(template_path: Path) -> dict[str, dict[str, Any]]:
    """CreateTable's arguments (without TableName) for each table of the template, by logical id."""
    specs: dict[str, dict[str, Any]] = {}
    for logical_id, resource in load_template(template_path)["Resources"].items():
        if resource["Type"] != "AWS::DynamoDB::Table":
            continue
        props = resource.get("Properties", {})
        spec = {k: props[k] for k in _TABLE_PROPERTIES if k in props}
        if "StreamSpecification" in spec:  # CloudFormation implies StreamEnabled
            spec["StreamSpecification"] = {"StreamEnabled": True, **spec["StreamSpecification"]}
        specs[logical_id] = spec
    return specs


def create_tables(client: Any, template_path: Path, prefix: str) -> dict[str, str]:
    """Create every table of the template through `client` (a boto3 DynamoDB client or the
    in-memory twin), named `{prefix}-{logical id}`; returns the names by logical id."""
    tables: dict[str, str] = {}
    for logical_id, spec in table_specs(template_path).items():
        name = f"{prefix}-{logical_id}"
        client.create_table(TableName=name, **spec)
        tables[logical_id] = name
    return tables


@dataclass(frozen=True)
class MemoryStack:
    """The in-memory twin holding the template's tables, and their names by logical id."""

    client: MemoryDynamoDB
    tables: dict[str, str]

    @property
    def budget_table(self) -> str:
        return self.tables["BudgetTable"]

    @property
    def ledger_table(self) -> str:
        return self.tables["LedgerTable"]


def memory_stack(
    template_path: Path, *, faults: Faults | None = None, prefix: str = "twin"
) -> MemoryStack:
    """A fresh twin with every table of the template: `DynamoStore(s.client, s.budget_table,
    s.ledger_table)` then runs on it."""
    twin = MemoryDynamoDB(faults=faults)
    return MemoryStack(twin, create_tables(twin, template_path, prefix))
