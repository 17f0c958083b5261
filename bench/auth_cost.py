"""Auth cost end to end: what verifying the caller adds to one request over real HTTP.

Three API processes (uvicorn, `api.main:create_app`) run side by side, one per
identity mode: `local` (the `X-Switchboard-User` header, nothing verified, the
baseline), `tokens` (a static API token: sha256 and a look-up in the token file) and
`oidc` (a JWT access token from the certified provider of tests/idp, its RS256
signature checked against the cached key set). One client sends the same cheap
authenticated request (`GET /v1/models`: identity, settings, no Temporal call) to
each in turn, one request at a time, each round starting with the next mode, so that
load on the shared machine falls on all three alike, and records each round trip.

    python -m bench.auth_cost [--quick]
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench._env import workdir
from bench._report import Options, Report, Row, run_main
from switchboard.api_tokens import TokenStore
from switchboard.identity import Role
from testkit import free_port
from testkit.idp import IdentityProvider

__all__ = ["run"]

ROUTE = "/v1/models"
REQUESTS = 3000
"""Per mode in a full run (`--quick`: 60)."""
WARMUP = 30
TOKENS_TARGET_MS = 1.0
"""Added p50 a static token may cost: a hash and a dictionary look-up."""
OIDC_TARGET_MS = 5.0
"""Added p50 an OIDC token may cost: one RS256 verification (keys cached)."""
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Mode:
    name: str
    headers: dict[str, str]
    url: str = ""
    samples: list[float] = field(default_factory=list)

    def quantile(self, q: float) -> float:
        """Milliseconds at quantile `q` (0-1)."""
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


@dataclass
class _Api:
    """One API process (`api.main:create_app` under uvicorn) in one identity mode."""

    mode: str
    log: Path
    process: subprocess.Popen[bytes]
    url: str

    @classmethod
    def start(cls, mode: str, data: Path, extra: dict[str, str]) -> _Api:
        port = free_port()
        env = {
            **os.environ,
            "SWITCHBOARD_AUTH_MODE": mode,
            "SWITCHBOARD_DATA_DIR": str(data),
            "SWITCHBOARD_TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",  # never called
            **extra,
        }
        argv = [sys.executable, "-m", "uvicorn", "--factory", "api.main:create_app"]
        argv += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
        log = data / "api.log"
        with log.open("w") as out:
            process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=out)
        return cls(mode, log, process, f"http://127.0.0.1:{port}")

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the {self.mode} API exited: {self.log.read_text()[-2000:]}")
            try:
                httpx.get(f"{self.url}/healthz", timeout=1)
                return
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the {self.mode} API did not start") from None
                time.sleep(0.1)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=15)


def _measure(modes: list[Mode], requests: int) -> None:
    with httpx.Client(timeout=30) as client:
        for mode in modes:  # key sets fetched, connections open
            for _ in range(WARMUP):
                response = client.get(f"{mode.url}{ROUTE}", headers=mode.headers)
                response.raise_for_status()
        rounds = 0
        while min(len(mode.samples) for mode in modes) < requests:
            rounds += 1  # each round starts with the next mode: no mode always goes first
            for mode in modes[rounds % len(modes) :] + modes[: rounds % len(modes)]:
                began = time.perf_counter()
                response = client.get(f"{mode.url}{ROUTE}", headers=mode.headers)
                mode.samples.append(time.perf_counter() - began)
                if response.status_code != 200:
                    raise RuntimeError(f"{mode.name}: {response.status_code} {response.text}")


async def run(options: Options) -> Report:
    requests = 60 if options.quick else REQUESTS
    with workdir("auth-cost") as work, ExitStack() as stack:
        idp = stack.enter_context(IdentityProvider(work / "idp-keys.json"))
        token, _ = TokenStore(work / "tokens" / "api-tokens.json").create(
            subject="bench", tenant="acme", roles=[Role.REQUESTER]
        )
        oidc = {"SWITCHBOARD_OIDC_ISSUER": idp.issuer, "SWITCHBOARD_OIDC_AUDIENCE": "switchboard"}
        modes = [
            Mode("local", {"X-Switchboard-User": "bench"}),
            Mode("tokens", {"Authorization": f"Bearer {token}"}),
            Mode("oidc", {"Authorization": f"Bearer {idp.token('acme-ann')}"}),
        ]
        extras = {"local": {}, "tokens": {}, "oidc": oidc}
        apis = []
        for mode in modes:  # all three start at once; then each is waited for
            data = work / mode.name
            data.mkdir(exist_ok=True)
            api = _Api.start(mode.name, data, extras[mode.name])
            stack.callback(api.stop)
            apis.append(api)
            mode.url = api.url
        for api in apis:
            api.wait_ready()
        _measure(modes, requests)
    return _report(modes)


def _report(modes: list[Mode]) -> Report:
    local, tokens, oidc = modes
    base50, base99 = local.quantile(0.5), local.quantile(0.99)

    def row(mode: Mode, target_ms: float) -> Row:
        p50, p99 = mode.quantile(0.5), mode.quantile(0.99)
        return Row(
            f"auth: {mode.name} vs local mode (p50 / p99, {ROUTE} over HTTP)",
            f"{p50:.2f} / {p99:.2f} ms ({p50 - base50:+.2f} / {p99 - base99:+.2f})",
            f"{base50:.2f} / {base99:.2f} ms",
            p50 / base50,
            f"+≤ {target_ms:g} ms p50",
            p50 - base50 <= target_ms,
        )

    lines = [
        "| mode | requests | p50 | p90 | p99 | mean | added p50 | added p99 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for mode in modes:
        p50, p90, p99 = (mode.quantile(q) for q in (0.5, 0.9, 0.99))
        mean = statistics.fmean(mode.samples) * 1000
        lines.append(
            f"| {mode.name} | {len(mode.samples)} | {p50:.2f} ms | {p90:.2f} ms | "
            f"{p99:.2f} ms | {mean:.2f} ms | {p50 - base50:+.2f} ms | {p99 - base99:+.2f} ms |"
        )
    details = (
        "Three API processes side by side (uvicorn, one worker each), one per identity "
        f"mode; one client sends `GET {ROUTE}` to each in turn (round-robin, each round "
        "starting with the next mode), "
        "one request at a time, over real HTTP on loopback (keep-alive connections). "
        "`local` verifies nothing (the baseline); `tokens` hashes a static API token and "
        "looks it up in the token file (reread only when it changes); `oidc` checks a JWT "
        "access token of the certified provider (tests/idp) against its cached key set, "
        "in a worker thread.\n\n" + "\n".join(lines)
    )
    return Report(
        key="auth_cost",
        title="Auth cost per request",
        rows=[row(tokens, TOKENS_TARGET_MS), row(oidc, OIDC_TARGET_MS)],
        details=details,
    )


if __name__ == "__main__":
    run_main(run, "Auth cost per request (local vs tokens vs oidc)")
