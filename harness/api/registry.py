"""The task registry: tasks are discovered through the entry-point group `harness.tasks`.

The built-in adapters in `tasks/` register that way (pyproject.toml), so a separate package adds a task by
declaring `[project.entry-points."harness.tasks"] mytask = "mypkg.mytask:MyTask"`, without touching this
repository. Entry points are loaded lazily: listing tasks imports nothing heavy.
"""

from __future__ import annotations

import fnmatch
from importlib.metadata import EntryPoint, entry_points

from harness.api import Task
from harness.errors import HarnessError, did_you_mean

GROUP = "harness.tasks"


def _entry_points() -> dict[str, EntryPoint]:
    eps = {}
    for ep in entry_points(group=GROUP):
        eps.setdefault(ep.name, ep)  # first wins, like importlib's own resolution order
    return eps


def list_tasks(pattern: str = "*") -> list[str]:
    return sorted(n for n in _entry_points() if fnmatch.fnmatchcase(n, pattern))


def get_task(name: str) -> Task:
    eps = _entry_points()
    if name not in eps:
        hint = did_you_mean(name, eps, cutoff=0.5)
        known = ", ".join(sorted(eps)) or "none: is sovit-harness installed (pip install -e .)?"
        raise HarnessError(f"unknown task {name!r}{hint}; known tasks: {known}")
    cls = eps[name].load()
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise HarnessError(f"entry point {name!r} ({eps[name].value}) is not a harness.api.Task subclass")
    task = cls()
    if task.name != name:
        raise HarnessError(f"entry point {name!r} loads a task named {task.name!r}; the names must agree")
    return task
