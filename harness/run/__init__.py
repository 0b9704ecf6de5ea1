"""Running tasks: one task on one checkpoint (runner), suites of them."""
