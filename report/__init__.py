"""`infrawatch-report`: what the fleet used, what it wasted, how available it was, read back from CloudWatch."""
