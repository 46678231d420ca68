"""An asyncio client of the Diminuendo protocol, and the `diminuendo client` command.

```python
from diminuendo.client import DiminuendoClient

async with DiminuendoClient.connect("ws://127.0.0.1:8001/ws") as client:
    session = await client.create_session("echo")
    async for event in client.stream_turn(session.id, "hello"):
        print(event)
```

See docs/CLIENT.md. The library needs only `websockets` and `msgspec` (no Sanic).
"""

from diminuendo.client import events
from diminuendo.client.client import DiminuendoClient
from diminuendo.client.connection import ReconnectPolicy
from diminuendo.client.errors import (
    ClientError,
    ConnectionFailed,
    ConnectionLost,
    ProtocolError,
    ServerError,
)
from diminuendo.client.events import Event, Gap, UnknownEvent, decode_event
from diminuendo.client.subscriptions import Subscription

__all__ = [
    "ClientError",
    "ConnectionFailed",
    "ConnectionLost",
    "DiminuendoClient",
    "Event",
    "Gap",
    "ProtocolError",
    "ReconnectPolicy",
    "ServerError",
    "Subscription",
    "UnknownEvent",
    "decode_event",
    "events",
]
