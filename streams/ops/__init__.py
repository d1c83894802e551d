"""Operator commands over the log: replay a policy, rebuild the tables."""
