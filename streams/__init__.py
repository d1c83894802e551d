"""Wiring: Faust app, topics, tables, agents, CLI, local broker, client."""
