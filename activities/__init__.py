"""Side effects: git, sandboxes, model calls, tools."""

__all__: list[str] = []
