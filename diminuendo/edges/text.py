"""Gateway values as the text an edge protocol shows (a question's option, a tool's output)."""

from __future__ import annotations

import json
from typing import Any


def as_text(value: Any) -> str:
    """A string as it is; any other JSON value as its JSON."""
    return value if isinstance(value, str) else json.dumps(value)
