"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Response, status
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from api.deps import AppSettings, MetricsCaller, TemporalClient
from switchboard.errors import ServiceUnavailable
from switchboard.models import Model

__all__ = ["router"]

router = APIRouter(tags=["health"])

_READY_TIMEOUT = timedelta(seconds=2)


class Health(Model):
    status: str
    temporal: str | None = None


@router.get("/healthz", response_model_exclude_none=True)
async def healthz() -> Health:
    """Liveness: the process answers (Temporal is checked by `/readyz`)."""
    return Health(status="ok")


@router.get("/readyz", responses={503: {"description": "Temporal is not reachable."}})
async def readyz(client: TemporalClient, settings: AppSettings) -> Health:
    """Readiness: Temporal answers a health check."""
    try:
        healthy = await client.service_client.check_health(timeout=_READY_TIMEOUT)
    except Exception as exc:  # any failure to reach Temporal means "not ready"
        raise ServiceUnavailable.unreachable(settings.temporal_address) from exc
    if not healthy:
        raise ServiceUnavailable(f"Temporal at {settings.temporal_address} reports not serving")
    return Health(status="ok", temporal="ok")


@router.get("/metrics", response_class=Response, include_in_schema=False)
async def metrics(_: MetricsCaller) -> Response:
    """Prometheus text exposition of this process's metrics (a token needed with
    `SWITCHBOARD_AUTH_METRICS`)."""
    return Response(
        generate_latest(REGISTRY), status_code=status.HTTP_200_OK, media_type=CONTENT_TYPE_LATEST
    )
