"""Webhook sources (their sealed secrets) and links from a sender's runs to ours.

Round trips:
- a webhook looks its source up: 1 GetItem (strongly consistent) on the ``SOURCES`` partition;
  admins list sources with 1 Query of it, create with 1 conditional PutItem, delete with 1
  DeleteItem. (Sources are few; one partition serves thousands of reads a second.)
- a sender's run -> our run: 1 GetItem of its link. A new run is written together with its
  link in ONE transaction (run, stages, link; each conditioned on not existing yet), so two
  deliveries racing to create the same run cannot make two: the loser's transaction fails on
  the link and it uses the winner's run. Its claimed run number stays unused (a gap).
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence

from pynamodb.exceptions import DeleteError, PutError, TransactWriteError

from ..domain.model import RunAggregate
from ..service.ports import StoredSource
from .models import ItemModels, LinkItem, SourceItem
from .repository import Repository, TxItem, Writer, _is_condition_failure, failed_tags, tx_put

__all__ = ["StoredSource", "SourceStore", "RunLinks"]

SOURCES_PK = "SOURCES"
LINK_SK = "#LINK"


def _source_sk(name: str) -> str:
    return f"SOURCE#{name}"


def _from_item(item: SourceItem) -> StoredSource:
    return StoredSource(name=item.name, type=item.source_type, sealed_secret=item.secret,
                        created_at=item.created_at, created_by=item.created_by)


class SourceStore:
    """The DynamoDB ``SourceStore`` (service/ports.py) on the table of ``items``."""

    def __init__(self, items: ItemModels, writer: Writer) -> None:
        self._model = items.source
        self._writer = writer

    def insert_source(self, source: StoredSource) -> bool:
        """False if a source of that name exists already."""
        item = self._model(pk=SOURCES_PK, sk=_source_sk(source.name), name=source.name,
                           source_type=source.type, secret=source.sealed_secret,
                           created_at=source.created_at, created_by=source.created_by)
        try:
            self._writer.put_item(item, SourceItem.pk.does_not_exist(), {"source": source.name})
        except (PutError, TransactWriteError) as error:
            if _is_condition_failure(error):
                return False
            raise
        return True

    def get_source(self, name: str) -> StoredSource | None:
        try:
            return _from_item(self._model.get(SOURCES_PK, _source_sk(name), consistent_read=True))
        except self._model.DoesNotExist:
            return None

    def list_sources(self) -> list[StoredSource]:
        return [_from_item(item) for item in self._model.query(SOURCES_PK, consistent_read=True)]

    def delete_source(self, name: str) -> StoredSource | None:
        """1 GetItem + 1 DeleteItem (admin only); None if there is no such source."""
        source = self.get_source(name)
        if source is None:
            return None
        try:
            self._model(pk=SOURCES_PK, sk=_source_sk(name)).delete(condition=SourceItem.pk.exists())
        except DeleteError as error:
            if not _is_condition_failure(error):
                raise
        return source


# ---- links: a sender's run -> our run ---------------------------------------------------------

def _link_pk(namespace: str, key: str) -> str:
    """Hashed: a sender's keys may be long ARNs or contain any character."""
    return "LINK#" + hashlib.sha256(f"{namespace}\n{key}".encode()).hexdigest()[:40]


def link_put(model: type[LinkItem], run_id: str, namespace: str, key: str, created_at: str) -> TxItem:
    """The new link (namespace, key) -> ``run_id``, on condition there is none yet (tag "link")."""
    link = model(pk=_link_pk(namespace, key), sk=LINK_SK, namespace=namespace,
                 external_key=key[:1024], run_id=run_id, created_at=created_at)
    return tx_put(link, LinkItem.pk.does_not_exist(), tag="link")


class RunLinks:
    """The DynamoDB ``RunLinks`` (service/ports.py): links on the table of ``items``, each new
    one written in the transaction of its run (through ``runs``)."""

    def __init__(self, items: ItemModels, runs: Repository) -> None:
        self._model = items.link
        self._runs = runs

    def linked_run(self, namespace: str, key: str) -> str | None:
        try:
            return self._model.get(_link_pk(namespace, key), LINK_SK, consistent_read=True).run_id
        except self._model.DoesNotExist:
            return None

    def insert_linked_run(self, aggregate: RunAggregate, namespace: str, key: str, created_at: str,
                          extra: Sequence[TxItem] = ()) -> bool:
        """Run + stages + link, all or nothing (one transaction, or for a big run the first one
        of an intent: store/repository.py). False: the link exists (another delivery made the
        run first); nothing was written."""
        first = [link_put(self._model, aggregate.run.id, namespace, key, created_at), *extra]
        try:
            self._runs.write_new_run(aggregate, first)
        except TransactWriteError as error:
            if "link" in failed_tags(error):
                return False
            raise
        return True
