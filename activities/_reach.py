"""Is a remote repository's host answering? Asked before a fetch, briefly.

A git fetch over `ssh://` or `git://` from a host that does not answer waits for
the kernel's TCP connect timeout (about two minutes), and a retry waits again,
while the task sits in `preparing` saying nothing. One bounded TCP connect first
turns that into an immediate, clear failure. http(s) is left to git (proxies may
stand between), as are local paths and `file://`.
"""

from __future__ import annotations

import re
import socket
from urllib.parse import urlsplit

__all__ = ["CONNECT_TIMEOUT_SECONDS", "unreachable_reason"]

CONNECT_TIMEOUT_SECONDS = 10.0
_PORTS = {"ssh": 22, "git+ssh": 22, "ssh+git": 22, "git": 9418}
_SCP_LIKE = re.compile(r"^[A-Za-z0-9._~-]+@(?P<host>[A-Za-z0-9.-]+):(?!//)")


def unreachable_reason(url: str, timeout: float = CONNECT_TIMEOUT_SECONDS) -> str | None:
    """Why `url`'s host cannot be reached (None: it answered, or it is not ssh/git)."""
    target = _host_port(url)
    if target is None:
        return None
    host, port = target
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except TimeoutError:
        return f"{host}:{port} did not answer within {timeout:g} s"
    except socket.gaierror as exc:
        return f"the host name {host!r} does not resolve ({exc.strerror})"
    except OSError as exc:
        return f"could not connect to {host}:{port} ({exc.strerror or exc})"


def _host_port(url: str) -> tuple[str, int] | None:
    url = url.strip()
    scp = _SCP_LIKE.match(url)
    if scp is not None:
        return scp.group("host"), 22
    if "://" not in url:
        return None
    parts = urlsplit(url)
    default = _PORTS.get(parts.scheme.lower())
    if default is None or not parts.hostname:
        return None
    try:
        port = parts.port or default
    except ValueError:
        return None
    return parts.hostname, port
