"""An HMAC over an identity claim, so a caller with Temporal access but without the
key cannot forge one (`SWITCHBOARD_CLAIM_KEY`, shared by the API and the workers).

The signature binds the claim to one task, one update name and one update id: a
signature read from a task's history validates only the update it came with, which
Temporal has already applied (a second update with that id gets the first's result).
"""

from __future__ import annotations

import hashlib
import hmac

from switchboard.identity import Identity

__all__ = ["sign_claim", "steer_signing_id", "verify_claim"]


def _message(workflow_id: str, update_id: str, update: str, actor: Identity) -> bytes:
    fields = [
        workflow_id,
        update_id,
        update,
        actor.subject,
        actor.tenant,
        ",".join(sorted(actor.roles)),
        actor.via,
        actor.name,
    ]
    return "\n".join(fields).encode()


def sign_claim(key: bytes, workflow_id: str, update_id: str, update: str, actor: Identity) -> str:
    """The hex HMAC-SHA256 of the claim for this update."""
    message = _message(workflow_id, update_id, update, actor)
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def verify_claim(
    key: bytes,
    workflow_id: str,
    update_id: str,
    update: str,
    actor: Identity,
    signature: str | None,
) -> bool:
    """The signature is the key's over this claim for this update (constant time)."""
    if not signature:
        return False
    expected = sign_claim(key, workflow_id, update_id, update, actor)
    return hmac.compare_digest(expected, signature)


def steer_signing_id(steer_id: str, guidance: str) -> str:
    """What a steer's signature binds in place of an update id: its steer id (the task
    applies each once, so a signature read from history steers nothing new) and a digest
    of its guidance (so the signed words cannot be swapped)."""
    digest = hashlib.sha256(guidance.encode()).hexdigest()[:32]
    return f"{steer_id}:{digest}"
