"""An alarm changing state, delivered as CloudWatch and EventBridge document it, on top of moto.

moto stores alarms, rules and topics but fires no alarm action, and its EventBridge cannot deliver to an SNS
target. This fake does both, strictly by the documented contracts, reading every alarm, rule and target back
through the real APIs:
- CloudWatch publishes to each ARN in the alarm's actions for the state it enters (AlarmActions for ALARM,
  OKActions for OK, InsufficientDataActions for INSUFFICIENT_DATA).
- CloudWatch emits a `CloudWatch Alarm State Change` event to the default bus ("Alarm events and
  EventBridge" in the CloudWatch user guide gives its fields); every enabled rule whose pattern matches it
  delivers to each of its targets, through the target's input transformer when it has one. Matching and
  transforming are moto's own implementations of EventBridge's rules (prefix, wildcard, input paths).
SNS then delivers to the topic's subscribers as moto does (SQS subscribers receive the message).
"""

from __future__ import annotations

import json
from typing import Any

from moto.events.models import EventPattern
from moto.events.utils import EventTemplateParser

TIME = "2026-12-06T17:00:00Z"
PREVIOUS = {"ALARM": "OK", "OK": "ALARM", "INSUFFICIENT_DATA": "OK"}
ACTIONS = {"ALARM": "AlarmActions", "OK": "OKActions", "INSUFFICIENT_DATA": "InsufficientDataActions"}


class AlarmDelivery:
    def __init__(self, clients: Any) -> None:
        self._clients = clients

    def enter(self, alarm_name: str, state: str, reason: str) -> None:
        cloudwatch, sns = self._clients["cloudwatch"], self._clients["sns"]
        alarm = cloudwatch.describe_alarms(AlarmNames=[alarm_name])["MetricAlarms"][0]
        for topic in alarm.get(ACTIONS[state], []):
            sns.publish(TopicArn=topic, Subject=f'{state}: "{alarm_name}"', Message=json.dumps({
                "AlarmName": alarm_name, "NewStateValue": state, "NewStateReason": reason,
                "OldStateValue": PREVIOUS[state],
            }))
        event = self._event(alarm, state, reason)
        events = self._clients["events"]
        for rule in events.list_rules()["Rules"]:
            if rule.get("State") != "ENABLED" or not EventPattern.load(rule["EventPattern"]).matches_event(event):
                continue
            for target in events.list_targets_by_rule(Rule=rule["Name"])["Targets"]:
                if ":sns:" not in target["Arn"]:
                    continue  # only SNS deliveries are observed here
                sns.publish(TopicArn=target["Arn"], Message=self._input(target, event))

    @staticmethod
    def _input(target: dict[str, Any], event: dict[str, Any]) -> str:
        """What the target receives: the whole event, or what its input transformer makes of it."""
        transformer = target.get("InputTransformer")
        if transformer is None:
            return json.dumps(event)
        delivered = EventTemplateParser.parse(
            input_template=transformer["InputTemplate"], input_paths_map=transformer.get("InputPathsMap", {}),
            event={**event, "ingestion-time": 0},  # moto's parser also offers <aws.events.event.ingestion-time>
        )
        return delivered if isinstance(delivered, str) else json.dumps(delivered)

    @staticmethod
    def _event(alarm: dict[str, Any], state: str, reason: str) -> dict[str, Any]:
        arn = alarm["AlarmArn"]
        _, _, _, region, account, _ = arn.split(":", 5)
        return {
            "version": "0", "id": "c4c1c1c9-6542-e61b-6ef0-8c4d36933a92",
            "detail-type": "CloudWatch Alarm State Change", "source": "aws.cloudwatch", "account": account,
            "time": TIME, "region": region, "resources": [arn],
            "detail": {
                "alarmName": alarm["AlarmName"],
                "state": {"value": state, "reason": reason, "timestamp": TIME},
                "previousState": {"value": PREVIOUS[state], "timestamp": TIME},
                "configuration": {"description": alarm.get("AlarmDescription", "")},
            },
        }
