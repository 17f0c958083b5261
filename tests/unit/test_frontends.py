"""The pure rules of `switchboard.frontends`: which repository a delegation's words
name, which conversation a frontend request belongs to, what is a background request."""

from __future__ import annotations

from switchboard.frontends import (
    DEFAULT_BACKGROUND_MARKERS,
    conversation_key,
    is_background,
    repo_from_words,
    repositories_for,
)

KNOWN = {"payments-service": "https://git.example/pay.git", "web": "/srv/repos/web"}


def test_a_repository_is_taken_from_the_call_the_session_or_the_words() -> None:
    assert repo_from_words("web", None, "x", KNOWN) == ("/srv/repos/web", "")
    assert repo_from_words("/elsewhere", None, "x", KNOWN) == ("/elsewhere", "")
    assert repo_from_words(None, "/session/repo", "in web", KNOWN) == ("/session/repo", "")
    assert repo_from_words(None, None, "fix the retry in Payments-Service", KNOWN) == (
        "https://git.example/pay.git",
        "",
    )
    url = "https://github.com/acme/tool.git"
    assert repo_from_words(None, None, f"bump deps in {url} please", KNOWN) == (url, "")
    assert repo_from_words(None, None, "tidy /srv/repos/api now", KNOWN) == ("/srv/repos/api", "")


def test_none_or_several_repositories_ask_back() -> None:
    repo, question = repo_from_words(None, None, "add a slugify helper", KNOWN)
    assert repo is None and "payments-service, web" in question
    repo, question = repo_from_words(None, None, "sync web with payments-service", KNOWN)
    assert repo is None and "/srv/repos/web" in question and " or " in question
    # A word that merely contains a short name is not it.
    repo, _ = repo_from_words(None, None, "add a webhook handler", KNOWN)
    assert repo is None


def test_a_conversation_key_prefers_the_frontends_id_then_user_then_first_message() -> None:
    by_id = conversation_key(user_field="u", ids={"chat_id": "c1"}, first_user_message="hi")
    assert by_id == conversation_key(user_field="u", ids={"chat_id": "c1"}, first_user_message="yo")
    assert conversation_key(user_field="u", ids={}, first_user_message="hi") == "openai:u"
    first = conversation_key(user_field=None, ids={}, first_user_message="hi")
    assert first == conversation_key(user_field=None, ids={"other": 1}, first_user_message="hi")
    assert first != conversation_key(user_field=None, ids={}, first_user_message="hello")


def test_background_requests_are_recognised_by_their_markers() -> None:
    markers = list(DEFAULT_BACKGROUND_MARKERS)
    title = "### Task:\nGenerate a concise title\n<chat_history>...</chat_history>"
    assert is_background([("user", title)], markers)
    system = ("system", "Summarize the conversation as a title")
    assert is_background([system, ("user", "x")], markers)
    assert not is_background([("user", "delegate: add a slugify helper")], markers)
    # Only the message being answered counts: a quote of an earlier one does not.
    assert not is_background([("user", title), ("assistant", "t"), ("user", "hi")], markers)
    assert not is_background([("user", title)], [])


def test_repositories_are_scoped_per_tenant_and_user() -> None:
    configured = {
        "docs": "/srv/repos/docs",
        "acme/api": "https://git.acme/api.git",
        "acme/ann/api": "/home/ann/api",
        "acme/payments": "https://git.acme/pay.git",
        "globex/payments": "https://git.globex/pay.git",
        "fran/scratch": "/home/fran/scratch",
    }
    assert repositories_for(configured, "acme/ann") == {
        "api": "/home/ann/api",
        "docs": "/srv/repos/docs",
        "payments": "https://git.acme/pay.git",
    }
    assert repositories_for(configured, "acme/bo")["api"] == "https://git.acme/api.git"
    assert repositories_for(configured, "globex/cy") == {
        "docs": "/srv/repos/docs",
        "payments": "https://git.globex/pay.git",
    }
    # Local mode: a bare name is its own tenant.
    assert repositories_for(configured, "fran")["scratch"] == "/home/fran/scratch"

    # Words reach only the caller's names: another tenant's ask back, never resolve.
    cy = repositories_for(configured, "globex/cy")
    assert repo_from_words(None, None, "fix payments", cy) == ("https://git.globex/pay.git", "")
    repo, question = repo_from_words(None, None, "fix the api", cy)
    assert repo is None and "docs, payments" in question and "acme" not in question
    repo, question = repo_from_words("api", None, "fix it", cy)
    assert repo is None and "no repository called 'api'" in question and "acme" not in question
    assert repo_from_words("/srv/x", None, "fix it", cy) == ("/srv/x", "")
