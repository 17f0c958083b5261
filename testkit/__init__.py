"""What the tests and the benchmarks share: real repositories, free ports, the real
servers they run against, and waiting on a task through its status query.

Neither `tests/` nor `bench/` is imported by the other for these: both import
`testkit` (tests may still import `bench`, which they test). Not a product
package: it is not shipped in the wheel, and no product package imports it.
"""

from testkit.http import serving
from testkit.repos import git, make_repo
from testkit.servers import (
    DevServerOnPort,
    dev_server,
    free_port,
    model_pid,
    model_process,
    start_temporal_environment,
    wait_port,
)
from testkit.tasks import history_event_types, status_of, wait_for, wait_for_phase

__all__ = [
    "DevServerOnPort",
    "dev_server",
    "free_port",
    "git",
    "history_event_types",
    "make_repo",
    "model_pid",
    "model_process",
    "serving",
    "start_temporal_environment",
    "status_of",
    "wait_for",
    "wait_for_phase",
    "wait_port",
]
