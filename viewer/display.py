"""Can a desktop window open here? Asked before training starts, without importing a GUI toolkit.

DearPyGui (GLFW) on Linux needs an X server (Wayland sessions provide one via
XWayland). Without one, GLFW fails deep inside ``create_viewport`` with an
opaque message (or aborts), after the run folder and the stage were built; so
``--ui dpg`` checks first and names the alternatives.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

from text4d.errors import Text4DError

ALTERNATIVES = "use --ui viser (the web studio, open its URL in any browser) or --ui none (headless)"


def display_problem() -> str | None:
    """Why no desktop window can open here, or None when one can (always None off Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    name = os.environ.get("DISPLAY", "")
    if not name:
        return "no display: $DISPLAY is not set (an SSH session, a container or a server?)"
    lib = ctypes.util.find_library("X11")
    if lib is None:  # cannot probe; let GLFW try and report
        return None
    x11 = ctypes.CDLL(lib)
    x11.XOpenDisplay.restype = ctypes.c_void_p
    x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
    handle = x11.XOpenDisplay(name.encode())
    if not handle:
        return f"cannot open display {name!r} (no X server there, or no permission)"
    x11.XCloseDisplay.argtypes = [ctypes.c_void_p]
    x11.XCloseDisplay(handle)
    return None


def require_display() -> None:
    """Raise a one-line :class:`Text4DError` naming the alternatives when no window can open."""
    problem = display_problem()
    if problem is not None:
        raise Text4DError(f"the desktop viewer cannot start: {problem}; {ALTERNATIVES}")
