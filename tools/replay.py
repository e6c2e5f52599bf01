"""Replay what the failure queues and the stream failure bucket hold, once the cause is fixed.

    python -m tools.replay SOURCE [--stack NAME] [--bucket NAME] [--max N] [--dry-run]

SOURCE is one of (queues are ``<stack>-<suffix>``; docs/runbook.md says when to use which):

- ``ingest-dlq``      -> back to ``<stack>-ingest``: messages SQS moved after 5 receives (sent with
                         their original message id, so the handler's idempotency keys match and a
                         message that was applied before is not applied again), and messages the
                         handlers dead-lettered as unusable (their ``message``). Lambda on-failure
                         records (the EventBridge and SNS functions) are invoked again instead,
                         with the same payload (idempotent on the event / SNS message id).
- ``deliveries-dlq``  -> ``<stack>-deliveries``: one more attempt of each dead-lettered delivery.
- ``timers-dlq``      -> ``<stack>-timers``; records of failed sweeps are dropped (the sweep runs
                         every minute and does the same work).
- ``rules-dlq``       -> the rule's target function (the message's ``TARGET_ARN``), invoked
                         asynchronously with the event.
- ``stream-failures`` -> each object of the failure bucket (``--bucket``, default the stack's
                         ``StreamFailureBucketName`` output) is the whole failed invocation: its
                         function is invoked again with it (synchronously); the object is deleted
                         once the function succeeded. Then purge ``<stack>-stream-failures``.

A message is deleted from its queue only after it was sent on (or invoked); one that cannot be
replayed stays, and is reported. Messages whose secret variables were redacted when they were
dead-lettered are never replayed (they would store the redaction mark as the secret): resend
them from their origin. Exit status: 0 when everything was replayed, 1 otherwise.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import boto3  # type: ignore[import-untyped]  # pinned in requirements-dev.txt (tools run there)

REDACTED = "[REDACTED]"  # chalicelib/events/messages.py
REPLAY_OF = "stagetrackReplayOf"  # message attribute: the id the message was first delivered with
QUEUES = {"ingest-dlq": "ingest", "deliveries-dlq": "deliveries", "timers-dlq": "timers",
          "rules-dlq": None}
SOURCES = (*QUEUES, "stream-failures")


@dataclass
class Report:
    replayed: int = 0
    dropped: int = 0
    kept: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"replayed": self.replayed, "dropped": self.dropped, "kept": self.kept}


class Replayer:
    """The AWS clients are given (tests pass moto's, and a fake Lambda: moto cannot run one)."""

    def __init__(self, stack: str, *, sqs=None, s3=None, lam=None, dry_run: bool = False) -> None:
        self.stack = stack
        self.sqs = sqs or boto3.client("sqs")
        self.s3 = s3 or boto3.client("s3")
        self._lam = lam
        self.dry_run = dry_run

    @property
    def lam(self):
        if self._lam is None:
            self._lam = boto3.client("lambda")
        return self._lam

    def queue_url(self, suffix: str) -> str:
        return self.sqs.get_queue_url(QueueName=f"{self.stack}-{suffix}")["QueueUrl"]

    # ---- queues ---------------------------------------------------------------------------------

    def replay_queue(self, source: str, limit: int | None = None) -> Report:
        report = Report()
        dlq = self.queue_url(source)
        target = QUEUES[source]
        target_url = self.queue_url(target) if target else None
        seen: set[str] = set()
        while limit is None or report.replayed + report.dropped + len(report.kept) < limit:
            batch = self.sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10, WaitTimeSeconds=0,
                                             VisibilityTimeout=60, AttributeNames=["All"],
                                             MessageAttributeNames=["All"]).get("Messages", [])
            fresh = [m for m in batch if m["MessageId"] not in seen]
            if not fresh:
                break
            for message in fresh:
                seen.add(message["MessageId"])
                try:
                    done = self._replay_message(source, message, target_url)
                except Exception as error:  # noqa: BLE001 - report it, keep the message, go on
                    done = f"kept: {type(error).__name__}: {error}"
                if done in ("replayed", "dropped"):
                    setattr(report, done, getattr(report, done) + 1)
                    if not self.dry_run:
                        self.sqs.delete_message(QueueUrl=dlq, ReceiptHandle=message["ReceiptHandle"])
                else:
                    report.kept.append(f"{message['MessageId']}: {done}")
        return report

    def _replay_message(self, source: str, message: dict, target_url: str | None) -> str:
        body = message["Body"]
        record = _json(body)
        if isinstance(record, dict) and "requestContext" in record and "requestPayload" in record:
            if source == "timers-dlq":  # a failed sweep: the next one does the same work
                return "dropped"
            return self._invoke(record["requestContext"]["functionArn"], record["requestPayload"],
                                asynchronous=True)
        if source == "rules-dlq":
            attributes = message.get("MessageAttributes", {})
            target = attributes.get("TARGET_ARN", {}).get("StringValue")
            if not target:
                return "kept: no TARGET_ARN attribute"
            return self._invoke(target, record if record is not None else body, asynchronous=True)
        attributes = {}
        if source == "ingest-dlq" and isinstance(record, dict) and "origin" in record and "message" in record:
            body = record["message"]  # dead-lettered by a handler as unusable: the message itself
        elif source == "ingest-dlq":  # moved by SQS after its receives: keep its identity
            original = message.get("MessageAttributes", {}).get(REPLAY_OF, {}).get("StringValue")
            attributes[REPLAY_OF] = {"DataType": "String", "StringValue": original or message["MessageId"]}
        if source == "ingest-dlq" and REDACTED in body:
            return "kept: its secret values were redacted; resend it from its origin"
        if source == "deliveries-dlq" and isinstance(record, dict) and "deadLetteredAt" in record:
            for key in ("lastStatus", "lastError", "deadLetteredAt"):
                record.pop(key, None)
            record["attempt"] = int(record.get("attempt", 0)) + 1  # one more attempt, recorded apart
            body = json.dumps(record, separators=(",", ":"))
        if not self.dry_run:
            self.sqs.send_message(QueueUrl=target_url, MessageBody=body,
                                  **({"MessageAttributes": attributes} if attributes else {}))
        return "replayed"

    def _invoke(self, function: str, payload, *, asynchronous: bool) -> str:
        if self.dry_run:
            return "replayed"
        answer = self.lam.invoke(FunctionName=function, Payload=json.dumps(payload).encode(),
                                 InvocationType="Event" if asynchronous else "RequestResponse")
        if answer.get("FunctionError"):
            return f"kept: {function} failed again: {answer['FunctionError']}"
        return "replayed"

    # ---- the stream failure bucket --------------------------------------------------------------

    def replay_bucket(self, bucket: str, limit: int | None = None) -> Report:
        report = Report()
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        for page in pages:
            for item in page.get("Contents", []):
                if limit is not None and report.replayed + len(report.kept) >= limit:
                    return report
                key = item["Key"]
                try:
                    record = json.loads(self.s3.get_object(Bucket=bucket, Key=key)["Body"].read())
                    payload = record["payload"]
                    if isinstance(payload, str):
                        payload = json.loads(payload)
                    done = self._invoke(record["requestContext"]["functionArn"], payload,
                                        asynchronous=False)
                except Exception as error:  # noqa: BLE001 - report it, keep the object, go on
                    done = f"kept: {type(error).__name__}: {error}"
                if done == "replayed":
                    report.replayed += 1
                    if not self.dry_run:
                        self.s3.delete_object(Bucket=bucket, Key=key)
                else:
                    report.kept.append(f"{key}: {done}")
        return report


def _json(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return None


def stack_bucket(stack: str) -> str:
    outputs = boto3.client("cloudformation").describe_stacks(StackName=stack)["Stacks"][0]["Outputs"]
    return next(o["OutputValue"] for o in outputs if o["OutputKey"] == "StreamFailureBucketName")


def main(argv: list[str] | None = None, *, replayer: Callable[..., Replayer] = Replayer) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.replay",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("source", choices=SOURCES)
    parser.add_argument("--stack", default="stagetrack", help="the stack name (default stagetrack)")
    parser.add_argument("--bucket", help="stream-failures: the bucket (default: the stack's output)")
    parser.add_argument("--max", type=int, default=None, help="replay at most this many")
    parser.add_argument("--dry-run", action="store_true", help="say what would be replayed; change nothing")
    args = parser.parse_args(argv)
    tool = replayer(args.stack, dry_run=args.dry_run)
    if args.source == "stream-failures":
        report = tool.replay_bucket(args.bucket or stack_bucket(args.stack), args.max)
    else:
        report = tool.replay_queue(args.source, args.max)
    print(json.dumps({"source": args.source, **report.as_dict()}, indent=2))
    return 0 if not report.kept else 1


if __name__ == "__main__":
    sys.exit(main())
