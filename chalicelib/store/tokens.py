"""API tokens in DynamoDB: one item per token keyed by its hash, and an admin listing.

Round trips:
- authenticate + rate count (``hit``): 1 UpdateItem in the steady state. It adds one to the
  token's counter on condition that the stored window is the current one, returning the whole
  item (ALL_NEW) — lookup and count in one call. When the window has moved on, the condition
  fails and ReturnValuesOnConditionCheckFailure=ALL_OLD shows the item, so a second UpdateItem
  starts the new window (once per token per minute). An unknown token fails the same condition
  with no item: 1 call, nothing written (but a failed conditional write is billed as a write),
  which is why service/tokens.py calls ``hit`` only for a token whose keyed check holds.
- ``known``: 1 eventually consistent GetItem of the key alone (half a read unit), for a
  well-formed token without a valid check (a guess, or one issued before checks).
- issue: 1 TransactWrite (token item + listing entry); list: 1 Query per page of the listing
  partition; revoke: 1 GetItem + 1 TransactWrite.
- access key pairs (AK/SK) live in the same items, keyed ``ACCESSKEY#<AK>`` (a namespace no token
  hash can reach) with the SK sealed: ``get_access_key`` (1 consistent GetItem) reads the sealed
  SK to check a signature *before* ``hit_access_key`` counts the request, so a caller who only
  knows an AK (it travels in clear) cannot spend the pair's rate budget.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from typing import TypedDict

from botocore.exceptions import ClientError

from ..service.ports import StoredSession, StoredToken
from .models import ItemModels, SessionItem, TokenEntryItem, TokenItem
from .repository import Writer

__all__ = ["StoredToken", "TokenStore"]

TOKEN_SK = "#TOKEN"
SESSION_SK = "#SESSION"
LISTING_PK = "TOKENS"
MAX_HIT_CALLS = 4


def token_pk(token_hash: str) -> str:
    return f"TOKEN#{token_hash}"


def session_pk(session_hash: str) -> str:
    return f"SESSION#{session_hash}"


def access_key_pk(access_key: str) -> str:
    return f"ACCESSKEY#{access_key}"


def entry_sk(token_id: str) -> str:
    return f"TOKEN#{token_id}"


class _Common(TypedDict):
    """The attributes a token's item and its listing entry share."""

    token_id: str
    name: str
    scopes: str
    pipelines: str | None
    created_at: str


class TokenStore:
    """The DynamoDB ``TokenStore`` (service/ports.py) on the table of ``items``."""

    def __init__(self, items: ItemModels, writer: Writer) -> None:
        self._token = items.token
        self._entry = items.token_entry
        self._session = items.session
        self._table_name = items.table_name
        self._connection = items.connection
        self._writer = writer

    def insert(self, token: StoredToken, token_hash: str | None, window: int) -> None:
        """The token (or access key pair, keyed by its AK) and its listing entry appear together;
        a key collision would be refused. The counter starts in the current window, so even the
        first request costs one call."""
        pipelines = None if token.pipelines is None else json.dumps(token.pipelines)
        common = _Common(token_id=token.token_id, name=token.name, scopes=json.dumps(token.scopes),
                         pipelines=pipelines, created_at=token.created_at)
        if token.access_key:
            pk = access_key_pk(token.access_key)
        else:
            assert token_hash is not None, "a token without an access key is found by its hash"
            pk = token_pk(token_hash)
        with self._writer.transaction({"token": token.token_id}) as write:
            write.save(self._token(pk=pk, sk=TOKEN_SK, window=window, hits=0,
                                   secret_key=token.sealed_secret_key, **common),
                       condition=TokenItem.pk.does_not_exist())
            write.save(self._entry(pk=LISTING_PK, sk=entry_sk(token.token_id),
                                   created_by=token.created_by, token_hash=token_hash,
                                   access_key=token.access_key, **common),
                       condition=TokenEntryItem.pk.does_not_exist())

    def list_all(self) -> list[StoredToken]:
        """Oldest first (ids are random, so sort by creation time)."""
        entries = [_from_entry(item) for item in self._entry.query(LISTING_PK, consistent_read=True)]
        return sorted(entries, key=lambda t: (t.created_at, t.token_id))

    def delete(self, token_id: str,
               allowed: Callable[[StoredToken], bool] = lambda _token: True) -> StoredToken | None:
        """Delete the token if ``allowed(token)`` (read first, strongly consistent); None if there
        is no such token or it is not allowed. Tokens never change, so the check still holds."""
        try:
            entry = self._entry.get(LISTING_PK, entry_sk(token_id), consistent_read=True)
        except self._entry.DoesNotExist:
            return None
        if not allowed(_from_entry(entry)):
            return None
        with self._writer.transaction({"token": token_id, "deleted": True}) as write:
            write.delete(self._entry(pk=LISTING_PK, sk=entry_sk(token_id)))
            pk = access_key_pk(entry.access_key) if entry.access_key else token_pk(entry.token_hash)
            write.delete(self._token(pk=pk, sk=TOKEN_SK))
        return _from_entry(entry)

    def get_access_key(self, access_key: str) -> StoredToken | None:
        """The access key pair with this AK, its SK still sealed; None if there is none (1 read)."""
        try:
            item = self._token.get(access_key_pk(access_key), TOKEN_SK, consistent_read=True)
        except self._token.DoesNotExist:
            return None
        return StoredToken(
            token_id=item.token_id, name=item.name, scopes=json.loads(item.scopes),
            pipelines=None if item.pipelines is None else json.loads(item.pipelines),
            created_at=item.created_at, window=int(item.window), hits=int(item.hits),
            access_key=access_key, sealed_secret_key=item.secret_key,
        )

    def hit(self, token_hash: str, window: int) -> StoredToken | None:
        """Look the token up and count one request in ``window``; None if there is no such token.

        A request whose clock is behind the stored window counts in the stored (newer) one rather
        than moving the window back.
        """
        return self._hit(token_pk(token_hash), window)

    def known(self, token_hash: str) -> bool:
        """Whether a token with this hash exists (1 GetItem of its key, nothing written)."""
        try:
            self._token.get(token_pk(token_hash), TOKEN_SK, attributes_to_get=["pk"])
        except self._token.DoesNotExist:
            return False
        return True

    def hit_access_key(self, access_key: str, window: int) -> StoredToken | None:
        """``hit`` for an access key pair (None if it was revoked since it was read)."""
        return self._hit(access_key_pk(access_key), window)

    def _hit(self, pk: str, window: int) -> StoredToken | None:
        key = {"pk": {"S": pk}, "sk": {"S": TOKEN_SK}}
        names = {"#w": "window", "#h": "hits"}
        target = window
        for _ in range(MAX_HIT_CALLS):
            item, old = self._update(
                key, "ADD #h :one", "#w = :w", names, {":one": {"N": "1"}, ":w": {"N": str(target)}}
            )
            if item is not None:
                return _from_raw(item)
            if old is None:
                return None
            stored = int(old["window"]["N"])
            if stored >= target:
                target = stored
                continue
            item, old = self._update(key, "SET #w = :w, #h = :one", "#w < :w", names,
                                     {":one": {"N": "1"}, ":w": {"N": str(target)}})
            if item is not None:
                return _from_raw(item)
            if old is None:  # revoked meanwhile
                return None
            target = max(target, int(old["window"]["N"]))  # another request started it first
        raise RuntimeError("token counter kept changing; giving up")  # a bug or a storm: a 500

    def put_session(self, session: StoredSession) -> None:
        self._session(pk=session_pk(session.session_hash), sk=SESSION_SK, token_hash=session.token_hash,
                      csrf_token=session.csrf_token, expires_at=session.expires_at,
                      created_at=session.created_at).save(condition=SessionItem.pk.does_not_exist())

    def get_session(self, session_hash: str) -> StoredSession | None:
        try:
            item = self._session.get(session_pk(session_hash), SESSION_SK, consistent_read=True)
        except self._session.DoesNotExist:
            return None
        return StoredSession(session_hash=session_hash, token_hash=item.token_hash,
                             csrf_token=item.csrf_token, expires_at=int(item.expires_at),
                             created_at=item.created_at)

    def delete_session(self, session_hash: str) -> None:
        self._session(pk=session_pk(session_hash), sk=SESSION_SK).delete()

    def _update(self, key: dict, expression: str, condition: str, names: dict, values: dict):
        """One UpdateItem: (new item, None) on success, (None, old item or None) if the condition
        failed. Raw botocore, because PynamoDB drops the item that ALL_OLD returns on failure."""
        try:
            response = self._connection().client.update_item(
                TableName=self._table_name, Key=key, UpdateExpression=expression,
                ConditionExpression=condition, ExpressionAttributeNames=names,
                ExpressionAttributeValues=values, ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return None, error.response.get("Item")
            raise
        return response["Attributes"], None


def _from_raw(item: dict) -> StoredToken:
    pipelines = item.get("pipelines", {}).get("S")
    return StoredToken(
        token_id=item["token_id"]["S"], name=item["name"]["S"], scopes=json.loads(item["scopes"]["S"]),
        pipelines=None if pipelines is None else json.loads(pipelines),
        created_at=item["created_at"]["S"], window=int(item["window"]["N"]), hits=int(item["hits"]["N"]),
        sealed_secret_key=item.get("secret_key", {}).get("S"),
    )


def _from_entry(item: TokenEntryItem) -> StoredToken:
    return StoredToken(
        token_id=item.token_id, name=item.name, scopes=json.loads(item.scopes),
        pipelines=None if item.pipelines is None else json.loads(item.pipelines),
        created_at=item.created_at, created_by=item.created_by, access_key=item.access_key,
    )
