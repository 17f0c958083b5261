"""The certified OpenID Connect provider of tests/idp (`oidc-provider` on Node), started
as a child process on a free loopback port, for the benchmarks (and any test).

Each client of the provider stands for one user (`acme-ann`, `acme-abe`, `acme-ada`,
`globex-gus`; secret `<user>-secret`); `token(user)` runs the client_credentials grant
and returns a JWT access token for the audience `switchboard`.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import httpx

from testkit.servers import free_port

__all__ = ["API_RESOURCE", "IDP_DIR", "IdentityProvider", "install_idp"]

IDP_DIR = Path(__file__).resolve().parent.parent / "tests" / "idp"
API_RESOURCE = "https://switchboard.test/api"
"""The resource (audience `switchboard`) the provider issues API tokens for."""


def install_idp() -> None:
    """`npm install` the pinned provider once (no lockfile, as tests/idp says)."""
    if shutil.which("node") is None:
        raise RuntimeError("node is needed for the identity provider")
    if not (IDP_DIR / "node_modules" / "oidc-provider").exists():
        subprocess.run(
            ["npm", "install", "--no-package-lock", "--no-audit", "--no-fund"],
            cwd=IDP_DIR,
            check=True,
            timeout=300,
        )


class IdentityProvider:
    """The provider as a child process; its signing keys live in `keys`."""

    def __init__(self, keys: Path) -> None:
        self.keys = keys
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self._process: subprocess.Popen[str] | None = None

    def __enter__(self) -> IdentityProvider:
        install_idp()
        self._process = subprocess.Popen(
            ["node", "server.mjs", str(self.port), str(self.keys)],
            cwd=IDP_DIR,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line.startswith("ready"):
            self.__exit__()
            raise RuntimeError(f"the identity provider did not start: {line!r}")
        return self

    def __exit__(self, *_: object) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=10)
            self._process = None

    def token(self, user: str, resource: str = API_RESOURCE) -> str:
        response = httpx.post(
            f"{self.issuer}/token",
            auth=(user, f"{user}-secret"),
            data={"grant_type": "client_credentials", "resource": resource, "scope": "api"},
        )
        response.raise_for_status()
        token: str = response.json()["access_token"]
        return token
