"""Benchmarks that say where Switchboard stands, each against the plain alternative.

`python -m bench` (`make bench`) runs them all — about 15 minutes on 2 cores — and
prints one table: benchmark, Switchboard, baseline, ratio, target, pass/fail. Each
also runs alone as `python -m bench.<name> [--quick]`. A full run writes its
results, with the date and core count, into docs/benchmarks.md; `--quick` runs are
smoke runs that write nothing.

- `overhead` (B1): a 6x10 task through Switchboard vs a plain asyncio runner.
- `recovery` (B2): SIGKILL the worker at random points; time to progress, model
  calls paid twice, identical final diff.
- `idle` (B3): 1,000 tasks parked at the approval gate; RSS, CPU, approve-all.
- `scale` (B4): 1, 2 and 4 worker processes; tasks per minute, fixed cost.
- `big_repo` (B5): worktrees and sandboxes on a ~50,000-file repository.
- `sandbox_start`: sandbox start and exec overhead per backend.
- `auth_cost`: what verifying the caller (static token, OIDC JWT) adds per HTTP request.
- `chat_latency`: the conversation's time to first token and event latency (its own
  section, "Conversation", written by that module).
"""

__all__ = ["BENCHMARKS"]

BENCHMARKS = (
    "overhead",
    "recovery",
    "idle",
    "scale",
    "big_repo",
    "sandbox_start",
    "auth_cost",
    "chat_latency",
)
"""Module names under `bench`, in the order `python -m bench` runs them."""
