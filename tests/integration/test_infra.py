"""Deployable: generated infra is current, the SAM package passes cfn-lint, and each function's
policy allows what its code really calls, on its own resources only."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile
from datetime import timedelta
from pathlib import Path

import botocore.client
import botocore.session
import pytest

from chalicelib.domain.clock import format_iso
from chalicelib.domain.model import change_status
from chalicelib.domain.schemas import CreateRunIn
from chalicelib.domain.status import StageStatus
from chalicelib.service import runs
from chalicelib.settings import Settings
from chalicelib.store.schema import TTL_ATTRIBUTE, ensure_tables, table_definition
from infra import generate, part_timers
from tests.fixtures import Recorded, assert_items_allowed, dynamodb_calls, policy_allows
from tools import package

S = StageStatus
ROOT = Path(__file__).resolve().parents[2]


def test_committed_infra_and_policies_match_the_generator():
    for path, text in generate.rendered_files().items():
        assert path.read_text() == text, f"{path} is stale: run `python -m infra.generate`"


def test_table_is_rendered_from_the_one_table_definition():
    table = json.loads(generate.RESOURCES_PATH.read_text())["Resources"]["StagetrackTable"]["Properties"]
    source = table_definition("x")
    for key in ("AttributeDefinitions", "KeySchema", "GlobalSecondaryIndexes", "BillingMode"):
        assert table[key] == source[key]
    assert table["StreamSpecification"] == {"StreamViewType": source["StreamSpecification"]["StreamViewType"]}
    assert table["TimeToLiveSpecification"] == {"AttributeName": TTL_ATTRIBUTE, "Enabled": True}


def test_state_machine_waits_then_hands_over_with_retry_and_catch():
    asl = part_timers.state_machine_definition()
    wait = asl["States"][asl["StartAt"]]
    assert (wait["Type"], wait["SecondsPath"]) == ("Wait", "$.waitSeconds")
    task = asl["States"][wait["Next"]]
    assert task["Type"] == "Task" and task["Resource"] == "arn:aws:states:::sqs:sendMessage"
    assert task["Parameters"]["MessageBody"] == {"stageId.$": "$.stageId", "attempt.$": "$.attempt",
                                                 "dueAt.$": "$.dueAt"}
    assert task["Retry"][0]["ErrorEquals"] == ["States.ALL"] and task["Retry"][0]["MaxAttempts"] > 0
    assert asl["States"][task["Catch"][0]["Next"]]["Type"] == "Fail"
    machine = json.loads(generate.RESOURCES_PATH.read_text())["Resources"]["TimerStateMachine"]["Properties"]
    assert machine["StateMachineType"] == "STANDARD"
    assert machine["DefinitionSubstitutions"] == {"TimerQueueUrl": {"Ref": "TimerQueue"}}


@pytest.fixture(scope="module")
def packaged(tmp_path_factory):
    """`make package` (tools/package.py) on a copy of the project.

    The copy has an empty requirements.txt: the template does not depend on the dependencies,
    and building them into the zip needs PyPI, which the suite must not.
    """
    project = package.stage_project(tmp_path_factory.mktemp("project") / "src", requirements="")
    done = package.chalice_package(project, project / "out")
    assert done.returncode == 0, done.stdout + done.stderr
    assert package.compile_archive(project / "out" / "deployment.zip") > 0
    return project / "out" / "sam.json"


def test_the_package_ships_bytecode_that_lambda_uses_as_is(packaged):
    """Lambda cannot write bytecode, so the zip carries it, valid whatever file times it keeps."""
    with zipfile.ZipFile(packaged.parent / "deployment.zip") as archive:
        names = set(archive.namelist())
        sources = {n for n in names if n.endswith(".py")}
        compiled = {n for n in names if n.endswith(".pyc")}
        tag = sys.implementation.cache_tag

        def cached(path):
            folder, _, name = path.rpartition("/")
            return f"{folder + '/' if folder else ''}__pycache__/{name[:-3]}.{tag}.pyc"

        assert {"app.py", "chalicelib/service/runs.py", "chalice/app.py"} <= sources
        assert compiled == {cached(n) for n in sources}
        assert not any("__pycache__" in n for n in names - compiled)  # nothing stale from the tree
        flags = {int.from_bytes(archive.read(n)[4:8], "little") for n in compiled}
    assert flags == {0b01}  # hash-based, unchecked (PEP 552)


def test_packaged_template_passes_cfn_lint(packaged):
    """With the repository's .cfnlintrc.yaml: informational checks and AWS's serverless rules on
    (tests/integration/test_watch.py checks that configuration and what it ignores)."""
    lint = Path(sys.executable).with_name("cfn-lint")
    done = subprocess.run([str(lint), str(packaged)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr


def test_packaged_template_wires_every_timer_piece(packaged):
    resources = json.loads(packaged.read_text())["Resources"]
    types = {name: r["Type"] for name, r in resources.items()}
    for name, kind in {"StagetrackTable": "AWS::DynamoDB::Table", "TimerQueue": "AWS::SQS::Queue",
                       "TimerDeadLetterQueue": "AWS::SQS::Queue",
                       "TimerStateMachine": "AWS::StepFunctions::StateMachine",
                       "TimerStateMachineRole": "AWS::IAM::Role", "RestAPI": "AWS::Serverless::Api"}.items():
        assert types[name] == kind
    for function in generate.functions():
        properties = resources[function.logical_id]["Properties"]
        assert properties["Role"] == {"Fn::GetAtt": [function.role, "Arn"]}
        assert properties["Environment"]["Variables"]["STAGETRACK_TABLE"] == {"Ref": "StagetrackTable"}
        assert "123456789012" not in json.dumps(properties)  # no placeholder ARN left
    events = {
        name: resources[name]["Properties"]["Events"] for name in ("TimerArmer", "TimerFired", "TimerSweeper")
    }
    assert events["TimerArmer"]["TimerArmerDynamodbEventSource"]["Properties"]["Stream"] == {
        "Fn::GetAtt": ["StagetrackTable", "StreamArn"]}
    assert events["TimerFired"]["TimerFiredSqsEventSource"]["Properties"]["Queue"] == {
        "Fn::GetAtt": ["TimerQueue", "Arn"]}
    assert events["TimerSweeper"]["TimerSweeperEvent"]["Properties"]["Schedule"] == "rate(1 minute)"


# Every GatewayResponseType (API Gateway API reference, GatewayResponse.responseType).
GATEWAY_RESPONSE_TYPES = {
    "DEFAULT_4XX", "DEFAULT_5XX", "RESOURCE_NOT_FOUND", "UNAUTHORIZED", "INVALID_API_KEY", "ACCESS_DENIED",
    "AUTHORIZER_FAILURE", "AUTHORIZER_CONFIGURATION_ERROR", "INVALID_SIGNATURE", "EXPIRED_TOKEN",
    "MISSING_AUTHENTICATION_TOKEN", "INTEGRATION_FAILURE", "INTEGRATION_TIMEOUT", "API_CONFIGURATION_ERROR",
    "UNSUPPORTED_MEDIA_TYPE", "BAD_REQUEST_PARAMETERS", "BAD_REQUEST_BODY", "REQUEST_TOO_LARGE", "THROTTLED",
    "QUOTA_EXCEEDED", "WAF_FILTERED",
}


def _api_body(packaged) -> dict:
    return json.loads(packaged.read_text())["Resources"]["RestAPI"]["Properties"]["DefinitionBody"]


def test_packaged_gateway_responses_answer_in_our_shape_and_echo_nothing(packaged):
    """API Gateway's defaults are {"message": ...}, 403 for an unknown path, and for a request with
    an Authorization header a SigV4 message that ends with that header: fixed JSON bodies instead."""
    responses = _api_body(packaged)["x-amazon-apigateway-gateway-responses"]
    assert set(responses) == GATEWAY_RESPONSE_TYPES
    for kind, response in responses.items():
        assert set(response) <= {"statusCode", "responseParameters", "responseTemplates"}, kind
        assert list(response["responseTemplates"]) == ["application/json"]
        body = json.loads(response["responseTemplates"]["application/json"])
        assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, kind
        text = json.dumps(response)
        # nothing computed from the request: no $context.error.message(String), no method.request.*
        assert "$" not in text and "method.request" not in text and "context." not in text, kind
        for name, value in response.get("responseParameters", {}).items():
            assert name.startswith("gatewayresponse.header.") and re.fullmatch(r"'[^']*'", value), (
                kind,
                name,
            )
    expected = {
        "MISSING_AUTHENTICATION_TOKEN": ("404", "not_found"),
        "RESOURCE_NOT_FOUND": ("404", "not_found"),
        "UNSUPPORTED_MEDIA_TYPE": ("415", "unsupported_media_type"),
        "THROTTLED": ("429", "rate_limited"),
        "REQUEST_TOO_LARGE": ("413", "payload_too_large"),
        "ACCESS_DENIED": ("403", "forbidden"),
        "INVALID_SIGNATURE": ("401", "unauthorized"),
        "EXPIRED_TOKEN": ("401", "unauthorized"),
        "BAD_REQUEST_BODY": ("400", "bad_request"),
        "DEFAULT_4XX": (None, "bad_request"),
        "DEFAULT_5XX": (None, "internal_error"),
    }
    for kind, (status, code) in expected.items():
        response = responses[kind]
        assert response.get("statusCode") == status, kind
        assert json.loads(response["responseTemplates"]["application/json"])["error"]["code"] == code
    assert responses["UNAUTHORIZED"]["responseParameters"]["gatewayresponse.header.WWW-Authenticate"] \
        .startswith("'Bearer")


def test_every_packaged_path_takes_every_method_and_any_body_type(packaged):
    """A method a path lacks would be API Gateway's MISSING_AUTHENTICATION_TOKEN (now a 404), not
    the app's 405 with Allow; ``consumes`` other than */* is what Chalice answers 415 for itself."""
    paths = _api_body(packaged)["paths"]
    assert paths
    for path, operations in paths.items():
        assert set(operations) == {"get", "head", "post", "put", "patch", "delete", "options"}, path
        for method, operation in operations.items():
            assert operation["x-amazon-apigateway-integration"]["type"] == "aws_proxy", (path, method)
            assert operation["consumes"] == ["*/*"], (path, method)


def test_the_local_gateway_answers_an_unknown_path_as_the_deployed_one():
    from infra.part_gateway import gateway_responses, local_response

    status, headers, body = local_response("MISSING_AUTHENTICATION_TOKEN")
    deployed = gateway_responses()["MISSING_AUTHENTICATION_TOKEN"]
    assert (str(status), body) == (deployed["statusCode"], deployed["responseTemplates"]["application/json"])
    assert {f"gatewayresponse.header.{k}": f"'{v}'" for k, v in headers.items() if k != "Content-Type"} == \
        deployed["responseParameters"]


def test_every_function_has_a_policy_of_its_own(packaged):
    """A function without one would run with the API's policy, and with placeholder event
    sources: add it to an infra/part_<feature>.py (see infra/generate.py)."""
    resources = json.loads(packaged.read_text())["Resources"]
    packaged_functions = {name for name, r in resources.items() if r["Type"] == "AWS::Serverless::Function"}
    assert packaged_functions - {f.logical_id for f in generate.functions()} == set()


def test_every_packaged_policy_names_only_this_stacks_resources(packaged):
    resources = json.loads(packaged.read_text())["Resources"]
    roles = [resources[f.role] for f in generate.functions()] + [resources["TimerStateMachineRole"]]
    for role in roles:
        for policy in role["Properties"]["Policies"]:
            for statement in policy["PolicyDocument"]["Statement"]:
                targets = (
                    statement["Resource"]
                    if isinstance(statement["Resource"], list)
                    else [statement["Resource"]]
                )
                if statement["Sid"] == "Tracing":  # X-Ray has no resource-level permissions
                    assert targets == ["*"] and all(a.startswith("xray:") for a in statement["Action"])
                    continue
                for target in targets:
                    assert isinstance(target, dict), f"{statement['Sid']}: {target!r} is not pinned"
                assert all(not action.endswith("*") for action in statement["Action"])


# ---- the policies allow exactly what the code calls -------------------------------------------

@pytest.fixture
def iam_actions(monkeypatch):
    """The IAM actions (service:Action) of every AWS call made, with the DynamoDB index used."""
    actions = Recorded()
    indexes: set[str] = set()
    original = botocore.client.BaseClient._make_api_call

    def recording(self, operation, params):
        service = self.meta.service_model.signing_name
        if service == "dynamodb":
            actions.calls.extend(dynamodb_calls(operation, params))
        if operation == "TransactWriteItems":
            for entry in params["TransactItems"]:
                kind = next(iter(entry))
                actions.add("dynamodb:" + {"Put": "PutItem", "Update": "UpdateItem", "Delete": "DeleteItem",
                                           "ConditionCheck": "ConditionCheckItem"}[kind])
        elif operation == "TransactGetItems":  # authorized as a GetItem of each item
            actions.add("dynamodb:GetItem")
        else:
            actions.add(f"{service}:{operation}")
        if "IndexName" in params:
            indexes.add(params["IndexName"])
        return original(self, operation, params)

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", recording)
    return actions, indexes


def _allowed(name: str) -> set[str]:
    function = next(f for f in generate.functions() if f.name == name)
    document = generate.policy_document(function, generate.Arns(pinned=True))
    return {action for statement in document["Statement"] for action in statement["Action"]}


def _running_stage(ctx, clock, **spec):
    aggregate = runs.create_run(ctx, CreateRunIn.model_validate_json(json.dumps(
        {"pipeline": "web", "stages": [{"type": "BUILD", **spec}, "DEPLOY_PROD"]})))
    stage_id = aggregate.stages[0].id
    runs.mutate_run(ctx, aggregate.run.id,
                    lambda agg: change_status(agg.stage(stage_id), S.IN_PROGRESS, clock.now()))
    return aggregate, stage_id


def test_api_calls_stay_within_the_api_policy(client, iam_actions):
    actions, _ = iam_actions
    run = client.post("/api/runs", {"pipeline": "web", "stages": ["BUILD", "DEPLOY_PROD"]}).json
    stage = run["stages"][0]["id"]
    client.get("/api/runs?pipeline=web")
    client.get("/api/runs?pipeline=web&status=IN_PROGRESS")
    client.get(f"/api/stages?runId={run['id']}")
    client.patch(f"/api/stages/{stage}", {"status": "IN_PROGRESS"})
    client.get(f"/api/stages/{stage}")
    client.delete(f"/api/stages/{run['stages'][1]['id']}")
    client.delete(f"/api/runs/{run['id']}")
    dynamodb = {a for a in actions if a.startswith("dynamodb:")}
    assert {"dynamodb:Query", "dynamodb:PutItem", "dynamodb:UpdateItem"} <= dynamodb
    assert dynamodb <= _allowed("api_handler")
    assert assert_items_allowed(actions, "api_handler") == {"RUN#", "PIPE#"}


def test_timeout_handler_calls_stay_within_its_policy(ctx, clock, iam_actions):
    from chalicelib.service.timers import expire_stage

    actions, indexes = iam_actions
    _aggregate, stage_id = _running_stage(ctx, clock, timeoutSeconds=5)
    clock.advance(5)
    actions.clear()
    assert expire_stage(ctx, stage_id, 1) == S.TIMED_OUT
    assert actions and actions <= _allowed("timer_fired")
    assert assert_items_allowed(actions, "timer_fired") == {"RUN#"}


def test_sweeper_calls_stay_within_its_policy(ctx, clock, iam_actions):
    from chalicelib.service.timers import sweep

    actions, indexes = iam_actions
    _running_stage(ctx, clock, timeoutSeconds=5)
    clock.advance(5)
    actions.clear()
    indexes.clear()
    assert sweep(ctx).fired == {"TIMED_OUT": 1}
    assert actions <= _allowed("timer_sweeper")
    assert indexes == {part_timers.ACTIVE_INDEX}
    assert assert_items_allowed(actions, "timer_sweeper") == {"RUN#"}


def test_sweeper_firing_a_schedule_stays_within_its_policy(ctx, clock, iam_actions):
    from chalicelib.domain.schemas import CreateRunIn, CreateScheduleIn
    from chalicelib.service import runs, schedules
    from chalicelib.ticker import minute_tick

    actions, _indexes = iam_actions
    web = CreateRunIn.model_validate_json('{"pipeline": "web", "stages": ["BUILD"]}')
    runs.create_run(ctx, web, actor="a")
    schedules.create(ctx, "web", CreateScheduleIn.model_validate_json('{"cron": "* * * * *"}'), actor="alice")
    clock.advance(120)
    actions.clear()
    minute_tick(ctx)
    assert actions <= _allowed("timer_sweeper")
    assert assert_items_allowed(actions, "timer_sweeper") == {"RUN#", "PIPE#", "LINK#", "SCHEDULES#"}


def test_armer_only_starts_and_stops_executions_of_its_machine(ctx, clock, iam_actions):
    import boto3

    from chalicelib.adapters.stepfunctions import StepFunctionsScheduler
    from chalicelib.service.timers import arm_timers

    actions, _ = iam_actions
    machine = boto3.client("stepfunctions").create_state_machine(
        name="stagetrack-timers", definition=part_timers.render_definition("https://sqs.example/q"),
        roleArn="arn:aws:iam::123456789012:role/t")["stateMachineArn"]
    actions.clear()
    due = format_iso(clock.now())
    started = {"kind": {"S": "stage"}, "stage_id": {"S": "web:1:1"}, "attempt": {"N": "1"},
               "due_at": {"S": due}}
    later = {**started, "due_at": {"S": format_iso(clock.now() + timedelta(seconds=30))}}
    records = [{"eventName": "INSERT", "dynamodb": {"NewImage": started}},
               {"eventName": "REMOVE", "dynamodb": {"OldImage": later}}]  # never started: no error
    assert arm_timers(ctx, records, StepFunctionsScheduler(machine)) == 1
    assert actions == {"states:StartExecution", "states:StopExecution"} <= _allowed("timer_armer")
    armer = next(f for f in generate.functions() if f.name == "timer_armer")
    statements = generate.policy_document(armer, generate.Arns(pinned=False))["Statement"]
    statement = next(s for s in statements if s["Sid"] == "StopStaleTimers")
    assert statement["Resource"] == ["arn:aws:states:*:*:execution:stagetrack-timers:*"]


def test_armer_hears_of_every_stage_write_and_removal_and_knows_its_horizon():
    armer = json.loads(generate.RESOURCES_PATH.read_text())["Resources"]["TimerArmer"]["Properties"]
    source = armer["Events"]["TimerArmerDynamodbEventSource"]["Properties"]
    patterns = [json.loads(f["Pattern"]) for f in source["FilterCriteria"]["Filters"]]
    assert patterns == [
        {"eventName": ["INSERT", "MODIFY"], "dynamodb": {"NewImage": {"kind": {"S": ["stage"]}}}},
        {"eventName": ["REMOVE"], "dynamodb": {"OldImage": {"kind": {"S": ["stage"]}}}},
    ]
    variables = armer["Environment"]["Variables"]
    assert variables["STAGETRACK_TIMER_HORIZON_SECONDS"] == {"Ref": "TimerHorizonSeconds"}
    horizon = json.loads(generate.RESOURCES_PATH.read_text())["Parameters"]["TimerHorizonSeconds"]
    assert (horizon["Default"], horizon["MinValue"], horizon["MaxValue"]) == (
        Settings.timer_horizon_seconds, 0, 86400)
    # an execution outliving the longest horizon (plus the hand-over's retries) is a bug: it times out
    retries = part_timers.state_machine_definition()["States"]["HandToTimeoutHandler"]["Retry"][0]
    hand_over = sum(min(retries["IntervalSeconds"] * retries["BackoffRate"] ** n, retries["MaxDelaySeconds"])
                    for n in range(retries["MaxAttempts"]))
    assert horizon["MaxValue"] + hand_over < part_timers.state_machine_definition()["TimeoutSeconds"] <= 90000


def test_chalice_config_gives_each_function_its_policy_file():
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    assert config["autogen_policy"] is False
    assert config["iam_policy_file"] == generate.API.policy_file
    for function in generate.functions():
        assert (ROOT / ".chalice" / function.policy_file).exists()
        if function is not generate.API:
            assert config["lambda_functions"][function.name]["iam_policy_file"] == function.policy_file


SECRET_VARIABLES = {"STAGETRACK_ADMIN_TOKEN", "STAGETRACK_SECRET_PEPPER", "STAGETRACK_SECRET_KEY",
                    "STAGETRACK_PREVIOUS_SECRET_KEYS"}


def _refs(value) -> list[str]:
    """Every Ref and GetAtt target, and every ${Name} of a Sub, inside a template value."""
    found: list[str] = []
    if isinstance(value, dict):
        for key, inner in value.items():
            if key == "Ref":
                found.append(inner)
            elif key == "Fn::GetAtt":
                found.append(inner[0] if isinstance(inner, list) else inner.split(".")[0])
            elif key == "Fn::Sub":
                text = inner if isinstance(inner, str) else inner[0]
                found += [name.split(".")[0] for name in re.findall(r"\$\{([^}!]+)\}", text)]
                found += _refs(inner)
            else:
                found += _refs(inner)
    elif isinstance(value, list):
        for inner in value:
            found += _refs(inner)
    return found


def _environments(template: dict):
    for name, resource in template["Resources"].items():
        variables = resource.get("Properties", {}).get("Environment", {}).get("Variables")
        if variables is not None:
            yield name, variables
    globals_ = template.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables")
    if globals_ is not None:
        yield "Globals", globals_


def test_no_secret_value_lands_in_any_environment_block(packaged):
    """The packaged template asks for no secret (no NoEcho parameter) and no Environment block
    holds one: a function gets only the ids (ARNs) of the Secrets Manager secrets it reads."""
    template = json.loads(packaged.read_text())
    parameters = template.get("Parameters", {})
    assert [name for name, p in parameters.items() if p.get("NoEcho")] == []
    secrets = {name for name, r in template["Resources"].items()
               if r["Type"] == "AWS::SecretsManager::Secret"}
    assert secrets == set(generate.SECRETS)
    environments = dict(_environments(template))
    assert len(environments) >= len(generate.functions())
    for owner, variables in environments.items():
        assert not SECRET_VARIABLES & set(variables), owner
        text = json.dumps(variables)
        assert "resolve:secretsmanager" not in text and "resolve:ssm-secure" not in text, owner
        for variable, value in variables.items():
            refs = set(_refs(value))
            assert not any(parameters.get(ref, {}).get("NoEcho") for ref in refs), (owner, variable)
            if refs & secrets:  # a secret is named, never dereferenced
                order = sorted(refs & secrets, key=list(generate.SECRETS).index)
                assert variable == "STAGETRACK_SECRET_IDS"
                assert value == {"Fn::Join": [",", [{"Ref": logical} for logical in order]]}


def test_each_function_may_read_only_the_secrets_it_is_given(packaged):
    resources = json.loads(packaged.read_text())["Resources"]
    for function in generate.functions():
        variables = resources[function.logical_id]["Properties"]["Environment"]["Variables"]
        statements = resources[function.role]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
        readable = [s["Resource"] for s in statements if "secretsmanager:GetSecretValue" in s["Action"]]
        if function.secret_parameter is not None:  # an operator's secret, named by a parameter
            parameter, is_set = function.secret_parameter
            assert readable == [] and function.secrets == ()
            assert variables["STAGETRACK_SECRET_IDS"] == {
                "Fn::If": [is_set, {"Ref": parameter}, {"Ref": "AWS::NoValue"}]}
            policy = resources[f"{function.role}SecretPolicy"]
            assert policy["Condition"] == is_set
            assert policy["Properties"]["RoleName"] == {"Ref": function.role}
            [statement] = policy["Properties"]["PolicyDocument"]["Statement"]
            assert statement["Action"] == ["secretsmanager:GetSecretValue"]
            assert statement["Resource"] == [{"Ref": parameter}]
            continue
        if not function.secrets:
            assert "STAGETRACK_SECRET_IDS" not in variables and readable == [], function.name
            continue
        named = variables["STAGETRACK_SECRET_IDS"]["Fn::Join"][1]
        assert readable == [named] == [[{"Ref": logical} for logical in function.secrets]], function.name
    assert generate.API.secrets == (generate.ADMIN_SECRET, generate.PEPPER_SECRET, generate.KEY_SECRET)
    others = [f for f in generate.functions() if f is not generate.API]
    assert all(generate.ADMIN_SECRET not in f.secrets for f in others)  # the admin token: API only
    by_name = {f.name: f.secrets for f in others}
    assert by_name["deliver_webhooks"] == (generate.KEY_SECRET,)
    assert by_name["timer_fired"] == by_name["outbox_publisher"] == by_name["insights_export"] == ()


def test_the_stack_generates_its_secrets_and_keeps_the_keys():
    resources = generate.resources_template()["Resources"]
    for logical, suffix in generate.SECRETS.items():
        properties = resources[logical]["Properties"]
        assert properties["Name"] == {"Fn::Sub": "${AWS::StackName}/" + suffix}
        generated = properties["GenerateSecretString"]
        assert generated["PasswordLength"] >= 48 and generated["ExcludePunctuation"] is True
        assert generated["GenerateStringKey"] in secrets_fields()
    for logical in (generate.PEPPER_SECRET, generate.KEY_SECRET):  # losing them loses data
        assert resources[logical]["DeletionPolicy"] == resources[logical]["UpdateReplacePolicy"] == "Retain"


def secrets_fields() -> set[str]:
    from chalicelib.adapters.secrets import FIELDS

    return set(FIELDS)


def test_make_deploy_passes_no_secret_on_the_command_line():
    makefile = (ROOT / "Makefile").read_text()
    deploy = makefile[makefile.index("\ndeploy:"):makefile.index("\nclean:")]
    for word in ("ADMIN_TOKEN", "PEPPER", "SECRET_KEY", "AdminToken", "SecretPepper", "SecretKey"):
        assert word not in deploy


def test_the_environment_chooses_the_table_even_through_chalice(aws, monkeypatch):
    """.chalice/config.json sets no environment variables: chalice local and the test client
    apply them over the process environment, which once pinned every request to the table
    "stagetrack" whatever STAGETRACK_TABLE said (the stack sets it per function)."""
    from chalice.test import Client

    from app import app
    from chalicelib import wiring

    assert "environment_variables" not in json.loads((ROOT / ".chalice" / "config.json").read_text())
    monkeypatch.setenv("STAGETRACK_TABLE", "team-b-stagetrack")
    settings = Settings.from_env()
    ensure_tables(settings)
    wiring.override(None)
    try:
        with Client(app) as client:
            headers = {"Authorization": f"Bearer {settings.admin_token}", "Content-Type": "application/json"}
            token = client.http.post("/api/tokens", headers=headers,
                                     body=json.dumps({"name": "ci", "scopes": ["read"]}))
            run = client.http.post("/api/runs", headers=headers, body=json.dumps({"pipeline": "web"}))
        assert (token.status_code, run.status_code) == (201, 201)
        assert wiring.context().settings.table_name == "team-b-stagetrack"
        stored = botocore.session.get_session().create_client("dynamodb", region_name="us-east-1").scan(
            TableName="team-b-stagetrack", Select="COUNT")["Count"]
        assert stored >= 3  # the token, its listing entry, the pipeline, the run and its stages
    finally:
        wiring.override(None)


def test_sweeper_completing_a_big_runs_pending_change_stays_within_its_policy(ctx, clock, iam_actions,
                                                                               monkeypatch):
    from chalicelib.service.timers import sweep
    from chalicelib.store.repository import INTENT_GRACE_SECONDS
    from tests.integration.test_big_runs import big_run, fail_transaction

    restore = fail_transaction(monkeypatch, 2)  # the writer dies after the intent's transaction
    big_run(ctx, jobs=110)
    restore()
    clock.advance(INTENT_GRACE_SECONDS)
    actions, _ = iam_actions
    actions.clear()
    assert sweep(ctx).completed == 1
    assert {"dynamodb:PutItem", "dynamodb:ConditionCheckItem", "dynamodb:UpdateItem"} <= actions
    assert actions <= _allowed("timer_sweeper") and actions <= _allowed("timer_fired")
    assert assert_items_allowed(actions, "timer_sweeper") == {"RUN#"}
    table_only = Recorded()
    table_only.calls = [call for call in actions.calls if call[1] is None]  # timer_fired queries no index
    assert assert_items_allowed(table_only, "timer_fired") == {"RUN#"}


def test_every_function_gets_the_public_url_and_it_is_optional(packaged):
    """CDEvents carry `url` (integrations/cdevents.py) from STAGETRACK_PUBLIC_URL: every function of
    the stack gets it from one optional, validated parameter (empty: origin-relative links)."""
    template = json.loads(packaged.read_text())
    parameter = template["Parameters"]["PublicUrl"]
    assert parameter["Default"] == ""
    pattern = re.compile(parameter["AllowedPattern"])
    assert pattern.fullmatch("") and pattern.fullmatch("https://ci.example.com/prod")
    assert not pattern.fullmatch("ci.example.com") and not pattern.fullmatch("https://x/?q=1")
    functions = {
        name: r for name, r in template["Resources"].items() if r["Type"] == "AWS::Serverless::Function"
    }
    assert len(functions) == len(generate.functions())
    for name, resource in functions.items():
        variables = resource["Properties"]["Environment"]["Variables"]
        assert variables["STAGETRACK_PUBLIC_URL"] == {"Ref": "PublicUrl"}, name


# ---- least privilege by partition (dynamodb:LeadingKeys, issue 16 item 6) ----------------------

TOKEN_ITEMS = ["TOKEN#" + "a" * 64, "TOKENS", "SESSION#" + "b" * 64, "ACCESSKEY#AKSTAGETRACK0001"]
ITEM_WRITES = ["dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:BatchWriteItem"]


def test_only_the_api_may_reach_token_items():
    """A compromised delivery, timer, outbox or ingest function cannot mint, change or read a
    token, session or access key item: its statements on the table name its partitions only."""
    for function in generate.functions():
        for partition in TOKEN_ITEMS:
            for action in [*ITEM_WRITES, "dynamodb:GetItem", "dynamodb:Query"]:
                allowed = policy_allows(function.name, action, None, partition)
                if function is generate.API:
                    continue
                assert not allowed, (function.name, action, partition)
    api = generate.API.name
    assert policy_allows(api, "dynamodb:PutItem", None, TOKEN_ITEMS[0])  # issuing a token


def test_every_function_but_the_api_names_the_partitions_it_reaches(packaged):
    """Each role's statements on the table's items carry the condition, in the packaged template
    too (pinned ARNs); a run's functions get no subscription, delivery or source item."""
    resources = json.loads(packaged.read_text())["Resources"]
    for function in generate.functions():
        if function is generate.API:
            assert function.partitions is None
            continue
        assert function.partitions is not None, function.name
        document = resources[function.role]["Properties"]["Policies"][0]["PolicyDocument"]
        for statement in document["Statement"]:
            resource_ = statement["Resource"]
            targets = resource_ if isinstance(resource_, list) else [resource_]
            if {"Fn::GetAtt": [generate.TABLE, "Arn"]} in targets:
                keys = statement["Condition"]["ForAllValues:StringLike"]["dynamodb:LeadingKeys"]
                assert set(statement["Condition"]) == {"ForAllValues:StringLike"}, function.name
                assert keys and set(keys) <= set(_leading_keys(function)), (function.name, statement["Sid"])
    for name in ("timer_fired", "timer_sweeper", "aws_ci_events", "ingest_queue", "ingest_topic"):
        for partition in ("SUBSCRIPTIONS", "DELIV#s1", "SOURCES"):
            assert not policy_allows(name, "dynamodb:PutItem", None, partition), (name, partition)
    assert not policy_allows("deliver_webhooks", "dynamodb:PutItem", None, "RUN#web:1")
    # timer_fired creates no run, so no pipeline counter; the sweeper does, firing a schedule
    assert not policy_allows("timer_fired", "dynamodb:UpdateItem", None, "PIPE#web")
    assert policy_allows("timer_sweeper", "dynamodb:UpdateItem", None, "PIPE#web")
    for name in ("timer_fired", "timer_sweeper"):
        assert policy_allows(name, "dynamodb:PutItem", None, "ATTEMPTS#web:1:1")
    assert not policy_allows("timer_fired", "dynamodb:GetItem", None, "SCHEDULES#web")
    # the outbox publisher also applies retention: each purpose's actions on its own items only
    assert policy_allows("outbox_publisher", "dynamodb:DeleteItem", None, "RUN#web:1")
    assert policy_allows("outbox_publisher", "dynamodb:UpdateItem", None, "INSIGHTS#web")
    # and writes a started stage's expectations: it reads and updates a stage, never puts one
    assert policy_allows("outbox_publisher", "dynamodb:GetItem", None, "RUN#web:1")
    assert not policy_allows("outbox_publisher", "dynamodb:PutItem", None, "RUN#web:1")
    assert not policy_allows("outbox_publisher", "dynamodb:GetItem", None, "TOKENS")
    for partition in ("SUBSCRIPTIONS", "INSIGHTS#web", "INSMARK#r1"):
        assert not policy_allows("outbox_publisher", "dynamodb:DeleteItem", None, partition), partition
    assert not policy_allows("outbox_publisher", "dynamodb:Query", None, "PIPE#web")


def _leading_keys(function) -> list[str]:
    return generate.leading_keys(function)["ForAllValues:StringLike"]["dynamodb:LeadingKeys"]


def test_every_function_runs_the_pinned_runtime_on_arm64_with_its_measured_memory(packaged):
    """What chalice writes (the build machine's Python, x86_64, 128 MB) is replaced in the
    packaged template: docs/performance.md "Memory and architecture" gives the measurement."""
    resources = json.loads(packaged.read_text())["Resources"]
    functions = {n: r["Properties"] for n, r in resources.items() if r["Type"] == "AWS::Serverless::Function"}
    assert set(functions) == {f.logical_id for f in generate.functions()}
    for function in generate.functions():
        properties = functions[function.logical_id]
        runtime = (properties["Runtime"], properties["Architectures"])
        assert runtime == ("python3.11", ["arm64"]), function.name
        assert properties["MemorySize"] == (1024 if function is generate.API else 512), function.name
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    assert config["lambda_architecture"] == "arm64"  # so chalice downloads aarch64 wheels
    assert config["lambda_memory_size"] == generate.BACKGROUND_MEMORY_MB
    assert config["lambda_functions"]["api_handler"]["lambda_memory_size"] == generate.API_MEMORY_MB


def test_the_package_is_built_only_by_the_pinned_runtime(monkeypatch, capsys):
    """The wheels chalice fetches and the bytecode are for the building Python."""
    monkeypatch.setattr(sys, "version_info", (3, 12, 1, "final", 0))
    message = package.runtime_mismatch()
    assert message and "python3.12" in message and "python3.11" in message
    assert package.main() == 2
    assert "make package PYTHON=python3.11" in capsys.readouterr().err
    monkeypatch.setattr(sys, "version_info", (3, 11, 7, "final", 0))
    assert package.runtime_mismatch() is None


def test_retention_calls_stay_within_the_outbox_publishers_policy_and_partitions(ctx, clock, iam_actions):
    """Retention rides on the outbox publisher (events/outbound.py): its calls are that role's."""
    import boto3

    from chalicelib.domain.schemas import PatchStageIn
    from chalicelib.service.retention import apply_retention
    from chalicelib.store.models import RUN_SK, run_pk

    actions, indexes = iam_actions
    _aggregate, stage_id = _running_stage(ctx, clock)
    runs.patch_stage(ctx, stage_id, PatchStageIn(status=S.SUCCESS))
    runs.patch_stage(ctx, _aggregate.stages[1].id, PatchStageIn(status=S.SKIPPED))
    key = {"pk": {"S": run_pk(_aggregate.run.id)}, "sk": {"S": RUN_SK}}
    image = boto3.client("dynamodb").get_item(TableName=ctx.settings.table_name, Key=key)["Item"]
    boto3.client("dynamodb").delete_item(TableName=ctx.settings.table_name, Key=key)  # as the TTL does
    actions.clear()
    apply_retention(ctx, [{"eventName": "MODIFY", "dynamodb": {"NewImage": image}},
                          {"eventName": "REMOVE", "userIdentity": {"type": "Service",
                                                                   "principalId": "dynamodb.amazonaws.com"},
                           "dynamodb": {"OldImage": image}}])
    assert actions >= {"dynamodb:Query", "dynamodb:DeleteItem"}
    assert actions <= _allowed("outbox_publisher") and not indexes
    assert assert_items_allowed(actions, "outbox_publisher") == {"RUN#"}


def test_the_table_is_protected_and_its_runs_expire_by_a_stated_retention():
    template = json.loads(generate.RESOURCES_PATH.read_text())
    table = template["Resources"]["StagetrackTable"]
    assert table["Properties"]["DeletionProtectionEnabled"] is True
    assert table["DeletionPolicy"] == table["UpdateReplacePolicy"] == "Retain"
    assert table["Properties"]["TimeToLiveSpecification"] == {"AttributeName": TTL_ATTRIBUTE, "Enabled": True}
    parameter = template["Parameters"]["RunRetentionDays"]
    assert (parameter["Default"], parameter["MinValue"]) == (Settings.run_retention_days, 0) == (400, 0)
    assert "RunRetention" not in template["Resources"]  # it rides on the outbox publisher
    function = template["Resources"]["OutboxPublisher"]["Properties"]
    variables = function["Environment"]["Variables"]
    assert variables["STAGETRACK_RUN_RETENTION_DAYS"] == {"Ref": "RunRetentionDays"}
    source = function["Events"]["OutboxPublisherDynamodbEventSource"]["Properties"]
    bucket = {"Fn::GetAtt": ["StreamFailureBucket", "Arn"]}
    assert source["DestinationConfig"]["OnFailure"]["Destination"] == bucket


def _filter_passes(pattern, value) -> bool:
    """Lambda's event filtering, for what the project's patterns use: nested keys, a list of
    accepted values, ``{"exists": bool}``."""
    if isinstance(pattern, dict):
        return isinstance(value, dict) and all(_filter_passes(p, value.get(k)) for k, p in pattern.items())
    for accepted in pattern:
        if isinstance(accepted, dict):
            assert set(accepted) == {"exists"}, accepted  # any other operator: teach this first
            if (value is not None) is accepted["exists"]:
                return True
        elif value == accepted:
            return True
    return False


def test_the_outbox_filter_passes_every_record_retention_acts_on():
    """Retention reads the outbox publisher's batches: a narrower filter there would silently
    stop runs from expiring (or leave an expired run's stages behind)."""
    from chalicelib.store.stream import TTL_PRINCIPAL, run_record

    source = json.loads(generate.RESOURCES_PATH.read_text())["Resources"]["OutboxPublisher"]["Properties"][
        "Events"]["OutboxPublisherDynamodbEventSource"]["Properties"]
    patterns = [json.loads(f["Pattern"]) for f in source["FilterCriteria"]["Filters"]]

    def run(status: str, **more) -> dict:
        return {"kind": {"S": "run"}, "run_id": {"S": "web:1"}, "status": {"S": status}, **more}

    ended = {"ended_at": {"S": "2026-11-30T10:00:00Z"}}
    needed = {
        "finished run inserted": {"eventName": "INSERT", "dynamodb": {"NewImage": run("SUCCESS", **ended)}},
        "run finishing": {"eventName": "MODIFY", "dynamodb": {"NewImage": run("FAILURE", **ended),
                                                               "OldImage": run("RUNNING")}},
        "re-opened run with an expiry": {"eventName": "MODIFY", "dynamodb": {
            "NewImage": run("RUNNING", expires_at={"N": "1999999999"})}},
        "run removed by the TTL": {"eventName": "REMOVE",
                                   "userIdentity": {"type": "Service", "principalId": TTL_PRINCIPAL},
                                   "dynamodb": {"OldImage": run("SUCCESS", **ended)}},
    }
    for what, record in needed.items():
        assert run_record(record) is not None, what  # a record retention acts on
        assert any(_filter_passes(p, record) for p in patterns), what
    schedule = {"eventName": "MODIFY", "dynamodb": {"NewImage": {"kind": {"S": "schedule"}}}}
    assert not any(_filter_passes(p, schedule) for p in patterns)  # the matcher can say no


def test_the_tables_stream_has_at_most_two_readers(packaged):
    """DynamoDB Streams throttles more than two processes reading one shard at once: a new
    consumer of the stream rides on an existing reader (as the insights and retention ride on the
    outbox publisher) instead of adding an event source mapping. docs/deploy.md, Retention."""
    resources = json.loads(packaged.read_text())["Resources"]
    stream = {"Fn::GetAtt": [generate.TABLE, "StreamArn"]}
    readers = [(name, key) for name, resource in resources.items()
               if resource["Type"] == "AWS::Serverless::Function"
               for key, event in resource["Properties"].get("Events", {}).items()
               if event["Type"] == "DynamoDB" and event["Properties"]["Stream"] == stream]
    readers += [(name, None) for name, resource in resources.items()
                if resource["Type"] == "AWS::Lambda::EventSourceMapping"
                and resource["Properties"].get("EventSourceArn") == stream]
    assert len(readers) <= 2, readers
    assert {name for name, _ in readers} == {"TimerArmer", "OutboxPublisher"}
    every_stream = [e for r in resources.values() if r["Type"] == "AWS::Serverless::Function"
                    for e in r["Properties"].get("Events", {}).values() if e["Type"] == "DynamoDB"]
    assert len(every_stream) == len(readers)  # none reads the stream by another reference


def test_no_index_projects_every_attribute():
    """Each index carries what its readers read (listings, the sweeper, searches), so a change of
    an attribute no index holds writes no index entry (docs/architecture.md)."""
    indexes = table_definition("x")["GlobalSecondaryIndexes"]
    assert indexes and all(i["Projection"]["ProjectionType"] == "INCLUDE" for i in indexes)
    for index in indexes:
        attributes = set(index["Projection"]["NonKeyAttributes"])
        assert not attributes & {"intent", "seq", "expires_at", "version"} and not any(
            a.startswith("n_") for a in attributes), index["IndexName"]
    active = next(i for i in indexes if i["IndexName"] == "activeStages")
    assert set(active["Projection"]["NonKeyAttributes"]) == {"status", "attempt", "stage_id"}


# Checked against PyPI (2026-11-30, pip download --platform manylinux2014_aarch64 --python-version
# 3.11): each has a cp311 (cryptography: abi3) manylinux2014 aarch64
# wheel for its pinned version. Every other runtime requirement is pure Python.
ARM64_WHEELS_CHECKED = {"pydantic-core", "cryptography", "cffi"}


def test_the_runtime_requirements_that_are_not_pure_python_were_checked_for_arm64():
    """A new compiled dependency must be checked for an aarch64 wheel before it ships on arm64
    (docs/performance.md "Memory and architecture")."""
    from importlib.metadata import distribution

    lines = (ROOT / "requirements.txt").read_text().splitlines()
    pinned = [line.split("==")[0].strip().lower() for line in lines
              if line.strip() and not line.startswith("#")]
    compiled = {name for name in pinned
                if any(str(f).endswith((".so", ".pyd")) for f in distribution(name).files or ())}
    assert compiled == ARM64_WHEELS_CHECKED


# ---- schedules on EventBridge Scheduler (infra/part_schedules.py) -------------------------------

def test_the_api_keeps_wakeups_within_its_policy_and_the_firing_function_within_its_own(
        client, ctx, clock, iam_actions):
    import boto3

    from chalicelib.adapters.scheduler import EventBridgeWakeUps
    from chalicelib.events.wakeups import schedule_fired
    from chalicelib.service import schedules

    actions, _ = iam_actions
    scheduler = boto3.client("scheduler", region_name="us-east-1")
    scheduler.create_schedule_group(Name="stagetrack-schedules")
    ctx.wakeups = EventBridgeWakeUps("stagetrack-schedules",
                                     "arn:aws:lambda:us-east-1:123456789012:function:f",
                                     "arn:aws:iam::123456789012:role/r", None, "us-east-1", client=scheduler)
    client.post("/api/runs", {"pipeline": "web", "stages": ["BUILD"]})
    actions.clear()
    made = client.post("/api/pipelines/web/schedules", {"cron": "*/5 * * * *"}).json
    client.patch(f"/api/pipelines/web/schedules/{made['id']}", {"cron": "0 0 13 * FRI"})
    client.patch(f"/api/pipelines/web/schedules/{made['id']}", {"cron": "0 0 */2 * MON"})
    client.delete(f"/api/pipelines/web/schedules/{made['id']}")
    assert {"scheduler:CreateSchedule", "scheduler:UpdateSchedule", "scheduler:DeleteSchedule"} <= actions
    assert actions <= _allowed("api_handler")

    kept = client.post("/api/pipelines/web/schedules", {"cron": "*/5 * * * *"}).json
    clock.set(schedules.get(ctx, "web", kept["id"]).next_fire_at)
    actions.clear()
    assert schedule_fired({"pipeline": "web", "scheduleId": kept["id"]}, None) == {"outcome": "created"}
    assert actions and actions <= _allowed("schedule_fired")
    assert assert_items_allowed(actions, "schedule_fired") == {"RUN#", "PIPE#", "LINK#", "SCHEDULES#"}

    # a wake-up that outlived its schedule (the delete's EventBridge call failed) removes itself
    class Down:
        def __getattr__(self, name):
            raise ConnectionError("EventBridge Scheduler unreachable")

    ctx.wakeups._client, working = Down(), ctx.wakeups._client
    assert client.delete(f"/api/pipelines/web/schedules/{kept['id']}").status_code == 200
    ctx.wakeups._client = working
    assert len(scheduler.list_schedules(GroupName="stagetrack-schedules")["Schedules"]) == 1
    actions.clear()
    assert schedule_fired({"pipeline": "web", "scheduleId": kept["id"]}, None) == {"outcome": "gone"}
    assert "scheduler:DeleteSchedule" in actions and actions <= _allowed("schedule_fired")
    assert scheduler.list_schedules(GroupName="stagetrack-schedules")["Schedules"] == []


def test_eventbridge_scheduler_may_only_invoke_the_firing_function_and_the_api_only_pass_its_role():
    from infra import part_schedules

    resources = json.loads(generate.RESOURCES_PATH.read_text())["Resources"]
    assert resources["ScheduleGroup"] == {"Type": "AWS::Scheduler::ScheduleGroup",
                                          "Properties": {"Name": {"Fn::Sub": "${AWS::StackName}-schedules"}}}
    role = resources["ScheduleWakeUpRole"]["Properties"]
    trust = role["AssumeRolePolicyDocument"]["Statement"]
    assert [s["Principal"] for s in trust] == [{"Service": "scheduler.amazonaws.com"}]
    assert trust[0]["Condition"] == {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}},
                                     "ArnEquals": {"aws:SourceArn": {"Fn::GetAtt": ["ScheduleGroup", "Arn"]}}}
    granted = [(s["Action"], s["Resource"])
               for p in role["Policies"] for s in p["PolicyDocument"]["Statement"]]
    assert granted == [(["lambda:InvokeFunction"], [{"Fn::GetAtt": ["ScheduleFired", "Arn"]}]),
                       (["sqs:SendMessage"], [{"Fn::GetAtt": ["ScheduleWakeUpDeadLetterQueue", "Arn"]}])]
    api = {s["Sid"]: s for s in resources["ApiHandlerRole"]["Properties"]["Policies"][0]["PolicyDocument"][
        "Statement"]}
    assert api["ScheduleWakeUps"]["Resource"] == [{
        "Fn::Sub": "arn:${AWS::Partition}:scheduler:${AWS::Region}:${AWS::AccountId}"
                   ":schedule/${ScheduleGroup}/*"}]
    assert api["PassWakeUpRole"] == {
        "Sid": "PassWakeUpRole", "Effect": "Allow", "Action": ["iam:PassRole"],
        "Resource": [{"Fn::GetAtt": ["ScheduleWakeUpRole", "Arn"]}],
        "Condition": {"StringEquals": {"iam:PassedToService": "scheduler.amazonaws.com"}}}
    variables = resources["APIHandler"]["Properties"]["Environment"]["Variables"]
    assert variables["STAGETRACK_SCHEDULE_GROUP"] == {"Ref": "ScheduleGroup"}
    assert variables["STAGETRACK_SCHEDULE_TARGET_ARN"] == {"Fn::GetAtt": ["ScheduleFired", "Arn"]}
    assert variables["STAGETRACK_SCHEDULE_ROLE_ARN"] == {"Fn::GetAtt": ["ScheduleWakeUpRole", "Arn"]}
    sweeper = resources["TimerSweeper"]["Properties"]["Environment"]["Variables"]
    assert sweeper["STAGETRACK_SCHEDULE_GROUP"] == {"Ref": "ScheduleGroup"}  # it waits the grace
    fired = resources["ScheduleFired"]["Properties"]["EventInvokeConfig"]
    assert fired["DestinationConfig"]["OnFailure"]["Destination"] == {
        "Fn::GetAtt": [part_schedules.DLQ, "Arn"]}
    assert "ScheduleWakeUpDeadLetterQueueDepthAlarm" in resources  # a failure queue: it pages
