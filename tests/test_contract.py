"""The task contract over every registered task (as timm tests every model of its registry): the defaults
and each preset make a valid config, and a tiny proxy run returns exactly the metrics the task declares and
writes its samples file, from which `harness rescore` recomputes every metric to the record's value exactly.
Also how the tasks are packaged: the built-ins install as `harness.tasks`, beside other packages' tasks.
"""

import sys
import textwrap
from pathlib import Path

import pytest

from harness import api
from harness.api import registry
from harness.eval.samples import SUFFIX, read_record_samples, rescore
from harness.run.runner import run_task
from tests.tiny import TINY_RUNS

ROOT = Path(__file__).resolve().parents[1]
TASKS = registry.list_tasks()


def test_the_built_in_tasks_are_registered():
    assert set(TINY_RUNS) <= set(TASKS)


@pytest.mark.parametrize("name", TASKS)
def test_defaults_and_every_preset_make_a_config(name):
    task = registry.get_task(name)
    for preset in (None, *task.presets):
        config = api.make_config(task, preset)
        names = [m.name for m in task.metrics(config)]
        assert names and len(set(names)) == len(names), (preset, names)


@pytest.mark.parametrize("name", TASKS)
def test_a_tiny_run_returns_exactly_the_declared_metrics(name, task_env):
    assert name in TINY_RUNS, f"task {name!r}: add its fastest proxy_scenes/tiny run to TINY_RUNS in tests/tiny.py"
    preset, sets = TINY_RUNS[name]
    task = registry.get_task(name)
    declared = {m.name for m in task.metrics(api.make_config(task, preset, sets))}
    rec, path, reused = run_task(name, task_env["ckpt"], preset=preset, sets=sets, data_dir=task_env["data_dir"],
                              out_dir=task_env["out"], cache_dir=task_env["cache_dir"], progress=False)
    assert not reused
    # A record's metrics are the keys run() returned.
    assert set(rec["metrics"]) == declared
    # Every task writes its samples file, and every metric computed from it with today's metric code is its
    # record's value exactly (a training loss, not a function of examples, is kept as recorded).
    samples = read_record_samples({**rec, "_path": str(path)})
    assert rec["samples"]["path"] == path.stem + SUFFIX and rec["samples"]["num_lines"] == len(samples.lines) > 0
    assert set(samples.metrics) == declared - {"lit_zeroshot/train/final_loss"}
    assert rescore(samples) == {m: rec["metrics"][m]["value"] for m in samples.metrics}


# ---------------------------------------------------------------------------------------------- packaging
FOREIGN_TASK = '''
import dataclasses

from harness.api import Metric, Task


@dataclasses.dataclass
class Config:
    value: float = 1.0


class Constant(Task):
    name = "constant"
    description = "a third-party task"
    Config = Config

    def metrics(self, config):
        return [Metric("constant/value", unit="raw")]

    def run(self, encoder, data, config):
        return {"constant/value": config.value}
'''


@pytest.fixture()
def foreign_tasks_package(tmp_path, monkeypatch):
    """A separately installed distribution whose top-level package is itself named `tasks` (the name the
    built-ins used to install under), declaring a task through the same entry-point group."""
    site = tmp_path / "site"
    (site / "tasks").mkdir(parents=True)
    (site / "tasks" / "__init__.py").write_text("")
    (site / "tasks" / "constant.py").write_text(textwrap.dedent(FOREIGN_TASK))
    info = site / "foreign_tasks-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: foreign-tasks\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[harness.tasks]\nconstant = tasks.constant:Constant\n")
    for mod in [m for m in sys.modules if m == "tasks" or m.startswith("tasks.")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.syspath_prepend(str(site))
    yield site
    for mod in [m for m in sys.modules if m == "tasks" or m.startswith("tasks.")]:
        del sys.modules[mod]


def test_a_third_party_task_package_registers_beside_the_built_ins(foreign_tasks_package):
    assert set(registry.list_tasks()) == {*TASKS, "constant"}
    foreign = registry.get_task("constant")
    assert type(foreign).__module__ == "tasks.constant"
    assert Path(sys.modules["tasks.constant"].__file__).is_relative_to(foreign_tasks_package)
    for name in TINY_RUNS:
        assert type(registry.get_task(name)).__module__ == f"harness.tasks.{name}"


def test_the_built_in_tasks_install_as_harness_tasks():
    from importlib.metadata import distribution

    eps = [ep for ep in distribution("sovit-harness").entry_points if ep.group == registry.GROUP]
    assert {ep.name for ep in eps} == set(TINY_RUNS)
    assert all(ep.value.startswith(f"harness.tasks.{ep.name}:") for ep in eps), [ep.value for ep in eps]
    import harness.tasks

    assert Path(harness.tasks.__file__).parent == ROOT / "tasks"


def test_the_package_list_is_the_tree():
    """pyproject.toml lists the packages itself (setuptools' `find` cannot map tasks/ to harness.tasks):
    a new subpackage must be added there, or the wheel would ship without it."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib

    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert conf["package-dir"] == {"harness.tasks": "tasks"}
    tree = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "harness").rglob("*")
            if p.is_file() and "__pycache__" not in p.parts}
    assert set(conf["packages"]) == tree | {"harness.tasks"}


# ------------------------------------------------------------------------------------------------ layers
# The layers of docs/architecture.md, bottom up: a module imports from its own package or from a lower
# layer, never from one beside or above it (function-local imports included).
LAYERS = [("harness", "harness.errors", "harness.tf_import"), ("harness.files", "harness.progress", "harness.schema"),
          ("harness.checkpoints", "harness.scale", "harness.data"),
          ("harness.models", "harness.settings"), ("harness.eval",), ("harness.train",), ("harness.api",),
          ("harness.tasks",),
          ("harness.report",), ("harness.run",), ("harness.shape", "harness.tools"), ("harness.cli",)]
# `harness.load_encoder` is the package's one lazy convenience import upwards.
ALLOWED_UP = {("harness", "harness.models.encoder")}


def _modules() -> dict[str, Path]:
    out = {}
    for path in [*(ROOT / "harness").rglob("*.py"), *(ROOT / "tasks").glob("*.py")]:
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        parts = ["harness", *parts] if parts[0] == "tasks" else parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The harness modules `name` imports anywhere in its body (`from p import m` of a submodule counts as
    importing m; a package's own __init__, which Python runs first anyway, is not counted)."""
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            subs = [f"{node.module}.{a.name}" for a in node.names]
            targets = [s for s in subs if s in modules] or [node.module]
        else:
            continue
        for t in targets:
            while t and t not in modules:
                t = t.rpartition(".")[0]
            if t and t != name and not name.startswith(t + "."):
                found.add(t)
    return found


def _layer(name: str) -> tuple[int, str]:
    for level, packages in enumerate(LAYERS):
        for package in packages:
            if name == package or (package != "harness" and name.startswith(package + ".")):
                return level, package
    raise AssertionError(f"{name} is in no layer of LAYERS (docs/architecture.md)")


def test_imports_point_down_and_form_no_cycle():
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    wrong = [f"{a} -> {b}" for a, targets in graph.items() for b in targets
             if (a, b) not in ALLOWED_UP and _layer(b) != _layer(a) and _layer(b)[0] >= _layer(a)[0]]
    assert not wrong, wrong
    # No cycle inside a layer either (between layers there is none once every import points down).
    state: dict[str, int] = {}

    def visit(node, path):
        state[node] = 1
        for nxt in graph[node]:
            if (node, nxt) in ALLOWED_UP:
                continue
            assert state.get(nxt) != 1, " -> ".join([*path[path.index(nxt):], nxt])
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [node])
