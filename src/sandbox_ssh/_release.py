"""Releases that may be called more than once but act once."""

from __future__ import annotations

from collections.abc import Callable


def once(action: Callable[[], None]) -> Callable[[], None]:
    """``action`` as a release: the first call runs it, later calls do nothing."""
    done = False

    def release() -> None:
        nonlocal done
        if not done:
            done = True
            action()

    return release
