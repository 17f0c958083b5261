"""Switchboard's HTTP API: REST for tasks, server-sent events, health and metrics.

`create_app(settings)` builds the FastAPI app; its lifespan creates one Temporal
client (lazily connected, so the API starts and answers 503 while Temporal is
down) and one `TaskService` shared by every request. OpenAPI docs at `/docs`.
"""

from api.main import create_app

__all__ = ["create_app"]
