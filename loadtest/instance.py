"""Which process answers on a port: every ``tandtid serve`` a tool starts gets a name of its own.

Between choosing a free port and the server binding it, another process may take the port (another
bench's server, a test's, an engineer's), and its ``/ready`` is not ours: a bench that took it for
ours would measure someone else's server. So a starter names its process (``TANDTID_INSTANCE``,
which ``/ready`` echoes as ``instance``) and waits for ``/ready`` to answer 200 with that name;
ours then cannot bind the port and exits, which the starter reports.
"""

from __future__ import annotations

import secrets

import httpx

ENV = "TANDTID_INSTANCE"


def new_name() -> str:
    return secrets.token_hex(8)


def answering(response: httpx.Response) -> str | None:
    """The ``instance`` a ``/ready`` answer names (None: none, or not a JSON object)."""
    try:
        body = response.json()
    except ValueError:
        return None
    name = body.get("instance") if isinstance(body, dict) else None
    return name if isinstance(name, str) else None


def ready_as(response: httpx.Response, name: str | None) -> bool:
    """A ``/ready`` answer of 200 from the process named ``name`` (any process when None: a server
    that is not tandtid and echoes no name, like the bench's trivial endpoint)."""
    return response.status_code == 200 and (name is None or answering(response) == name)
