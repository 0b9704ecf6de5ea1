"""Built-in task adapters, one file each. They register through the `harness.tasks` entry-point group."""
