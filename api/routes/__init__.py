"""The API's routers, one per resource, collected in `api_router`."""

from fastapi import APIRouter

from api.openapi import COMMON_RESPONSES
from api.routes import chat_completions, health, sessions, tasks, web

__all__ = ["api_router"]

api_router = APIRouter()
api_router.include_router(health.router)
api_router.include_router(tasks.router, responses=COMMON_RESPONSES)
api_router.include_router(sessions.router, responses=COMMON_RESPONSES)
api_router.include_router(chat_completions.router, responses=COMMON_RESPONSES)
api_router.include_router(web.router)
