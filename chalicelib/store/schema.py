"""The table's shape, in one place: used to create it locally and to render infra/ templates."""
from __future__ import annotations

import time

from ..settings import Settings
from .models import (
    LISTED_ATTRIBUTES,
    PIPELINE_LISTED,
    SEARCH_INDEXES,
    SEARCH_PROJECTION,
    SUMMARY_ATTRIBUTES,
)

TTL_ATTRIBUTE = "expires_at"


def table_definition(table_name: str) -> dict:
    """CreateTable parameters (the CloudFormation template is rendered from the same dict)."""
    return {
        "TableName": table_name,
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
            {"AttributeName": "pipeline", "AttributeType": "S"},
            {"AttributeName": "counter", "AttributeType": "N"},
            {"AttributeName": "pipeline_status", "AttributeType": "S"},
            {"AttributeName": "active_shard", "AttributeType": "S"},
            {"AttributeName": "due_at", "AttributeType": "S"},
            {"AttributeName": "listed_pipeline", "AttributeType": "S"},
            {"AttributeName": "listed_at", "AttributeType": "N"},
            *({"AttributeName": name, "AttributeType": "S"} for name in (
                *SEARCH_INDEXES.values(), "created_key", "pipe_feed", "last_activity",
                "approval_feed", "waiting_key")),
        ],
        "KeySchema": [
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        "GlobalSecondaryIndexes": [
            {
                "IndexName": "byPipeline",
                "KeySchema": [
                    {"AttributeName": "pipeline", "KeyType": "HASH"},
                    {"AttributeName": "counter", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "INCLUDE",
                               "NonKeyAttributes": [a for a in LISTED_ATTRIBUTES if a != "pipeline"]},
            },
            {
                "IndexName": "byPipelineStatus",
                "KeySchema": [
                    {"AttributeName": "pipeline_status", "KeyType": "HASH"},
                    {"AttributeName": "counter", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "INCLUDE",
                               "NonKeyAttributes": [a for a in LISTED_ATTRIBUTES if a != "pipeline_status"]},
            },
            {
                "IndexName": "activeStages",
                "KeySchema": [
                    {"AttributeName": "active_shard", "KeyType": "HASH"},
                    {"AttributeName": "due_at", "KeyType": "RANGE"},
                ],
                "Projection": {
                    "ProjectionType": "INCLUDE",
                    "NonKeyAttributes": ["status", "attempt", "stage_id"],
                },
            },
            {
                "IndexName": "stagesByPipeline",
                "KeySchema": [
                    {"AttributeName": "listed_pipeline", "KeyType": "HASH"},
                    {"AttributeName": "listed_at", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "INCLUDE", "NonKeyAttributes": list(SUMMARY_ATTRIBUTES)},
            },
            # issue 13: what people browse by (store/finder.py); keys set sparsely (models.py)
            *({
                "IndexName": index,
                "KeySchema": [{"AttributeName": key, "KeyType": "HASH"},
                              {"AttributeName": "created_key", "KeyType": "RANGE"}],
                "Projection": {"ProjectionType": "INCLUDE",
                               "NonKeyAttributes": SEARCH_PROJECTION.get(index, ["kind"])},
            } for index, key in SEARCH_INDEXES.items()),
            {
                "IndexName": "pipelinesByActivity",
                "KeySchema": [{"AttributeName": "pipe_feed", "KeyType": "HASH"},
                              {"AttributeName": "last_activity", "KeyType": "RANGE"}],
                "Projection": {"ProjectionType": "INCLUDE", "NonKeyAttributes": list(PIPELINE_LISTED)},
            },
            {
                "IndexName": "approvalsWaiting",
                "KeySchema": [{"AttributeName": "approval_feed", "KeyType": "HASH"},
                              {"AttributeName": "waiting_key", "KeyType": "RANGE"}],
                "Projection": {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["kind"]},
            },
        ],
        "StreamSpecification": {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    }


def dynamodb_client(settings: Settings):
    import botocore.session

    session = botocore.session.get_session()
    return session.create_client(
        "dynamodb", region_name=settings.region, endpoint_url=settings.dynamodb_endpoint
    )


def ensure_tables(settings: Settings, client=None) -> bool:
    """Create the table (and its TTL setting) if missing, or add the indexes a table made by an
    earlier version lacks (one UpdateTable each, as DynamoDB allows; items written before get
    their keys in them with their next write). Returns True if the table was created."""
    client = client or dynamodb_client(settings)
    try:
        existing = client.describe_table(TableName=settings.table_name)["Table"]
    except client.exceptions.ResourceNotFoundException:
        existing = None
    if existing is not None:
        _add_missing_indexes(client, settings.table_name, existing)
        return False
    client.create_table(**table_definition(settings.table_name))
    _wait_active(client, settings.table_name)
    client.update_time_to_live(
        TableName=settings.table_name,
        TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE},
    )
    return True


WAIT_ACTIVE_SECONDS = 600  # a new index backfills the items already in the table first


def _wait_active(client, table_name: str) -> None:
    """Until the table and every index are ACTIVE (DynamoDB takes one index change at a time)."""
    deadline = time.monotonic() + WAIT_ACTIVE_SECONDS
    while True:
        table = client.describe_table(TableName=table_name)["Table"]
        if table["TableStatus"] == "ACTIVE" and all(
                index.get("IndexStatus", "ACTIVE") == "ACTIVE"
                for index in table.get("GlobalSecondaryIndexes", [])):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"table {table_name} is not ACTIVE after {WAIT_ACTIVE_SECONDS} s")
        time.sleep(0.1)


def _add_missing_indexes(client, table_name: str, existing: dict) -> None:
    definition = table_definition(table_name)
    present = {index["IndexName"] for index in existing.get("GlobalSecondaryIndexes", [])}
    types = {a["AttributeName"]: a for a in definition["AttributeDefinitions"]}
    for index in definition["GlobalSecondaryIndexes"]:
        if index["IndexName"] in present:
            continue
        keys = [types[k["AttributeName"]] for k in index["KeySchema"]]
        client.update_table(TableName=table_name, AttributeDefinitions=keys,
                            GlobalSecondaryIndexUpdates=[{"Create": index}])
        _wait_active(client, table_name)
