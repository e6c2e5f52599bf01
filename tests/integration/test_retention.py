"""Retention of finished runs on moto: the stream record of a finished run gives its item the
table's TTL (its end + the retention), a re-opened run loses it, and the TTL's removal of the
run item has its stages and ended attempts deleted. Records are the items as DynamoDB holds
them, shaped as the stream delivers them (the TTL's REMOVE names the DynamoDB service)."""
from __future__ import annotations

import json
from dataclasses import replace

import boto3

from chalicelib.domain.clock import parse_iso
from chalicelib.domain.schemas import CreateRunIn, PatchStageIn
from chalicelib.domain.status import StageStatus
from chalicelib.service import operations, runs
from chalicelib.service.retention import DAY, apply_retention, expiry_of
from chalicelib.store.models import RUN_SK, run_pk

S = StageStatus
TTL = {"type": "Service", "principalId": "dynamodb.amazonaws.com"}


def _raw(ctx, pk, sk):
    return boto3.client("dynamodb").get_item(
        TableName=ctx.settings.table_name, Key={"pk": {"S": pk}, "sk": {"S": sk}}).get("Item")


def _partition(ctx, pk):
    return boto3.client("dynamodb").query(
        TableName=ctx.settings.table_name, KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": pk}})["Items"]


def _run_record(ctx, run_id, event="MODIFY"):
    return {"eventName": event, "dynamodb": {"NewImage": _raw(ctx, run_pk(run_id), RUN_SK)}}


def _finished_run_with_a_retried_stage(ctx, clock):
    aggregate = runs.create_run(ctx, CreateRunIn.model_validate_json(
        json.dumps({"pipeline": "web", "stages": ["BUILD", "DEPLOY_PROD"]})))
    build, deploy = (s.id for s in aggregate.stages)
    runs.patch_stage(ctx, build, PatchStageIn(status=S.IN_PROGRESS))
    runs.patch_stage(ctx, build, PatchStageIn(status=S.FAILURE))
    operations.retry_stage(ctx, build)  # attempt 1 becomes an item of its own
    for stage in (build, deploy):
        runs.patch_stage(ctx, stage, PatchStageIn(status=S.IN_PROGRESS))
        clock.advance(30)
        runs.patch_stage(ctx, stage, PatchStageIn(status=S.SUCCESS))
    return aggregate.run.id, build


def test_a_finished_run_gets_its_expiry_and_keeps_it_once(ctx, clock):
    run_id, _ = _finished_run_with_a_retried_stage(ctx, clock)
    run = runs.get_run(ctx, run_id).run
    assert run.status == S.SUCCESS
    report = apply_retention(ctx, [_run_record(ctx, run_id)])
    assert report.expiring == 1
    expires = int(_raw(ctx, run_pk(run_id), RUN_SK)["expires_at"]["N"])
    assert expires == int(run.ended_at.timestamp()) + ctx.settings.run_retention_days * DAY
    assert runs.get_run(ctx, run_id).run.version == run.version  # no writer is disturbed
    assert apply_retention(ctx, [_run_record(ctx, run_id)]).expiring == 0  # its own record: nothing


def test_a_reopened_run_loses_its_expiry_and_an_unfinished_one_gets_none(ctx, clock):
    run_id, build = _finished_run_with_a_retried_stage(ctx, clock)
    apply_retention(ctx, [_run_record(ctx, run_id)])
    operations.retry_stage(ctx, build)  # the run runs again
    record = _run_record(ctx, run_id)
    assert "expires_at" in record["dynamodb"]["NewImage"]
    assert apply_retention(ctx, [record]).kept == 1
    assert "expires_at" not in _raw(ctx, run_pk(run_id), RUN_SK)
    assert apply_retention(ctx, [_run_record(ctx, run_id)]).expiring == 0


def test_a_stale_record_of_a_finished_run_sets_nothing_on_a_run_running_again(ctx, clock):
    run_id, build = _finished_run_with_a_retried_stage(ctx, clock)
    stale = _run_record(ctx, run_id)  # read while finished ...
    operations.retry_stage(ctx, build)  # ... applied after it was re-opened
    assert apply_retention(ctx, [stale]).expiring == 0
    assert "expires_at" not in _raw(ctx, run_pk(run_id), RUN_SK)


def test_retention_zero_keeps_every_run_and_clears_expiries(ctx, clock):
    run_id, _ = _finished_run_with_a_retried_stage(ctx, clock)
    apply_retention(ctx, [_run_record(ctx, run_id)])
    forever = replace(ctx, settings=replace(ctx.settings, run_retention_days=0))
    assert apply_retention(forever, [_run_record(ctx, run_id)]).kept == 1
    assert "expires_at" not in _raw(ctx, run_pk(run_id), RUN_SK)


def test_the_ttl_removing_a_run_takes_its_stages_and_attempts_with_it(ctx, clock):
    run_id, build = _finished_run_with_a_retried_stage(ctx, clock)
    other, _ = _finished_run_with_a_retried_stage(ctx, clock)
    assert len(_partition(ctx, run_pk(run_id))) == 3 and len(_partition(ctx, f"ATTEMPTS#{build}")) == 1
    old = _raw(ctx, run_pk(run_id), RUN_SK)
    removal = {"eventName": "REMOVE", "dynamodb": {"OldImage": old}}

    assert apply_retention(ctx, [{**removal, "userIdentity": TTL}]).purged == 0  # the run is there: nothing
    boto3.client("dynamodb").delete_item(  # what the TTL does
        TableName=ctx.settings.table_name, Key={"pk": {"S": run_pk(run_id)}, "sk": {"S": RUN_SK}})
    assert apply_retention(ctx, [removal]).purged == 0  # a writer's REMOVE: its deletion took the rest
    assert apply_retention(ctx, [{**removal, "userIdentity": TTL}]).purged == 3  # 2 stages, 1 attempt
    assert _partition(ctx, run_pk(run_id)) == [] and _partition(ctx, f"ATTEMPTS#{build}") == []
    assert apply_retention(ctx, [{**removal, "userIdentity": TTL}]).purged == 0  # redelivered: harmless
    assert runs.get_run(ctx, other).run.status == S.SUCCESS  # another run untouched


def test_expiry_is_the_end_plus_the_retention():
    later = parse_iso("2027-02-05T00:00:00.000Z")
    assert expiry_of("2026-01-01T00:00:00.000Z", 400) == int(later.timestamp())
