"""The fixtures stay cheap: what makes the integration tier slow is setup repeated per test."""
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
