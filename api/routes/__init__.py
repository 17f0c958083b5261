"""The API's routers, one per resource, collected in `api_router`."""

from fastapi import APIRouter

from api.routes import health, tasks

__all__ = ["api_router"]

api_router = APIRouter()
api_router.include_router(health.router)
api_router.include_router(tasks.router)
