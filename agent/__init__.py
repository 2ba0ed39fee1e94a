"""infrawatch agent: host and GPU metrics for CloudWatch."""
