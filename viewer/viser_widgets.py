"""Small helpers for viser widgets that both the studio and its Motion folder use."""

from __future__ import annotations

from collections.abc import Callable

import viser


def on_click(button: viser.GuiButtonHandle, action: Callable[[], object]) -> None:
    """Run ``action`` on every click; what it returns (a command's future) is not waited for."""

    def clicked(_: viser.GuiEvent) -> None:
        action()

    button.on_click(clicked)
