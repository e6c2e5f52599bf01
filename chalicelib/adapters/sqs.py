"""SQS queues stagetrack writes to: subscriber deliveries (and their delayed retries) and the
dead-letter queues. One botocore client per process, created on first use."""
from __future__ import annotations

MAX_BATCH = 10
MAX_DELAY_SECONDS = 900


class SqsQueue:
    def __init__(self, url: str, region: str | None = None, client=None) -> None:
        self.url = url
        self.region = region or _region_of(url)
        self._client = client

    @property
    def client(self):
        if self._client is None:
            from .aws import client

            self._client = client("sqs", self.region)
        return self._client

    def send(self, body: str, delay_seconds: int = 0, attributes: dict[str, str] | None = None) -> str:
        params = {"QueueUrl": self.url, "MessageBody": body,
                  "DelaySeconds": max(0, min(MAX_DELAY_SECONDS, int(delay_seconds)))}
        if attributes:
            params["MessageAttributes"] = {k: {"DataType": "String", "StringValue": v[:1000]}
                                           for k, v in attributes.items()}
        return self.client.send_message(**params)["MessageId"]

    def send_batch(self, bodies: list[str]) -> int:
        for start in range(0, len(bodies), MAX_BATCH):
            chunk = bodies[start:start + MAX_BATCH]
            entries = [{"Id": str(i), "MessageBody": body} for i, body in enumerate(chunk)]
            response = self.client.send_message_batch(QueueUrl=self.url, Entries=entries)
            failed = response.get("Failed") or []
            if failed:  # sent again one by one; a second failure fails the whole batch (retried)
                for failure in failed:
                    self.client.send_message(QueueUrl=self.url, MessageBody=chunk[int(failure["Id"])])
        return len(bodies)


def _region_of(url: str) -> str | None:
    """https://sqs.<region>.amazonaws.com/<account>/<name>"""
    host = url.split("//", 1)[-1].split("/", 1)[0]
    parts = host.split(".")
    return parts[1] if len(parts) > 2 and parts[0] == "sqs" else None
