"""Test-only: widen the window in which Sanic loses a SIGTERM, in every process of a test's tree.

On `PYTHONPATH` (tests/integration/test_stop_while_starting.py puts it there), Python imports
this module at start-up. With `DIMINUENDO_TEST_SLOW_START_S` set, it makes Sanic's
`_setup_system_signals` (sanic/server/runners.py) sleep that long right after it has installed
the event loop's SIGTERM handler, before the loop runs again: the moment a real start-up passes
in a few milliseconds (the after_server_start listeners, the "Worker ready" line). A SIGTERM
there reaches uvloop's handler while the loop is not running, and uvloop never acts on it. The
line on stderr tells the test the worker is in the window.
"""

import os

_DELAY = os.environ.get("DIMINUENDO_TEST_SLOW_START_S")

if _DELAY:
    import sys
    import time

    import sanic.server.runners as _runners

    _install = _runners._setup_system_signals

    def _setup_system_signals_then_sleep(*args: object, **kwargs: object) -> None:
        _install(*args, **kwargs)  # type: ignore[arg-type]
        print(f"slow-start: pid {os.getpid()} in the window", file=sys.stderr, flush=True)
        time.sleep(float(_DELAY))

    _runners._setup_system_signals = _setup_system_signals_then_sleep
