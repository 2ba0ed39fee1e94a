"""infrawatch agent: host and GPU metrics for CloudWatch."""

__version__ = "0.1.0"
