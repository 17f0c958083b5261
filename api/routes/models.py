"""OpenAI-compatible model discovery: `GET /v1/models` and `GET /v1/models/{id}`.

A frontend lists these to let people pick a model. `switchboard` is the
conversation that delegates coding tasks; `Settings.openai_models` adds more ids,
each mapped to an upstream model (the same conversation, another model).
"""

from __future__ import annotations

import time
from typing import Literal

from fastapi import APIRouter, Path
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from api.deps import AppSettings
from api.frontend import Refusal, upstream_model
from api.openai_errors import openai_responses

__all__ = ["router"]

router = APIRouter(prefix="/v1/models", tags=["openai"])

_STARTED = int(time.time())


class ModelObject(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "switchboard"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelObject]


@router.get("", response_model=ModelList)
async def list_models(settings: AppSettings) -> ModelList:
    """The models a client may name (OpenAI's list shape)."""
    return ModelList(data=[ModelObject(id=m, created=_STARTED) for m in settings.public_models])


@router.get(
    "/{model_id}",
    response_model=ModelObject,
    responses=openai_responses(_404="No such model (`model_not_found`)."),
)
async def get_model(
    settings: AppSettings, model_id: str = Path(max_length=200)
) -> ModelObject | JSONResponse:
    """One model (OpenAI's object shape)."""
    try:
        upstream_model(settings, model_id)
    except Refusal as exc:
        return exc.response()
    return ModelObject(id=model_id, created=_STARTED)
