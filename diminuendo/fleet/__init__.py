"""The Valkey layer of fleet mode (issue 16, docs/FLEET.md): the foundation that lets many
gateway instances serve one session as if they were one.

Built by `runtime.Fleet` when `REDIS_URL` is set (never imported without it):

- `keys`        key and channel names, hash-tagged per session;
- `connection`  the client (RESP3, timeouts, fail fast) and the layer's exceptions;
- `replay_log`  a session's events in a stream appended by one fenced Lua script;
- `lease`       one owner per session, with a fencing token the append script checks;
- `recovery`    pure: merges live pub/sub messages with a stream read (Centrifugo's recovery);
- `bus`         a pub/sub subscriber that reconnects itself and reports every possible gap;
- `forwarding`  runtime commands sent to the session's owner and answered as if local;
- `broadcasts`  tenant lifecycle broadcasts and cache invalidations, one channel per tenant;
- `availability` degraded mode: whether Valkey is used now, and why not (for health);
- `runtime`     the fleet objects of one process, started and stopped with the gateway;
- `streams`, `ownership`, `following`  a session's stream continued (owner) or copied (follower);
- `appending`   the owner's appends: one writer per instance sends every session's frames;
- `remote`      runtime commands to and from owners; `tenants` broadcasts through the Hub.
"""
