"""The one exception the auth core raises for anything a client did wrong.

Callers turn it into the protocol's ``AUTH_FAILED`` error (HTTP 401 on the upgrade, an error event
on the socket) and can show ``str(err)`` to the user as is: the reason is a short fixed phrase
chosen here, never text copied from the token, a key or a URL.
"""


class AuthError(Exception):
    """Authentication failed; ``str(err)`` is a short, user-safe reason.

    The constructor takes only the reason so that nothing else (the token, a claim value, an
    upstream exception message) can end up in the message by accident.
    """

    code = "AUTH_FAILED"

    def __init__(self, reason: str = "invalid token") -> None:
        super().__init__(reason)
        self.reason = reason
