"""An owner instance in its own process, for the test that kills it with SIGKILL mid-request:
`python -m tests.cluster.forward_owner <valkey url> <instance id>` answers forwarded commands,
prints `ready` once its inbox is subscribed and `ran <name>` when a command starts; a command
whose body has `"do": "wait"` never finishes."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from diminuendo.fleet.connection import open_client
from diminuendo.fleet.forwarding import Command, Forwarder
from diminuendo.fleet.keys import Keyspace


async def handle(command: Command) -> dict[str, Any]:
    print("ran", command.name, flush=True)
    if command.body.get("do") == "wait":
        await asyncio.Event().wait()
    return {"accepted": True}


async def main(url: str, instance_id: str) -> None:
    forwarder = Forwarder(open_client(url), url, Keyspace("dimtest"), instance_id, handle)
    await forwarder.start()
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
