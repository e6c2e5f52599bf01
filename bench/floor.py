"""The bare DynamoDB calls an operation needs at the least, built by hand with boto3's low-level
client, for bench_writes.py's latency ratio.

Each floor runs on a *twin* of the measured run: the same items (as DynamoDB holds them, read
back raw after the real operation) under another run id, in the same table, so the floor pays
for the same item sizes and the same index entries. What a floor sends:

| operation | bare calls |
|---|---|
| create run | 1 UpdateItem (the pipeline's counter) + 1 TransactWriteItems per 100 items (Put each) |
| one-stage change (status PATCH) | 1 BatchGetItem (run + stage) + 1 TransactWriteItems: Put the |
|   | stage as the operation left it (if it exists), Update the run's summary with an ADD |
| retry of a stage | the same, plus a Put of the attempt item it ended |
| rename a stage | 1 Query of the run (names are unique in a run) + that TransactWriteItems |
| GET run | 1 Query of the run's partition |
| GET stage | 1 GetItem |
| GET run with attempts | 1 Query of the run + 1 Query per retried stage's attempt partition |
| first page of attempts | 1 GetItem (the stage) + 1 Query of 21 attempt items, newest first |
| cancel run | 1 Query + 1 TransactWriteItems per 100 items it changed (Put each as it left it) |
| delete run | 1 Query + 1 TransactWriteItems per 100 keys (Delete each, attempt items too) |

Reads are strongly consistent, as the store's are. No condition on versions beyond the item
existing: the floor is what DynamoDB must do, not what stagetrack decides.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

TRANSACTION_ITEMS = 100


def _key(item: dict) -> dict:
    return {"pk": item["pk"], "sk": item["sk"]}


@dataclass
class Snapshot:
    """A run's items as DynamoDB holds them: the run partition (sk -> item) and, per stage id,
    its ended-attempt items."""

    run_id: str
    items: dict[str, dict]
    attempts: dict[str, list[dict]] = field(default_factory=dict)

    def renamed(self, twin_id: str) -> Snapshot:
        def swap(item: dict) -> dict:
            return json.loads(json.dumps(item).replace(self.run_id, twin_id))

        return Snapshot(twin_id, {sk: swap(i) for sk, i in self.items.items()},
                        {sid.replace(self.run_id, twin_id, 1): [swap(a) for a in items]
                         for sid, items in self.attempts.items()})

    def stage(self, stage_id: str) -> dict:
        position = int(stage_id.rsplit(":", 1)[1])
        return self.items[f"STAGE#{position:04d}"]

    @property
    def run(self) -> dict:
        return self.items["#RUN"]


class Floor:
    """Reads snapshots and sends the bare calls of each operation's floor on a twin run."""

    def __init__(self, endpoint: str, table: str) -> None:
        import boto3  # type: ignore[import-untyped]

        self.client = boto3.client("dynamodb", region_name="us-east-1", endpoint_url=endpoint)
        self.table = table
        self._twins = 0

    # -- setup (never timed) -----------------------------------------------------------------

    def _query_all(self, pk: str, **extra) -> list[dict]:
        items: list[dict] = []
        params = {"TableName": self.table, "KeyConditionExpression": "pk = :pk",
                  "ExpressionAttributeValues": {":pk": {"S": pk}}, "ConsistentRead": True, **extra}
        while True:
            page = self.client.query(**params)
            items += page["Items"]
            if "LastEvaluatedKey" not in page:
                return items
            params["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def snapshot(self, run_id: str, attempts_of: tuple[str, ...] | None = None) -> Snapshot:
        """The run's partition, and the attempt partitions of ``attempts_of`` (stage ids; None:
        every stage's)."""
        items = {i["sk"]["S"]: i for i in self._query_all(f"RUN#{run_id}")}
        if attempts_of is None:
            attempts_of = tuple(f"{run_id}:{int(sk[6:])}" for sk in items if sk.startswith("STAGE#"))
        return Snapshot(run_id, items, {sid: self._query_all(f"ATTEMPTS#{sid}") for sid in attempts_of})

    def twin_id(self) -> str:
        self._twins += 1
        return f"floortwin:{self._twins}"

    def plant(self, snapshot: Snapshot) -> None:
        """Writes a twin's items (BatchWriteItem; setup, not a floor)."""
        items = list(snapshot.items.values()) + [a for group in snapshot.attempts.values() for a in group]
        for start in range(0, len(items), 25):
            pending = {self.table: [{"PutRequest": {"Item": i}} for i in items[start:start + 25]]}
            while pending:
                pending = self.client.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}

    # -- the floors (timed) ------------------------------------------------------------------

    def _transact(self, actions: list[dict]) -> None:
        for start in range(0, len(actions), TRANSACTION_ITEMS):
            self.client.transact_write_items(TransactItems=actions[start:start + TRANSACTION_ITEMS])

    def _put(self, item: dict, *, exists: bool = False) -> dict:
        put: dict = {"TableName": self.table, "Item": item}
        if exists:
            put["ConditionExpression"] = "attribute_exists(pk)"
        return {"Put": put}

    def _summary(self, run: dict) -> dict:
        return {"Update": {"TableName": self.table, "Key": _key(run),
                           "UpdateExpression": "ADD floor_changes :one",
                           "ExpressionAttributeValues": {":one": {"N": "1"}}}}

    def _query_run(self, run: dict) -> None:
        self._query_all(run["pk"]["S"])

    def create(self, after: Snapshot) -> None:
        counter = {"pk": {"S": "PIPE#floortwin"}, "sk": {"S": "#PIPELINE"}}
        self.client.update_item(TableName=self.table, Key=counter, UpdateExpression="ADD floor_counter :one",
                                ExpressionAttributeValues={":one": {"N": "1"}})
        self._transact([self._put(i) for i in after.items.values()])

    def stage_change(self, after: Snapshot, stage_id: str, ended: dict | None = None) -> None:
        stage, run = after.stage(stage_id), after.run
        self.client.batch_get_item(RequestItems={self.table: {"Keys": [_key(run), _key(stage)],
                                                              "ConsistentRead": True}})
        actions = [self._put(stage, exists=True), self._summary(run)]
        if ended is not None:
            actions.append(self._put(ended))
        self._transact(actions)

    def rename(self, after: Snapshot, stage_id: str) -> None:
        self._query_run(after.run)
        self._transact([self._put(after.stage(stage_id), exists=True), self._summary(after.run)])

    def get_run(self, snapshot: Snapshot) -> None:
        self._query_run(snapshot.run)

    def get_stage(self, snapshot: Snapshot, stage_id: str) -> None:
        self.client.get_item(TableName=self.table, Key=_key(snapshot.stage(stage_id)), ConsistentRead=True)

    def get_run_with_attempts(self, snapshot: Snapshot) -> None:
        self._query_run(snapshot.run)
        for stage_id, items in snapshot.attempts.items():
            if items:
                self._query_all(f"ATTEMPTS#{stage_id}")

    def attempts_page(self, snapshot: Snapshot, stage_id: str, limit: int = 20) -> None:
        self.get_stage(snapshot, stage_id)
        if snapshot.attempts.get(stage_id):
            self.client.query(TableName=self.table, KeyConditionExpression="pk = :pk",
                              ExpressionAttributeValues={":pk": {"S": f"ATTEMPTS#{stage_id}"}},
                              ConsistentRead=True, ScanIndexForward=False, Limit=limit + 1)

    def cancel(self, before: Snapshot, after: Snapshot) -> None:
        """Reads the run, writes the items the cancel changed (none when the run had ended)."""
        self._query_run(after.run)
        self._transact([self._put(i) for sk, i in after.items.items() if before.items.get(sk) != i])

    def delete(self, before: Snapshot) -> None:
        self._query_run(before.run)
        keys = [_key(i) for i in before.items.values()] + [
            _key(a) for group in before.attempts.values() for a in group]
        self._transact([{"Delete": {"TableName": self.table, "Key": k}} for k in keys])


def timed(action: Callable[[], object]) -> float:
    import time

    started = time.perf_counter()
    action()
    return time.perf_counter() - started
