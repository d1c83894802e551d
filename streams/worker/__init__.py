"""The worker: the Faust app, its agents, tables, crash protocol and web views."""
