"""The shared fixtures stay cheap (setup repeated per test is what made the suite slow) and
safe (their AWS clients are always moto's)."""
from __future__ import annotations

import botocore.session

from chalicelib.settings import Settings
from tests.fixtures.backends import create_table


def test_creating_the_table_again_builds_no_new_botocore_client(aws, monkeypatch):
    created = []
    original = botocore.session.Session.create_client

    def counting(self, *args, **kwargs):
        created.append(args[:1])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(botocore.session.Session, "create_client", counting)
    for name in ("stagetrack-cost-1", "stagetrack-cost-2", "stagetrack-cost-3"):
        create_table(Settings(table_name=name, region="us-east-1"))
    assert len(created) <= 1  # at most the first one of this worker


def test_a_transaction_copies_the_table_once_and_still_rolls_back_whole(aws, monkeypatch):
    """moto copies the table to roll a failed transaction back; once per transaction, not once
    per item (tests/fixtures/backends.py), and a failed transaction still writes nothing."""
    import copy

    from moto.dynamodb.models import Table

    settings = Settings(table_name="stagetrack-cost-tx", region="us-east-1")
    create_table(settings)
    client = botocore.session.get_session().create_client("dynamodb", region_name="us-east-1")
    copies = []
    real = copy.deepcopy

    def counting(value, *args, **kwargs):
        if isinstance(value, Table):
            copies.append(value.name)
        return real(value, *args, **kwargs)

    monkeypatch.setattr(copy, "deepcopy", counting)

    def put(n, condition=None):
        op = {"TableName": settings.table_name, "Item": {"pk": {"S": f"P#{n}"}, "sk": {"S": "X"}}}
        if condition:
            op["ConditionExpression"] = condition
        return {"Put": op}

    client.transact_write_items(TransactItems=[put(n) for n in range(100)])
    assert copies == [settings.table_name]
    failing = [put(n) for n in range(100, 199)] + [put(0, "attribute_not_exists(pk)")]
    try:
        client.transact_write_items(TransactItems=failing)
    except client.exceptions.TransactionCanceledException:
        pass
    else:
        raise AssertionError("the condition should have cancelled the transaction")
    assert copies == [settings.table_name] * 2
    assert client.scan(TableName=settings.table_name, Select="COUNT")["Count"] == 100


def test_fixture_clients_are_mocked_whatever_was_imported_before_moto():
    """An xdist worker imports the unit tier (which never imports moto) before this one: the
    shared fixtures' clients must still be moto's, never AWS's."""
    import subprocess
    import sys
    from pathlib import Path

    probe = ("import tests.fixtures.clock, tests.fixtures as f; from moto import mock_aws\n"
             "with mock_aws():\n    print(f.aws_client('sqs').list_queues().get('QueueUrls', []))")
    env = {"PATH": "/usr/bin:/bin", "AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "t",
           "AWS_SECRET_ACCESS_KEY": "t", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                          env=env, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
