"""The web chat page at `/` and its static files (plain HTML/JS/CSS, no build step).

Files are read from the installed `chat_gateway/static` package data, once per
process; only names in that folder are served.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from fastapi import APIRouter, HTTPException, Response, status

__all__ = ["router"]

router = APIRouter(tags=["web"])

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
}


@cache
def _files() -> dict[str, bytes]:
    folder = resources.files("chat_gateway").joinpath("static")
    return {
        item.name: item.read_bytes()
        for item in folder.iterdir()
        if item.is_file() and any(item.name.endswith(suffix) for suffix in _TYPES)
    }


def _serve(name: str) -> Response:
    body = _files().get(name)
    if body is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no static file {name!r}")
    media_type = next(t for suffix, t in _TYPES.items() if name.endswith(suffix))
    return Response(body, media_type=media_type, headers={"Cache-Control": "no-cache"})


@router.get("/", include_in_schema=False)
async def chat_page() -> Response:
    """The chat: messages with streamed tokens, live tasks, diffs and decisions."""
    return _serve("index.html")


@router.get("/static/{name}", include_in_schema=False)
async def static_file(name: str) -> Response:
    return _serve(name)
