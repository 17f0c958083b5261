"""The processes of Switchboard, and the one place that assembles them.

Each module here starts or drives a process: the `switchboard` command (`cli`,
with its task commands, terminal chat and renderers), the worker assembly
(`worker`: every workflow and activity registered in one place), the API server
launch (`cli api`), the stack supervisor (`stack`, behind `switchboard up`), the
demo (`demo`, with its scripted conversation), the environment check (`doctor`)
and the Temporal dev-server launcher (`devserver`); `api_client` is the HTTP
client of the API that the terminal chat and the demo use.

This is the composition root: it may import every layer (`api`, `chat_gateway`,
`workflows`, `activities`, `switchboard`), and no product package imports it
(the import contract in pyproject.toml holds both). Nothing is re-exported, so
importing one process never imports the others: `python -m entrypoints` is the
`switchboard` command.
"""

__all__: list[str] = []
