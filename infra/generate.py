"""Renders what `chalice package` does not create, from the code's own definitions.

    python -m infra.generate           write infra/resources.json and .chalice/policy-*.json
    python -m infra.generate --check   exit 1 if the committed files are out of date (tested)

- ``infra/resources.json`` is merged into chalice's SAM template
  (``chalice package --merge-template infra/resources.json OUT``). It adds the table (rendered
  from ``chalicelib.store.schema.table_definition``, the same dict that creates it locally) and
  whatever each feature part adds, and it patches chalice's functions: an explicit name
  (``<stack>-<suffix>``, so log permissions can name the log group), the table name, event
  sources as references to the resources created here, and each role's policy pinned to the
  exact ARNs of this stack's resources.
- ``.chalice/policy-<function>.json`` hold the same statements with the default resource names
  (stack "stagetrack") and any region/account: chalice requires them with
  ``autogen_policy: false``; in the packaged template the pinned policies replace them.

Features add their resources and functions in ``infra/part_<feature>.py`` (see part_timers.py):
``FUNCTIONS`` (a list of ``Function``) and ``resources(arns) -> dict`` (merged, so it may also
add to a function defined elsewhere, e.g. the API's environment), optionally ``parameters()``,
``conditions()`` and ``outputs()``, and ``finish(resources)``, which runs once everything else
is assembled and may derive from it (part_watch.py: an alarm for every failure queue...).
Every function gets only the actions its code uses (tests record the calls it makes and check
them against its statements) plus writing to its own log group.
"""
from __future__ import annotations

import argparse
import copy
import importlib
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from chalicelib.store.models import PARTITIONS  # noqa: E402
from chalicelib.store.schema import TTL_ATTRIBUTE, table_definition  # noqa: E402

RESOURCES_PATH = ROOT / "infra" / "resources.json"
CHALICE_DIR = ROOT / ".chalice"
DEFAULT_STACK = "stagetrack"
TABLE = "StagetrackTable"
ALL_INDEXES = "*"
# Log groups are created by the template (infra/part_watch.py), with a retention: a function
# may write to its own group but never create one (a group Lambda creates is kept forever).
LOGS = ["logs:CreateLogStream", "logs:PutLogEvents"]
# X-Ray active tracing (part_watch.py); X-Ray has no resource-level permissions, hence "*".
XRAY = ["xray:PutTraceSegments", "xray:PutTelemetryRecords"]
# The stack's secrets (infra/part_secrets.py): logical id -> name suffix (<stack>/<suffix>). A
# function reads those listed in its ``secrets``: their ids reach it in STAGETRACK_SECRET_IDS, and
# its policy allows GetSecretValue on them only. No secret value is in any template.
ADMIN_SECRET, PEPPER_SECRET, KEY_SECRET = "AdminTokenSecret", "PepperSecret", "SealingKeySecret"
SECRETS = {ADMIN_SECRET: "admin-token", PEPPER_SECRET: "pepper", KEY_SECRET: "sealing-key"}
# The runtime every function runs, pinned (chalice would take the build machine's Python): the
# package carries wheels and bytecode for the Python that builds it, so tools/package.py refuses
# to build with another. python3.11: the Python the project is developed, tested and packaged
# with (the Makefile's venv, CI), so `make deploy` needs no second interpreter; moving to a newer
# runtime is this constant plus building with that Python. Every wheel in requirements.txt
# exists for cp311 on manylinux aarch64 or is pure Python (checked with pip download), so arm64
# (20% less per GB-second than x86_64 at the same memory). Memory by measurement
# (bench/bench_runtime.py, docs/performance.md "Memory and architecture"): the API at 1024 MB
# (a cold start ~0.6 s instead of ~4.7 s at 128 MB), the background functions at 512 MB.
RUNTIME = "python3.11"
ARCHITECTURE = "arm64"
API_MEMORY_MB = 1024
BACKGROUND_MEMORY_MB = 512
ITEM_READ_WRITE = ["dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query", "dynamodb:PutItem",
                   "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:ConditionCheckItem"]


class Arns:
    """ARNs of this stack's resources: pinned (CloudFormation expressions of the resources this
    template creates) or named (default names, any region/account: the chalice policy files)."""

    def __init__(self, pinned: bool) -> None:
        self.pinned = pinned
        self.stack = DEFAULT_STACK

    def pick(self, pinned, named: str):
        return pinned if self.pinned else named

    def table(self):
        return self.pick({"Fn::GetAtt": [TABLE, "Arn"]}, f"arn:aws:dynamodb:*:*:table/{self.stack}")

    def index(self, name: str):
        return self.pick({"Fn::Sub": "${%s.Arn}/index/%s" % (TABLE, name)},
                         f"arn:aws:dynamodb:*:*:table/{self.stack}/index/{name}")

    def stream(self):
        return self.pick({"Fn::Sub": "${%s.Arn}/stream/*" % TABLE},
                         f"arn:aws:dynamodb:*:*:table/{self.stack}/stream/*")

    def named(self, service: str, logical: str, suffix: str, attribute: str = "Arn",
              kind: str = ""):
        """A resource of this template named ``<stack>-<suffix>`` (queue, topic, machine...)."""
        return self.pick({"Fn::GetAtt": [logical, attribute]} if attribute else {"Ref": logical},
                         f"arn:aws:{service}:*:*:{kind}{self.stack}-{suffix}")

    def secret(self, logical: str):
        """A secret of this stack (part_secrets.py), named ``<stack>/<suffix>``; Secrets Manager
        appends 6 random characters to a secret's name in its ARN."""
        named = f"arn:aws:secretsmanager:*:*:secret:{self.stack}/{SECRETS[logical]}-*"
        return self.pick({"Ref": logical}, named)

    def log_group(self, suffix: str):
        """The function's own log group, /stagetrack/<stack>/<suffix> (part_watch.py)."""
        return self.pick(
            {"Fn::Sub": "arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}"
                        ":log-group:/stagetrack/${AWS::StackName}/%s:*" % suffix},
            f"arn:aws:logs:*:*:log-group:/stagetrack/{self.stack}/{suffix}:*")


@dataclass(frozen=True)
class Function:
    name: str           # chalice's name (the key under lambda_functions in .chalice/config.json)
    logical_id: str     # its logical id in chalice's SAM template
    role: str           # its role's logical id there
    suffix: str         # deployed as <stack>-<suffix>
    policy_file: str    # under .chalice/
    statements: Callable[[Arns], list[dict]]
    properties: Callable[[], dict] = field(default=lambda: {})  # extra Properties to merge
    log_suffix: str | None = None  # log groups it may write (default: its own)
    # The table partitions (keys of store.models.PARTITIONS) its code reaches: its statements on
    # the table's items allow only those (``dynamodb:LeadingKeys``). None: any item (the API).
    partitions: tuple[str, ...] | None = None
    secrets: tuple[str, ...] = ()  # the secrets it reads (SECRETS), by logical id
    memory_mb: int = BACKGROUND_MEMORY_MB
    # A template condition: the function (its role, log group and alarms too) exists only when
    # it holds (part_insights_export.py: only with an endpoint to export to). None: always.
    condition: str | None = None
    # An operator's secret it reads, named by a parameter holding its ARN: (parameter, the
    # condition that it is set). Its id reaches the function in STAGETRACK_SECRET_IDS, and a
    # policy of the same condition allows GetSecretValue on it alone.
    secret_parameter: tuple[str, str] | None = None


# What a run's change reaches: the run and its stages, its pipeline, ended attempts, and the
# concurrency group it frees when it ends (service/concurrency.py).
RUN_PARTITIONS = ("runs", "pipelines", "attempts", "groups")


def _api_statements(arns: Arns) -> list[dict]:
    """The table's items and indexes, plus what parts add for the API's own calls
    (``api_statements(arns)``: part_schedules.py, the EventBridge schedules it keeps;
    part_insights.py, invoking the rebuild function)."""
    return [
        {"Sid": "Items", "Effect": "Allow", "Action": ITEM_READ_WRITE, "Resource": [arns.table()]},
        {"Sid": "Indexes", "Effect": "Allow", "Action": ["dynamodb:Query"],
         "Resource": [arns.index(ALL_INDEXES)]},
        *[statement for part in parts() for statement in getattr(part, "api_statements", lambda _: [])(arns)],
    ]


# The API handler's policy is chalice's default (top-level iam_policy_file), so it also covers
# any function that has no policy of its own: those may log to any of this stack's groups.
API = Function("api_handler", "APIHandler", "ApiHandlerRole", "api", "policy-api.json",
               _api_statements, log_suffix="*", secrets=(ADMIN_SECRET, PEPPER_SECRET, KEY_SECRET),
               memory_mb=API_MEMORY_MB)

# The secrets are not parameters: the stack generates them in Secrets Manager (part_secrets.py),
# so no secret value is ever on a command line, in a parameter, or in an Environment block.
PARAMETERS = {
    # Not a secret: where clients reach the API (a custom domain, or the stage URL), for the
    # absolute links some events carry (CDEvents `url`); empty: origin-relative links.
    "PublicUrl": {"Type": "String", "Default": "", "AllowedPattern": r"^(https?://[^\s?#]+)?$",
                  "Description": "Public base URL of the API, e.g. https://ci.example.com "
                                 "(STAGETRACK_PUBLIC_URL); empty: events carry relative URLs"},
}


def parts() -> list:
    names = sorted(p.stem for p in (ROOT / "infra").glob("part_*.py"))
    return [importlib.import_module(f"infra.{name}") for name in names]


def functions() -> list[Function]:
    return [API] + [f for part in parts() for f in part.FUNCTIONS]


def leading_keys(function: Function) -> dict | None:
    """The IAM condition limiting item access to the function's partitions (None: unlimited).
    ForAllValues: every item a call reaches (a transaction's, a batch's) must match."""
    if function.partitions is None:
        return None
    return {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": [PARTITIONS[p] for p in function.partitions]}}


def _limited(statements: list[dict], function: Function, arns: Arns) -> list[dict]:
    """Each statement on the table's items gets the function's partition condition; a statement
    naming the table with other resources would have to be split first. A statement carrying
    ``Partitions`` (some of the function's) is limited to those instead: a function serving two
    purposes (the outbox publisher also applies retention, part_retention.py) gives neither's
    actions the other's items."""
    condition = leading_keys(function)
    if condition is None:
        if any("Partitions" in statement for statement in statements):
            raise ValueError(f"{function.name}: Partitions on a function whose items are not limited")
        return statements
    table = arns.table()
    for statement in statements:
        resource_ = statement["Resource"]
        targets = resource_ if isinstance(resource_, list) else [resource_]
        own = statement.pop("Partitions", None)
        if own is not None and not (table in targets and set(own) <= set(function.partitions or ())):
            raise ValueError(f"{function.name}: {statement['Sid']}'s Partitions are not the table's "
                             "items among the function's partitions")
        if table in targets:
            if len(targets) != 1:
                raise ValueError(f"{function.name}: {statement['Sid']} names the table with other resources")
            statement["Condition"] = copy.deepcopy(condition) if own is None else {
                "ForAllValues:StringLike": {"dynamodb:LeadingKeys": [PARTITIONS[p] for p in own]}}
    return statements


def policy_document(function: Function, arns: Arns) -> dict:
    logs = {"Sid": "OwnLogs", "Effect": "Allow", "Action": LOGS,
            "Resource": arns.log_group(function.log_suffix or function.suffix)}
    tracing = {"Sid": "Tracing", "Effect": "Allow", "Action": XRAY, "Resource": "*"}
    statements = _limited(function.statements(arns), function, arns)
    if function.secrets:
        statements.append({"Sid": "Secrets", "Effect": "Allow", "Action": ["secretsmanager:GetSecretValue"],
                           "Resource": [arns.secret(logical) for logical in function.secrets]})
    return {"Version": "2012-10-17", "Statement": statements + [logs, tracing]}


def secret_parameter_policy(function: Function) -> dict:
    """GetSecretValue on the operator's secret the function's parameter names, as a policy of
    its own that exists only when the parameter is set (a statement needs a resource)."""
    assert function.secret_parameter is not None
    parameter, is_set = function.secret_parameter
    return {"Type": "AWS::IAM::RolePolicy", "Condition": is_set, "Properties": {
        "RoleName": {"Ref": function.role}, "PolicyName": f"{function.role}Secret",
        "PolicyDocument": {"Version": "2012-10-17", "Statement": [{
            "Sid": "Secret", "Effect": "Allow", "Action": ["secretsmanager:GetSecretValue"],
            "Resource": [{"Ref": parameter}]}]}}}


def table_resource() -> dict:
    """AWS::DynamoDB::Table from the CreateTable parameters the local tables are made with."""
    definition = copy.deepcopy(table_definition("unused"))
    stream = definition.pop("StreamSpecification")
    properties = {
        "TableName": {"Ref": "AWS::StackName"},
        "BillingMode": definition.pop("BillingMode"),
        "AttributeDefinitions": definition.pop("AttributeDefinitions"),
        "KeySchema": definition.pop("KeySchema"),
        "GlobalSecondaryIndexes": definition.pop("GlobalSecondaryIndexes"),
        "StreamSpecification": {"StreamViewType": stream["StreamViewType"]},
        "TimeToLiveSpecification": {"AttributeName": TTL_ATTRIBUTE, "Enabled": True},
        "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
        # no DeleteTable by anyone, a stack deletion included, until this is turned off
        "DeletionProtectionEnabled": True,
    }
    definition.pop("TableName")
    if definition:  # a new CreateTable parameter must be mapped here, not silently dropped
        raise ValueError(f"table_definition has unmapped keys: {sorted(definition)}")
    return {"Type": "AWS::DynamoDB::Table", "DeletionPolicy": "Retain",
            "UpdateReplacePolicy": "Retain", "Properties": properties}


def _merge(into: dict, extra: dict) -> dict:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value
    return into


def resources_template() -> dict:
    arns = Arns(pinned=True)
    parameters = dict(PARAMETERS)
    conditions: dict = {}
    resources: dict = {TABLE: table_resource()}
    outputs: dict = {"TableName": {"Value": {"Ref": TABLE}}}
    for part in parts():
        parameters.update(getattr(part, "parameters", dict)())
        conditions.update(getattr(part, "conditions", dict)())
        _merge(resources, part.resources(arns))
        outputs.update(getattr(part, "outputs", dict)())
    for function in functions():
        variables: dict = {"STAGETRACK_TABLE": {"Ref": TABLE}, "STAGETRACK_PUBLIC_URL": {"Ref": "PublicUrl"}}
        if function.secrets:  # their ids only: each function reads the values itself, once
            variables["STAGETRACK_SECRET_IDS"] = {
                "Fn::Join": [",", [{"Ref": logical} for logical in function.secrets]]}
        if function.secret_parameter is not None:
            if function.secrets:
                raise ValueError(f"{function.name}: a secret parameter and the stack's secrets")
            parameter, is_set = function.secret_parameter
            variables["STAGETRACK_SECRET_IDS"] = {
                "Fn::If": [is_set, {"Ref": parameter}, {"Ref": "AWS::NoValue"}]}
            resources[f"{function.role}SecretPolicy"] = secret_parameter_policy(function)
        patch = {"FunctionName": {"Fn::Sub": "${AWS::StackName}-%s" % function.suffix},
                 "Environment": {"Variables": variables}, "Runtime": RUNTIME,
                 "Architectures": [ARCHITECTURE], "MemorySize": function.memory_mb}
        _merge(resources.setdefault(function.logical_id, {}),
               {"Properties": _merge(patch, function.properties())})
        resources[function.role] = {"Properties": {"Policies": [{
            "PolicyName": f"{function.role}Policy",
            "PolicyDocument": policy_document(function, arns)}]}}
        if function.condition is not None:
            resources[function.logical_id]["Condition"] = function.condition
            resources[function.role]["Condition"] = function.condition
    for part in parts():  # what is derived from the whole template (alarms of every queue...)
        getattr(part, "finish", lambda resources: None)(resources)
    template = {"Parameters": parameters, "Resources": resources, "Outputs": outputs}
    if conditions:
        template["Conditions"] = conditions
    return template


def rendered_files() -> dict[Path, str]:
    files = {RESOURCES_PATH: _dump(resources_template())}
    for function in functions():
        files[CHALICE_DIR / function.policy_file] = _dump(policy_document(function, Arns(pinned=False)))
    return files


def _dump(value) -> str:
    return json.dumps(value, indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the files are out of date")
    args = parser.parse_args(argv)
    stale = []
    for path, text in rendered_files().items():
        current = path.read_text() if path.exists() else None
        if current == text:
            continue
        stale.append(path.relative_to(ROOT))
        if not args.check:
            path.write_text(text)
    if args.check and stale:
        print("out of date (run `python -m infra.generate`): " + ", ".join(map(str, stale)))
        return 1
    for path in stale:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
