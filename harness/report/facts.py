"""What a report reads from the installed tasks rather than knowing it itself.

A task declares its own report facts (`harness.api.Task`: `report_title`, `report_order`,
`report_columns`; metric directions travel in the records, `neutral_settings` and `version` serve the
protocol comparison). A task that is not installed here (records made elsewhere, the paper's panoptic
rows) is reported by its name, after the installed ones. (The paper's dataset order is the data
registry's: `harness.data.PAPER_DATASET_ORDER`.)
"""

from __future__ import annotations

import functools

from harness.api import Task
from harness.api.registry import get_task


@functools.cache
def installed_task(name: str) -> Task | None:
    """The registered task `name`, or None when it is not installed here."""
    try:
        return get_task(name)
    except Exception:  # not installed, or its module does not import here: reported by name
        return None


def task_order(name: str) -> tuple[int, ...] | None:
    """The task's place in the paper (table number, position in it); None: unknown, after the known ones."""
    task = installed_task(name)
    return None if task is None or task.report_order is None else tuple(task.report_order)


def task_title(name: str) -> str | None:
    task = installed_task(name)
    return (task.report_title or None) if task is not None else None


def task_columns(name: str) -> tuple[str, ...]:
    """Metric-name parts (metric leaves) in the order of the task's columns in the paper."""
    task = installed_task(name)
    return tuple(task.report_columns) if task is not None else ()

