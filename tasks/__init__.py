"""Built-in task adapters, one file each. The folder installs as `harness.tasks` (pyproject.toml maps it
into the harness's namespace; there is no top-level `tasks` package), and each adapter registers through
the `harness.tasks` entry-point group, like a third-party task."""
