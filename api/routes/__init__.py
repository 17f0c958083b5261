"""The API's routers, one per resource, collected in `api_router`."""

from fastapi import APIRouter, Depends

from api.deps import current_identity
from api.openai_errors import openai_responses
from api.openapi import COMMON_RESPONSES
from api.routes import (
    chat_completions,
    health,
    identity,
    models,
    responses,
    sessions,
    tasks,
    web,
)

__all__ = ["api_router"]

OPENAI_COMMON = openai_responses(
    _400="The request is malformed or a parameter is refused (`param` names it).",
    _413="The request body is too large.",
    _502="Temporal or the model refused the call.",
    _503="Temporal, the workers or the model are not answering.",
)
"""The OpenAI surface answers every error in OpenAI's shape."""

api_router = APIRouter()
api_router.include_router(health.router)
api_router.include_router(identity.router, responses=COMMON_RESPONSES)
api_router.include_router(tasks.router, responses=COMMON_RESPONSES)
api_router.include_router(sessions.router, responses=COMMON_RESPONSES)
api_router.include_router(chat_completions.router, responses=OPENAI_COMMON)
api_router.include_router(responses.router, responses=OPENAI_COMMON)
# The model list carries no caller; it still needs one (as OpenAI's does).
api_router.include_router(
    models.router, responses=OPENAI_COMMON, dependencies=[Depends(current_identity)]
)
api_router.include_router(web.router)
