"""A Faust agent that does nothing: the framework's own cost per record, next to the worker's.

Method: run as a child process by bench/run's throughput phase (`python -m bench.faust_anchor
each|take`, settings from SENDGATE_* like a worker), in its own group over the same events topic.
Its Faust app is the worker's (`topology.faust_app`: the same group timings, producer acks and
linger, partitions, store and guarantee) with one agent and no table:
- `each`: `async for value in stream` -> orjson decode + encode -> `await topic.send(...)`, the
  way Faust's documentation writes an agent;
- `take`: the same over `stream.take(500, within=0.005)`, Faust's own batching (values only, so
  its echoes go without a key).
Each record is echoed to `<prefix>anchor.<mode>`; its record timestamps (the produce times) give the
span, as the worker's decisions do.
"""

from __future__ import annotations

import sys

import faust
import orjson
from faust.types import StreamT

from sendgate.streams.config import Settings
from sendgate.streams.worker.topology import faust_app

TAKE, WITHIN_S = 500, 0.005
MODES = ("each", "take")


def output_topic(settings: Settings, mode: str) -> str:
    return settings.topic(f"anchor.{mode}")


def build(settings: Settings, mode: str):
    app = faust_app(settings)
    source = app.topic(settings.topic("events"), key_type=bytes, value_type=bytes)
    out = app.topic(output_topic(settings, mode), key_type=bytes, value_type=bytes)

    if mode == "each":

        @app.agent(source, name="anchor")
        async def echo_each(stream: StreamT) -> None:
            async for key, value in stream.items():
                await out.send(key=key, value=orjson.dumps(orjson.loads(value)))

    else:

        @app.agent(source, name="anchor")
        async def echo_taken(stream: StreamT) -> None:
            async for values in stream.take(TAKE, within=WITHIN_S):
                for value in values:
                    await out.send(value=orjson.dumps(orjson.loads(value)))

    return app


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in MODES:
        print(f"usage: python -m bench.faust_anchor {{{'|'.join(MODES)}}}  (settings from SENDGATE_*)", file=sys.stderr)
        return 2
    settings = Settings.from_env()
    faust.Worker(build(settings, argv[0]), loglevel=settings.log_level, quiet=True).execute_from_commandline()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
