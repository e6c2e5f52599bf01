"""The insights aggregates on DynamoDB (the ``InsightsStore`` port, service/ports.py).

| item | pk | sk | attributes |
|---|---|---|---|
| runs of a day | ``INSIGHTS#<pipeline>`` (``INSIGHTS``: all) | ``DAY#<yyyy-mm-dd>#RUN`` | its ``Tally`` |
| a stage's day | same | ``DAY#<yyyy-mm-dd>#STAGE#<name>`` | same |
| pipeline state | ``INSIGHTS#<pipeline>`` | ``STATE`` | red_since, pending_*, failed_at, version |
| attempt marker | ``INSMARK#<run id>`` | ``A#<position>#<attempt>`` | status, ended_at, environment |
| retry marker | same | ``R#<position>#<attempt>`` | at (the new attempt was ready) |
| run marker | same | ``RUN`` | order, counted (JSON: what the run's last finish added, by day) |
| export totals | ``INSIGHTS#<pipeline>`` | ``OTLP`` | since, through, counts (JSON), version |
| outside signal | ``INSIGHTS#<pipeline>`` | ``SIGNAL#<sha-256 of key>`` | kind, at, key, incident |
| the rebuild | ``INSIGHTS`` | ``REBUILD`` | domain/rebuilds.py ``RebuildRecord`` |

Counters are added with ``ADD`` in a TransactWriteItems with the record's marker: an attempt's
marker is conditioned on not existing, a run's on still holding the finish read (absent, or
the ``order`` read), and the state on its version, so a redelivered record adds nothing and two
consumers never lose an update. An outside signal (an incident, a rollback) is kept as an item
of its pipeline, written conditioned on not existing with the state and ADDs it brings: the
same event twice counts once, and the rebuild reads the signals back. A day's items of a
pipeline sit together, so an answer is one Query of ``DAY#<from>`` .. ``DAY#<to>~`` (the items
of those days only, never history).
Numbers are DynamoDB numbers; the tally's keys are the attribute names (through placeholders).
"""
from __future__ import annotations

import hashlib
import json
from datetime import datetime

from botocore.exceptions import ClientError

from ..domain.clock import format_iso, parse_iso
from ..domain.errors import ConcurrentModification
from ..domain.insights import (
    AttemptMark,
    DayItem,
    DeploymentSignal,
    FinishedAttempt,
    FinishedRun,
    PipelineState,
    RetryRecorded,
    Tally,
    day_of,
    mark_of,
)
from ..domain.rebuilds import RUNNING, RebuildRecord
from ..domain.status import StageStatus
from ..service.ports import DaysRead, ExportTotals, RunCounted, RunMarks
from .models import ItemModels
from .repository import (
    CONFLICT_ATTEMPTS,
    PUT,
    UPDATE,
    TxItem,
    Writer,
    _only_transaction_conflicts,
    failed_tags,
    jittered_pause,
)

ALL_PIPELINES = "INSIGHTS"
STATE_SK = "STATE"
EXPORT_SK = "OTLP"  # the OTLP export's folded counts (service/insights_export.py)
REBUILD_SK = "REBUILD"
_REBUILD_COUNTS = ("pipelines", "runs", "items")
RUN_MARK_SK = "RUN"
MARKER_TAG, STATE_TAG = "marker", "state"
_KEY_ATTRIBUTES = ("pk", "sk")
_WRITE_BATCH = 25


def insights_pk(pipeline: str | None) -> str:
    return ALL_PIPELINES if pipeline is None else f"{ALL_PIPELINES}#{pipeline}"


def marks_pk(run_id: str) -> str:
    return f"INSMARK#{run_id}"


def day_sk(day: str, stage: str | None) -> str:
    return f"DAY#{day}#RUN" if stage is None else f"DAY#{day}#STAGE#{stage}"


def attempt_mark_sk(position: int, attempt: int) -> str:
    return f"A#{position:04d}#{attempt:04d}"


def retry_mark_sk(position: int, attempt: int) -> str:
    return f"R#{position:04d}#{attempt:04d}"


def _s(value: str) -> dict:
    return {"S": value}


def _n(value: int) -> dict:
    return {"N": str(value)}


def add_request(table: str, pk: str, sk: str, tally: Tally) -> dict | None:
    """One UpdateItem request ADDing every counter of ``tally`` (None if there is none)."""
    counters = {k: v for k, v in sorted(tally.items()) if v != 0}
    if not counters:
        return None
    names = {f"#a{i}": key for i, key in enumerate(counters)}
    values = {f":a{i}": _n(value) for i, value in enumerate(counters.values())}
    return {"TableName": table, "Key": {"pk": _s(pk), "sk": _s(sk)},
            "UpdateExpression": "ADD " + ", ".join(f"#a{i} :a{i}" for i in range(len(counters))),
            "ExpressionAttributeNames": names, "ExpressionAttributeValues": values}


def _tally_of(raw: dict) -> Tally:
    return {k: int(v["N"]) for k, v in raw.items() if k not in _KEY_ATTRIBUTES and "N" in v}


def _day_item(raw: dict) -> DayItem | None:
    _, day, *rest = raw["sk"]["S"].split("#", 3)
    if rest == ["RUN"]:
        return DayItem(day=day, stage=None, tally=_tally_of(raw))
    if len(rest) == 2 and rest[0] == "STAGE":
        return DayItem(day=day, stage=rest[1], tally=_tally_of(raw))
    return None


def _state_item(pipeline: str, state: PipelineState, version: int) -> dict:
    item = {"pk": _s(insights_pk(pipeline)), "sk": _s(STATE_SK), "version": _n(version)}
    for name, value in (("red_since", format_iso(state.red_since)), ("pending_day", state.pending_day),
                        ("pending_run", state.pending_run), ("failed_at", format_iso(state.failed_at)),
                        ("restore_incident", state.restore_incident)):
        if value is not None:
            item[name] = _s(value)
    if state.commit_failures:
        failures = [list(f) for f in state.commit_failures]
        item["commit_failures"] = _s(json.dumps(failures, separators=(",", ":")))
    return item


def signal_sk(key: str) -> str:
    return "SIGNAL#" + hashlib.sha256(key.encode("utf-8")).hexdigest()


def _signal_item(signal: DeploymentSignal) -> dict:
    item = {"pk": _s(insights_pk(signal.pipeline)), "sk": _s(signal_sk(signal.key)), "kind": _s(signal.kind),
            "at": _s(format_iso(signal.at)), "key": _s(signal.key)}
    if signal.incident is not None:
        item["incident"] = _s(signal.incident)
    return item


def _rebuild_item(record: RebuildRecord) -> dict:
    item = {"pk": _s(ALL_PIPELINES), "sk": _s(REBUILD_SK), "id": _s(record.id), "status": _s(record.status),
            "started_at": _s(format_iso(record.started_at)), "updated_at": _s(format_iso(record.updated_at)),
            **{name: _n(getattr(record, name)) for name in _REBUILD_COUNTS}}
    for name, value in (("by", record.by), ("finished_at", format_iso(record.finished_at)),
                        ("error", record.error)):
        if value is not None:
            item[name] = _s(value)
    return item


def _attempt_mark_item(run_id: str, mark: AttemptMark) -> dict:
    item = {"pk": _s(marks_pk(run_id)), "sk": _s(attempt_mark_sk(mark.position, mark.attempt)),
            "status": _s(mark.status.value), "ended_at": _s(format_iso(mark.ended_at))}
    if mark.environment is not None:
        item["environment"] = _s(mark.environment)
    if mark.name is not None:
        item["name"] = _s(mark.name)
    return item


def _run_mark_item(run_id: str, counted: RunCounted) -> dict:
    item = {"pk": _s(marks_pk(run_id)), "sk": _s(RUN_MARK_SK), "order": _n(counted.order),
            "counted": _s(json.dumps(counted.tallies, sort_keys=True, separators=(",", ":")))}
    if counted.ended_at is not None:
        item["ended_at"] = _s(format_iso(counted.ended_at))
    return item


class InsightsStore:
    """``InsightsStore`` on the table of ``items``; transactions go through the ``Writer``."""

    def __init__(self, items: ItemModels, writer: Writer, pause=jittered_pause) -> None:
        self._items = items
        self._writer = writer
        self._table = items.table_name
        self._pause = pause

    def _send(self, items: list[TxItem]) -> None:
        """One transaction, sent again (bounded, jittered) while DynamoDB cancels it only for
        another one in flight on the same item (the every-pipeline day item is shared)."""
        for attempt in range(CONFLICT_ATTEMPTS):
            try:
                self._writer.transact_write(items)
                return
            except Exception as error:
                if attempt + 1 < CONFLICT_ATTEMPTS and _only_transaction_conflicts(error):
                    self._pause(attempt)
                    continue
                raise

    @property
    def _client(self):
        return self._items.connection().client

    # ---- the consumer ------------------------------------------------------------------------------

    def run_marks(self, run_id: str) -> RunMarks:
        marks = RunMarks()
        start = None
        while True:
            params = {"TableName": self._table, "KeyConditionExpression": "#pk = :pk",
                      "ExpressionAttributeNames": {"#pk": "pk"},
                      "ExpressionAttributeValues": {":pk": _s(marks_pk(run_id))}, "ConsistentRead": True}
            if start:
                params["ExclusiveStartKey"] = start
            page = self._client.query(**params)
            for raw in page.get("Items", []):
                sk = raw["sk"]["S"]
                if sk == RUN_MARK_SK:
                    marks.counted = RunCounted(order=int(raw["order"]["N"]),
                                               tallies=json.loads(raw["counted"]["S"]),
                                               ended_at=parse_iso(raw.get("ended_at", {}).get("S")))
                elif sk.startswith("A#"):
                    _, position, attempt = sk.split("#")
                    marks.attempts.append(AttemptMark(
                        position=int(position), attempt=int(attempt), status=StageStatus(raw["status"]["S"]),
                        ended_at=parse_iso(raw["ended_at"]["S"]),
                        environment=raw.get("environment", {}).get("S"), name=raw.get("name", {}).get("S")))
                elif sk.startswith("R#"):
                    _, position, attempt = sk.split("#")
                    marks.retries[(int(position), int(attempt))] = parse_iso(raw["at"]["S"])
            start = page.get("LastEvaluatedKey")
            if not start:
                return marks

    def add_attempt(self, attempt: FinishedAttempt, tally: Tally) -> bool:
        item = _attempt_mark_item(attempt.run_id, mark_of(attempt))
        marker = TxItem(PUT, {"TableName": self._table, "Item": item,
                              "ConditionExpression": "attribute_not_exists(pk)"}, MARKER_TAG)
        day = day_of(attempt.ended_at)
        updates = [add_request(self._table, insights_pk(p), day_sk(day, attempt.name), tally)
                   for p in (attempt.pipeline, None)]
        try:
            self._send([marker, *[TxItem(UPDATE, u) for u in updates if u is not None]])
        except Exception as error:
            if MARKER_TAG in failed_tags(error):
                return False
            raise
        return True

    def record_retry(self, retry: RetryRecorded) -> None:
        self._client.put_item(TableName=self._table, Item={
            "pk": _s(marks_pk(retry.run_id)), "sk": _s(retry_mark_sk(retry.position, retry.attempt)),
            "at": _s(format_iso(retry.at))})

    def pipeline_state(self, pipeline: str) -> PipelineState:
        raw = self._client.get_item(TableName=self._table, ConsistentRead=True,
                                    Key={"pk": _s(insights_pk(pipeline)), "sk": _s(STATE_SK)}).get("Item")
        if raw is None:
            return PipelineState()

        def text(name: str) -> str | None:
            return raw.get(name, {}).get("S")

        failures = tuple((str(c), str(n), str(r)) for c, n, r in json.loads(text("commit_failures") or "[]"))
        return PipelineState(red_since=parse_iso(text("red_since")), pending_day=text("pending_day"),
                             pending_run=text("pending_run"), failed_at=parse_iso(text("failed_at")),
                             commit_failures=failures, restore_incident=text("restore_incident"),
                             version=int(raw["version"]["N"]))

    def add_run(self, run: FinishedRun, counted_before: RunCounted | None, counted: dict[str, Tally],
                added: dict[tuple[str, str | None], Tally], before: PipelineState,
                after: PipelineState) -> bool:
        if counted_before is None:
            marker_condition: dict = {"ConditionExpression": "attribute_not_exists(pk)"}
        else:
            marker_condition = {"ConditionExpression": "#o = :o", "ExpressionAttributeNames": {"#o": "order"},
                                "ExpressionAttributeValues": {":o": _n(counted_before.order)}}
        marker = _run_mark_item(run.run_id, RunCounted(run.order, counted, run.ended_at))
        items = [TxItem(PUT, {"TableName": self._table, **marker_condition, "Item": marker}, MARKER_TAG)]
        if after != before:
            items.append(self._state_put(run.pipeline, before, after))
        items += self._day_adds(run.pipeline, added)
        try:
            self._send(items)
        except Exception as error:
            failed = failed_tags(error)
            if failed:
                raise ConcurrentModification(f"insights of run {run.run_id!r} changed meanwhile") from None
            raise
        return True

    def _day_adds(self, pipeline: str, added: dict[tuple[str, str | None], Tally]) -> list[TxItem]:
        """The ADDs of ``added`` (by day and stage name, None: the runs' item) to the pipeline's day
        items and every pipeline's, in key order (a transaction's items in a stable order)."""
        items = []
        for (day, stage), tally in sorted(added.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
            for pk in (insights_pk(pipeline), insights_pk(None)):
                request = add_request(self._table, pk, day_sk(day, stage), tally)
                if request is not None:
                    items.append(TxItem(UPDATE, request))
        return items

    def _state_put(self, pipeline: str, before: PipelineState, after: PipelineState) -> TxItem:
        condition: dict = (
            {"ConditionExpression": "attribute_not_exists(pk)"} if before.version == 0 else
            {"ConditionExpression": "version = :v", "ExpressionAttributeValues": {":v": _n(before.version)}})
        state = _state_item(pipeline, after, before.version + 1)
        return TxItem(PUT, {"TableName": self._table, **condition, "Item": state}, STATE_TAG)

    def add_signal(self, signal: DeploymentSignal, added: dict[str, Tally], before: PipelineState,
                   after: PipelineState) -> bool:
        marker = TxItem(PUT, {"TableName": self._table, "Item": _signal_item(signal),
                              "ConditionExpression": "attribute_not_exists(pk)"}, MARKER_TAG)
        items = [marker]
        if after != before:
            items.append(self._state_put(signal.pipeline, before, after))
        items += self._day_adds(signal.pipeline, {(day, None): tally for day, tally in added.items()})
        try:
            self._send(items)
        except Exception as error:
            failed = failed_tags(error)
            if MARKER_TAG in failed:
                return False
            if failed:
                raise ConcurrentModification(
                    f"insights of pipeline {signal.pipeline!r} changed meanwhile") from None
            raise
        return True

    def signals_of(self, pipeline: str) -> list[DeploymentSignal]:
        found, start = [], None
        while True:
            params: dict = {"TableName": self._table, "ConsistentRead": True,
                            "KeyConditionExpression": "#pk = :pk AND begins_with(#sk, :p)",
                            "ExpressionAttributeNames": {"#pk": "pk", "#sk": "sk"},
                            "ExpressionAttributeValues": {":pk": _s(insights_pk(pipeline)),
                                                          ":p": _s("SIGNAL#")}}
            if start:
                params["ExclusiveStartKey"] = start
            page = self._client.query(**params)
            for raw in page.get("Items", []):
                at = parse_iso(raw["at"]["S"])
                if at is not None:
                    found.append(DeploymentSignal(pipeline=pipeline, key=raw["key"]["S"],
                                                  kind=raw["kind"]["S"], at=at,
                                                  incident=raw.get("incident", {}).get("S")))
            start = page.get("LastEvaluatedKey")
            if not start:
                return sorted(found, key=lambda signal: (signal.at, signal.key))

    # ---- the API -----------------------------------------------------------------------------------

    def read_days(self, pipeline: str | None, start: str, end: str) -> DaysRead:
        result = DaysRead()
        last = None
        while True:
            params = {"TableName": self._table,
                      "KeyConditionExpression": "#pk = :pk AND #sk BETWEEN :a AND :b",
                      "ExpressionAttributeNames": {"#pk": "pk", "#sk": "sk"},
                      "ExpressionAttributeValues": {":pk": _s(insights_pk(pipeline)),
                                                    ":a": _s(f"DAY#{start}#"), ":b": _s(f"DAY#{end}#~")},
                      "ReturnConsumedCapacity": "TOTAL"}
            if last:
                params["ExclusiveStartKey"] = last
            page = self._client.query(**params)
            result.queries += 1
            result.items_read += int(page.get("ScannedCount", len(page.get("Items", []))))
            result.capacity_units += float(page.get("ConsumedCapacity", {}).get("CapacityUnits", 0))
            result.items += [item for raw in page.get("Items", []) if (item := _day_item(raw)) is not None]
            last = page.get("LastEvaluatedKey")
            if not last:
                return result

    # ---- rebuild -----------------------------------------------------------------------------------

    def _partition_keys(self, pk: str, prefix: str | None = None) -> list[dict]:
        keys, start = [], None
        while True:
            params: dict = {"TableName": self._table, "ProjectionExpression": "#pk, #sk",
                            "KeyConditionExpression": "#pk = :pk",
                            "ExpressionAttributeNames": {"#pk": "pk", "#sk": "sk"},
                            "ExpressionAttributeValues": {":pk": _s(pk)}}
            if prefix is not None:
                params["KeyConditionExpression"] += " AND begins_with(#sk, :p)"
                params["ExpressionAttributeValues"][":p"] = _s(prefix)
            if start:
                params["ExclusiveStartKey"] = start
            page = self._client.query(**params)
            keys += [{"pk": raw["pk"], "sk": raw["sk"]} for raw in page.get("Items", [])]
            start = page.get("LastEvaluatedKey")
            if not start:
                return keys

    def _write_batches(self, puts: list[dict], deletes: list[dict]) -> int:
        requests = [{"DeleteRequest": {"Key": key}} for key in deletes] + [{"PutRequest": {"Item": item}}
                                                                              for item in puts]
        for begin in range(0, len(requests), _WRITE_BATCH):
            pending = {self._table: requests[begin:begin + _WRITE_BATCH]}
            while pending:
                pending = self._client.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}
        return len(puts)

    def _replace_days(self, pk: str, days: dict[tuple[str, str | None], Tally]) -> int:
        puts = []
        for (day, stage), tally in sorted(days.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
            item = {"pk": _s(pk), "sk": _s(day_sk(day, stage))}
            item.update({k: _n(v) for k, v in tally.items() if v != 0})
            puts.append(item)
        kept = {item["sk"]["S"] for item in puts}
        stale = [key for key in self._partition_keys(pk, "DAY#") if key["sk"]["S"] not in kept]
        return self._write_batches(puts, stale)

    def replace_pipeline(self, pipeline: str, days: dict[tuple[str, str | None], Tally],
                         state: PipelineState, marks: dict[str, RunMarks]) -> int:
        written = self._replace_days(insights_pk(pipeline), days)
        # the export's totals were folded from the days replaced: the next export starts anew
        # (a batch delete, as the rebuild's other deletes: the rebuild function's policy has no
        # DeleteItem)
        self._write_batches([], [{"pk": _s(insights_pk(pipeline)), "sk": _s(EXPORT_SK)}])
        current = self.pipeline_state(pipeline)
        self._client.put_item(TableName=self._table, Item=_state_item(pipeline, state, current.version + 1))
        for run_id, run_marks in marks.items():
            puts = [_attempt_mark_item(run_id, mark) for mark in run_marks.attempts]
            puts += [{"pk": _s(marks_pk(run_id)), "sk": _s(retry_mark_sk(position, attempt)),
                      "at": _s(format_iso(at))} for (position, attempt), at in run_marks.retries.items()]
            if run_marks.counted is not None:
                puts.append(_run_mark_item(run_id, run_marks.counted))
            kept = {item["sk"]["S"] for item in puts}
            stale = [key for key in self._partition_keys(marks_pk(run_id)) if key["sk"]["S"] not in kept]
            written += self._write_batches(puts, stale)
        return written + 1

    def replace_all_pipelines(self, days: dict[tuple[str, str | None], Tally]) -> int:
        return self._replace_days(ALL_PIPELINES, days)

    # ---- the OTLP export's totals -------------------------------------------------------------------

    def export_totals(self, pipeline: str) -> ExportTotals | None:
        raw = self._client.get_item(TableName=self._table, ConsistentRead=True,
                                    Key={"pk": _s(insights_pk(pipeline)), "sk": _s(EXPORT_SK)}).get("Item")
        if raw is None:
            return None
        counts = json.loads(raw["counts"]["S"])
        return ExportTotals(since=raw["since"]["S"], through=raw["through"]["S"], runs=counts["runs"],
                            stages=counts["stages"], version=int(raw["version"]["N"]))

    def save_export_totals(self, pipeline: str, totals: ExportTotals) -> None:
        counts = json.dumps({"runs": totals.runs, "stages": totals.stages}, sort_keys=True,
                            separators=(",", ":"))
        item = {"pk": _s(insights_pk(pipeline)), "sk": _s(EXPORT_SK), "since": _s(totals.since),
                "through": _s(totals.through), "counts": _s(counts), "version": _n(totals.version + 1)}
        condition: dict = {"ConditionExpression": "attribute_not_exists(pk)"} if totals.version == 0 else {
            "ConditionExpression": "version = :v", "ExpressionAttributeValues": {":v": _n(totals.version)}}
        try:
            self._client.put_item(TableName=self._table, Item=item, **condition)
        except Exception as error:
            code = getattr(error, "response", {}).get("Error", {}).get("Code")
            if code != "ConditionalCheckFailedException":
                raise
            raise ConcurrentModification(f"the export totals of {pipeline!r} changed meanwhile") from error

    # ---- the rebuild's record ------------------------------------------------------------------------

    def rebuild_record(self) -> RebuildRecord | None:
        raw = self._client.get_item(TableName=self._table, ConsistentRead=True,
                                    Key={"pk": _s(ALL_PIPELINES), "sk": _s(REBUILD_SK)}).get("Item")
        if raw is None:
            return None

        def text(name: str) -> str | None:
            return raw.get(name, {}).get("S")

        started, updated = parse_iso(text("started_at")), parse_iso(text("updated_at"))
        assert started is not None and updated is not None, "a rebuild record has both"
        return RebuildRecord(id=raw["id"]["S"], status=raw["status"]["S"], started_at=started,
                             updated_at=updated, by=text("by"), finished_at=parse_iso(text("finished_at")),
                             error=text("error"),
                             **{name: int(raw.get(name, {}).get("N", "0")) for name in _REBUILD_COUNTS})

    def _put_rebuild(self, record: RebuildRecord, condition: str, names: dict, values: dict) -> bool:
        client = self._client
        try:
            client.put_item(TableName=self._table, Item=_rebuild_item(record), ConditionExpression=condition,
                            ExpressionAttributeNames=names, ExpressionAttributeValues=values)
        except ClientError as error:  # by its code: each thread's client has its own exception classes
            if error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def claim_rebuild(self, record: RebuildRecord, stale_before: datetime) -> bool:
        return self._put_rebuild(
            record, "attribute_not_exists(#id) OR #st <> :running OR #u <= :stale",
            {"#id": "id", "#st": "status", "#u": "updated_at"},
            {":running": _s(RUNNING), ":stale": _s(format_iso(stale_before))})

    def save_rebuild(self, record: RebuildRecord) -> bool:
        return self._put_rebuild(record, "#id = :id AND #st = :running", {"#id": "id", "#st": "status"},
                                 {":id": _s(record.id), ":running": _s(RUNNING)})

