"""provision-alarms: CloudWatch alarms, dashboards, SNS topics and an EventBridge rule from a spec."""
