"""What a chat frontend's request means, before it reaches a session: which model it
names, whether it is the frontend's own housekeeping, and which conversation it is.

Pure functions over the request's text (no I/O), shared by the OpenAI-compatible
routes (chat completions and responses).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Final

__all__ = [
    "DEFAULT_BACKGROUND_MARKERS",
    "PUBLIC_MODEL",
    "conversation_key",
    "is_background",
    "repo_from_words",
    "repositories_for",
]

PUBLIC_MODEL: Final = "switchboard"
"""The model id every client sees: the conversation that can delegate tasks."""

DEFAULT_BACKGROUND_MARKERS: Final = (
    # Open WebUI's task templates (title, tags, follow-ups, autocomplete, queries,
    # emoji, image prompt) all start with this heading and quote the chat history.
    "### Task:",
    "<chat_history>",
    # LibreChat's and LobeChat's title prompts.
    "Please generate a concise, 5-word-or-less title",
    "Summarize the conversation as a title",
    # Continue's and other IDE panels' session titles.
    "Given the following conversation, generate a short title",
)
"""Markers of a frontend's own requests; `Settings.background_markers` replaces them."""

CONVERSATION_FIELDS: Final = ("chat_id", "conversation_id", "session_id", "thread_id")
"""Fields (in the body or its `metadata`) a frontend may name its conversation with."""


def is_background(messages: Sequence[tuple[str, str]], markers: Sequence[str]) -> bool:
    """Whether a request is a frontend's housekeeping (title, tags, ...): its last user
    message, or a system/developer message, holds one of `markers`.

    Such a request quotes the conversation inside a template; answering it in the
    session would take the quote as the user's words.
    """
    last_user = next((text for role, text in reversed(messages) if role == "user"), "")
    texts = [last_user, *(text for role, text in messages if role in ("system", "developer"))]
    return any(marker and marker in text for text in texts for marker in markers)


def conversation_key(
    *,
    user_field: str | None,
    ids: Mapping[str, object],
    first_user_message: str,
) -> str:
    """The session key of a frontend conversation (one session per user and key).

    The frontend's own conversation id where it sends one (`chat_id`, `metadata`
    ...), else the `user` field (a client that keeps one conversation per user),
    else the conversation's first user message: a frontend that replays the
    whole history each turn sends the same first message every turn. Two
    conversations that open with the same words share a session that way; a
    frontend that sends an id never does.
    """
    for name in CONVERSATION_FIELDS:
        value = ids.get(name)
        if isinstance(value, str | int) and str(value).strip():
            return f"openai:{user_field or '-'}:{name}:{str(value)[:200]}"
    if user_field:
        return f"openai:{user_field}"
    digest = hashlib.sha256(first_user_message.encode()).hexdigest()[:32]
    return f"openai:first:{digest}"


def repositories_for(configured: Mapping[str, str], owner: str) -> dict[str, str]:
    """The short names `owner` may use, from `Settings.repositories`.

    A key is a bare short name (everyone), `<tenant>/<name>` (that tenant's callers)
    or `<owner key>/<name>` (one user: `<tenant>/<subject>/<name>`, or in local mode
    `<name of the user>/<name>`). Where one name is configured at several scopes, the
    user's wins over the tenant's over everyone's; another tenant's or user's names
    are not there at all, so words cannot reach them.
    """
    tenant = owner.split("/", 1)[0]
    rank = {"": 0, tenant: 1, owner: 2}
    chosen: dict[str, tuple[int, str]] = {}
    for key, target in configured.items():
        scope, _, name = key.rpartition("/")
        level = rank.get(scope)
        if level is None or not name:
            continue
        if name not in chosen or chosen[name][0] < level:
            chosen[name] = (level, target)
    return {name: target for name, (_, target) in sorted(chosen.items())}


_SHORT_NAME = re.compile(r"[\w.-]+")
_URL = re.compile(r"(?:https?://|ssh://|git@)[^\s'\"<>]+")
_PATH = re.compile(r"(?<![\w.:/@~-])/(?:[\w.+-]+/)*[\w.+-]+")


def _named(named: str, repositories: Mapping[str, str]) -> tuple[str | None, str]:
    if named in repositories:
        return repositories[named], ""
    if _SHORT_NAME.fullmatch(named) and named not in (".", ".."):
        known = ", ".join(sorted(repositories)) or "none configured for you"
        return None, (
            f"no repository called {named!r} is yours to use; name one of: {known}, "
            "or give a git URL or a path"
        )
    return named, ""


def repo_from_words(
    named: str | None, session_repo: str | None, goal: str, repositories: Mapping[str, str]
) -> tuple[str | None, str]:
    """The repository a delegation means, or a question to ask back.

    `repositories` are the caller's short names (`repositories_for`). In order: the
    repository the call names (a short name maps to its URL or path; a short name
    not among them asks back), the session's, then what the goal's words name: a configured
    short name ("in payments-service"), a git URL, an absolute path. Paths and
    URLs are checked against the allowed roots when the task starts.

    Returns:
        `(repo, "")`, or `(None, question)` when none or several are named.
    """
    if named:
        return _named(named, repositories)
    if session_repo:
        return session_repo, ""
    found = [
        url
        for name, url in repositories.items()
        if re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", goal, re.IGNORECASE)
    ]
    found += _URL.findall(goal) + _PATH.findall(goal)
    chosen = list(dict.fromkeys(found))
    if len(chosen) == 1:
        return chosen[0], ""
    known = ", ".join(sorted(repositories)) or "none configured"
    if chosen:
        return None, f"which repository: {' or '.join(chosen)}? Say which one"
    return None, (f"which repository? Name one (configured: {known}), or give a git URL or a path")
