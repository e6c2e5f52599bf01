"""The table's shape, in one place: used to create it locally and to render infra/ templates."""
from __future__ import annotations

import time

from ..settings import Settings
from .models import LISTED_ATTRIBUTES, SUMMARY_ATTRIBUTES

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
    """Create the table (and its TTL setting) if missing. Returns True if it was created."""
    client = client or dynamodb_client(settings)
    try:
        client.describe_table(TableName=settings.table_name)
        return False
    except client.exceptions.ResourceNotFoundException:
        pass
    client.create_table(**table_definition(settings.table_name))
    for _ in range(600):
        status = client.describe_table(TableName=settings.table_name)["Table"]["TableStatus"]
        if status == "ACTIVE":
            break
        time.sleep(0.1)
    client.update_time_to_live(
        TableName=settings.table_name,
        TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE},
    )
    return True
