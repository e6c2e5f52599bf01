"""Stand-ins for the AWS plumbing of the outbound side under `make run` (chalice local has no
stream triggers and no SQS): a follower of the table's DynamoDB stream (DynamoDB Local has
streams) and an in-memory delay queue. The same service.outbox functions run on them."""
from __future__ import annotations

import copy
import heapq
import itertools
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC


class StreamTail:
    """Reads new records of the table's stream, shard by shard, shaped as Lambda delivers them.

    Shards present when it starts are read from ``start`` (LATEST: what happens from now on;
    a restart of `make run` does not replay yesterday's changes); shards opened later (DynamoDB
    rolls them over) from their beginning. An expired iterator resumes after the last record read.
    """

    def __init__(self, table_name: str, region: str, endpoint: str | None, start: str = "LATEST") -> None:
        import botocore.session
        from botocore.config import Config

        session = botocore.session.get_session()
        # account-based endpoints off: DynamoDB Local (and moto's streams) answer the plain ones
        config = Config(account_id_endpoint_mode="disabled")
        dynamodb = session.create_client("dynamodb", region_name=region, endpoint_url=endpoint, config=config)
        self.streams = session.create_client("dynamodbstreams", region_name=region, endpoint_url=endpoint,
                                             config=config)
        self.arn = dynamodb.describe_table(TableName=table_name)["Table"]["LatestStreamArn"]
        self.start = start
        self.iterators: dict[str, str | None] = {}
        self.last: dict[str, str] = {}
        self._known_once = False
        self._discover()  # "from now on" means from here

    def _discover(self) -> None:
        start_key = None
        while True:
            params = {"StreamArn": self.arn}
            if start_key:
                params["ExclusiveStartShardId"] = start_key
            description = self.streams.describe_stream(**params)["StreamDescription"]
            for shard in description["Shards"]:
                shard_id = shard["ShardId"]
                if shard_id not in self.iterators:
                    kind = self.start if not self._known_once else "TRIM_HORIZON"
                    self.iterators[shard_id] = self._iterator(shard_id, kind)
            start_key = description.get("LastEvaluatedShardId")
            if not start_key:
                break
        self._known_once = True

    def _iterator(self, shard_id: str, kind: str, after: str | None = None) -> str | None:
        params = {"StreamArn": self.arn, "ShardId": shard_id, "ShardIteratorType": kind}
        if after:
            params["SequenceNumber"] = after
        return self.streams.get_shard_iterator(**params).get("ShardIterator")

    def read(self, limit: int = 1000) -> list[dict]:
        self._discover()
        records: list[dict] = []
        for shard_id, iterator in list(self.iterators.items()):
            if iterator is None:
                continue  # a closed shard, read to its end
            try:
                page = self.streams.get_records(ShardIterator=iterator, Limit=limit)
            except self.streams.exceptions.ExpiredIteratorException:
                last = self.last.get(shard_id)
                self.iterators[shard_id] = self._iterator(
                    shard_id, "AFTER_SEQUENCE_NUMBER" if last else "TRIM_HORIZON", last)
                continue
            for record in page["Records"]:
                records.append(self._shaped(record))
                self.last[shard_id] = record["dynamodb"]["SequenceNumber"]
            self.iterators[shard_id] = page.get("NextShardIterator")
        return records

    def _shaped(self, record: dict) -> dict:
        shaped = copy.deepcopy(record)
        moment = shaped["dynamodb"].get("ApproximateCreationDateTime")
        if hasattr(moment, "timestamp"):
            shaped["dynamodb"]["ApproximateCreationDateTime"] = moment.replace(
                tzinfo=moment.tzinfo or UTC).timestamp()
        shaped["eventSourceARN"] = self.arn
        return shaped


class MemoryQueue:
    """An SQS stand-in: ``send``/``send_batch`` like adapters.sqs.SqsQueue, and ``due()`` hands
    out the messages whose delay has passed (by ``now``, seconds; the monotonic clock)."""

    def __init__(self, now: Callable[[], float] = time.monotonic) -> None:
        self.now = now
        self._heap: list[tuple[float, int, str]] = []
        self._order = itertools.count()
        self._lock = threading.Lock()

    def send(self, body: str, delay_seconds: int = 0, attributes: dict[str, str] | None = None) -> str:
        with self._lock:
            heapq.heappush(self._heap, (self.now() + max(0, delay_seconds), next(self._order), body))
        return uuid.uuid4().hex

    def send_batch(self, bodies: list[str]) -> int:
        for body in bodies:
            self.send(body)
        return len(bodies)

    def due(self) -> list[str]:
        with self._lock:
            ready = []
            while self._heap and self._heap[0][0] <= self.now():
                ready.append(heapq.heappop(self._heap)[2])
            return ready

    def __len__(self) -> int:
        return len(self._heap)
