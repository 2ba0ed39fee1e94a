"""SNS: encryption keys CloudWatch can use, existing topics left as they are, subscriptions, the test message."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from moto import mock_aws

from tests.fakes.aws import Provisioner

ACCOUNT = "123456789012"
CRITICAL = f"arn:aws:sns:us-east-1:{ACCOUNT}:ml-critical"
HOST = 'stack = "ml"\n[[hosts]]\ninstance_ids = ["i-0000000000000000a"]\n'


@pytest.fixture
def provisioner(tmp_path: Path) -> Iterator[Provisioner]:
    with mock_aws():
        yield Provisioner(tmp_path)


def key(provisioner: Provisioner, *services: str) -> str:
    """A customer-managed key whose policy lets `services` encrypt and decrypt."""
    statements = [{"Sid": "Owner", "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
                   "Action": "kms:*", "Resource": "*"}]
    statements += [{"Sid": service, "Effect": "Allow", "Principal": {"Service": service},
                    "Action": ["kms:Decrypt", "kms:GenerateDataKey*"], "Resource": "*"} for service in services]
    policy = json.dumps({"Version": "2012-10-17", "Statement": statements})
    return str(provisioner.client("kms").create_key(Policy=policy)["KeyMetadata"]["KeyId"])


def test_an_encrypted_topic_needs_a_key_that_cloudwatch_and_eventbridge_may_use(provisioner: Provisioner) -> None:
    only_cloudwatch = key(provisioner, "cloudwatch.amazonaws.com")
    run = provisioner.run(HOST + f'[notifications.critical]\nkms_key_id = "{only_cloudwatch}"\n', "--yes")
    assert run.code == 2
    assert run.err.splitlines() == [
        "notifications.critical.kms_key_id: the key policy must allow events.amazonaws.com to use kms:Decrypt and "
        f'kms:GenerateDataKey*, got "{only_cloudwatch}"'
    ]
    assert provisioner.recorder.writes == Counter()

    usable = key(provisioner, "cloudwatch.amazonaws.com", "events.amazonaws.com")
    run = provisioner.run(HOST + f'[notifications.critical]\nkms_key_id = "{usable}"\n', "--yes")
    assert run.code == 0
    attributes = provisioner.client("sns").get_topic_attributes(TopicArn=CRITICAL)["Attributes"]
    assert attributes["KmsMasterKeyId"] == usable


def test_a_key_nobody_granted_cloudwatch_is_refused(provisioner: Provisioner) -> None:
    bare = key(provisioner)
    run = provisioner.run(HOST + f'[events]\nenabled = false\n[notifications.warning]\nkms_key_id = "{bare}"\n')
    assert run.err.splitlines() == [
        "notifications.warning.kms_key_id: the key policy must allow cloudwatch.amazonaws.com to use kms:Decrypt "
        f'and kms:GenerateDataKey*, got "{bare}"'
    ]


def test_an_existing_topic_is_notified_but_never_modified(provisioner: Provisioner) -> None:
    sns = provisioner.client("sns")
    pager = sns.create_topic(Name="pager")["TopicArn"]
    policy = sns.get_topic_attributes(TopicArn=pager)["Attributes"]["Policy"]
    run = provisioner.run(HOST + f'[notifications.critical]\ntopic_arn = "{pager}"\n', "--yes")
    assert run.code == 0
    assert f"= unchanged topic {pager} (existing topic, used as it is)" in run.lines
    assert "CreateTopic" in provisioner.recorder.writes  # the warning topic only
    assert sns.get_topic_attributes(TopicArn=pager)["Attributes"]["Policy"] == policy
    heartbeat = provisioner.client("cloudwatch").describe_alarms(
        AlarmNames=["ml/host/i-0000000000000000a/heartbeat_missing"])["MetricAlarms"][0]
    assert heartbeat["AlarmActions"] == [pager]
    # Its policy may not let EventBridge publish, so the alarms' own actions stay its path and no rule is made.
    assert provisioner.client("events").list_rules()["Rules"] == []


def test_a_topic_the_stack_no_longer_uses_is_deleted_only_with_prune(provisioner: Provisioner) -> None:
    provisioner.run(HOST, "--yes")
    pager = provisioner.client("sns").create_topic(Name="pager")["TopicArn"]
    switched = HOST + f'[notifications.critical]\ntopic_arn = "{pager}"\n'
    run = provisioner.run(switched, "--yes")
    assert "! keep topic ml-critical (no longer in the spec; --prune deletes it)" in run.lines
    run = provisioner.run(switched, "--yes", "--prune")
    assert run.code == 0
    assert provisioner.recorder.writes["DeleteTopic"] == 1
    topics = [topic["TopicArn"] for topic in provisioner.client("sns").list_topics()["Topics"]]
    assert sorted(topics) == [f"arn:aws:sns:us-east-1:{ACCOUNT}:ml-warning", pager]


def test_subscriptions_are_never_duplicated_and_pruned_on_request(provisioner: Provisioner) -> None:
    two = HOST + "".join(
        f'[[notifications.critical.subscriptions]]\nendpoint = "{address}"\n' for address in ("a@example.com",
                                                                                          "b@example.com"))
    provisioner.run(two, "--yes")
    provisioner.run(two, "--yes")
    assert provisioner.recorder.writes == Counter()
    one = HOST + '[[notifications.critical.subscriptions]]\nendpoint = "a@example.com"\n'
    run = provisioner.run(one, "--yes", "--prune")
    assert provisioner.recorder.writes == Counter({"Unsubscribe": 1})
    assert "- delete subscription ml-critical email:b@example.com" in run.lines
    subscriptions = provisioner.client("sns").list_subscriptions_by_topic(TopicArn=CRITICAL)["Subscriptions"]
    assert [item["Endpoint"] for item in subscriptions] == ["a@example.com"]


def test_test_notification_arrives_on_the_subscribed_queue(provisioner: Provisioner) -> None:
    sqs = provisioner.client("sqs")
    queue = sqs.create_queue(QueueName="alerts")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    spec = HOST + f'[[notifications.critical.subscriptions]]\nprotocol = "sqs"\nendpoint = "{queue_arn}"\n'
    provisioner.run(spec, "--yes")
    run = provisioner.run(spec, "--test-notification")
    assert run.code == 0
    assert provisioner.recorder.writes == Counter({"Publish": 2})
    assert [line.split(" (message")[0] for line in run.lines] == [
        f"sent test notification to {CRITICAL}",
        f"sent test notification to arn:aws:sns:us-east-1:{ACCOUNT}:ml-warning",
    ]
    received = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
    envelopes = [json.loads(message["Body"]) for message in received]
    assert [(envelope["Subject"], envelope["TopicArn"]) for envelope in envelopes] == [
        ("infrawatch test notification (ml, critical)", CRITICAL)
    ]
