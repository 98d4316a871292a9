"""An adapter whose import fails, like one with a missing dependency."""

import not_installed_dependency_xyz  # noqa: F401

import snakepit


@snakepit.tool
def never() -> None:
    """Never reachable."""
