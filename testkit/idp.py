"""The certified OpenID Connect provider of tests/idp (`oidc-provider` on Node), started
as a child process on a free loopback port: the one launcher of the tests and the
benchmarks.

Each client of the provider stands for one user (`acme-ann`, `acme-abe`, `acme-ada`,
`globex-gus`; secret `<user>-secret`); `token(user)` runs the client_credentials grant
and returns a JWT access token for the audience `switchboard`. `restart(rotate=True)`
publishes a new signing key (the old one stays in the JWKS); `web_redirects` registers
the web chat's public client (authorization code + PKCE) with those redirect URIs.
"""

from __future__ import annotations

import os
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
        raise RuntimeError("node is needed for the identity provider (see .ci/run)")
    if not (IDP_DIR / "node_modules" / "oidc-provider").exists():
        subprocess.run(
            ["npm", "install", "--no-package-lock", "--no-audit", "--no-fund"],
            cwd=IDP_DIR,
            check=True,
            timeout=300,
        )


class IdentityProvider:
    """The provider as a child process; its signing keys live in `keys`.

    As a context manager it installs, starts and stops the provider; `start`, `stop`
    and `restart` are there for a test that restarts it (a key rotation).
    """

    def __init__(self, keys: Path, web_redirects: tuple[str, ...] = ()) -> None:
        self.keys = keys
        self.web_redirects = web_redirects
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self._process: subprocess.Popen[str] | None = None

    def __enter__(self) -> IdentityProvider:
        install_idp()
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def start(self, *, rotate: bool = False) -> None:
        """Start the provider (`rotate`: with a new signing key first); returns once
        it serves."""
        argv = ["node", "server.mjs", str(self.port), str(self.keys)]
        self._process = subprocess.Popen(
            [*argv, "--rotate"] if rotate else argv,
            cwd=IDP_DIR,
            env={**os.environ, "IDP_WEB_REDIRECT_URIS": ",".join(self.web_redirects)},
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line.startswith("ready"):
            self.stop()
            raise RuntimeError(f"the identity provider did not start: {line!r}")

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=10)
            self._process = None

    def restart(self, *, rotate: bool) -> None:
        self.stop()
        self.start(rotate=rotate)

    def token(self, user: str, resource: str = API_RESOURCE) -> str:
        response = httpx.post(
            f"{self.issuer}/token",
            auth=(user, f"{user}-secret"),
            data={"grant_type": "client_credentials", "resource": resource, "scope": "api"},
        )
        if response.status_code != 200:
            raise RuntimeError(f"no token for {user}: {response.status_code} {response.text}")
        token: str = response.json()["access_token"]
        return token
