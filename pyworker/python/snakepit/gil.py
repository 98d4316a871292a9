"""Whether the GIL is really off, and who switched it on (standard library only).

A free-threaded CPython (3.13t and later) runs without the GIL until it
imports an extension module that has not declared it can run without it;
then it switches the GIL on for good and says so with a RuntimeWarning::

    The global interpreter lock (GIL) has been enabled to load module 'X',
    which has not declared that it can run safely without the GIL. ...

The worker watches for this on free-threaded builds: during the adapter
import, and afterwards during tool calls (a wrapper around
``warnings.showwarning`` picks out that one warning; every other warning
goes on to the previous handler unchanged). After the adapter import and
after each tool's first call it also asks ``sys._is_gil_enabled()``, in case
the warning never reached it. The first time the GIL is found on, the
worker records the module and when it happened ("adapter import", "first
call of tool NAME"), logs one WARNING that says how to fix it, and reports
both in health and stats (``gil_enabled_by``, ``gil_enabled_when``).
On other builds nothing is watched and both stay "".
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
import sysconfig
import threading
import warnings
from typing import Any, Dict, Iterator, Optional, Set

from snakepit.cancellation import current_call

logger = logging.getLogger("snakepit.gil")

#: Python's warning when an import switches the GIL on; group 1 is the module.
GIL_WARNING_RE = re.compile(
    r"The global interpreter lock \(GIL\) has been enabled to load module '([^']*)'")

ADAPTER_IMPORT = "adapter import"
INTERPRETER_START = "interpreter start"


def gil_enabled() -> bool:
    """Whether the GIL is on now (``sys._is_gil_enabled()``; True where absent)."""
    is_enabled = getattr(sys, "_is_gil_enabled", None)
    return bool(is_enabled()) if callable(is_enabled) else True


def free_threaded_build() -> bool:
    """Whether this interpreter was built with Py_GIL_DISABLED."""
    return bool(sysconfig.get_config_var("Py_GIL_DISABLED"))


def fix_advice(module: str) -> str:
    """What to do about a module that switched the GIL on."""
    who = f"module {module!r}" if module else "the module that enabled it"
    return (
        f"to keep the GIL off, {who} must declare that it runs safely without it "
        "(a Py_mod_gil slot set to Py_MOD_GIL_NOT_USED in multi-phase init, or "
        "PyUnstable_Module_SetGIL(module, Py_MOD_GIL_NOT_USED) in single-phase init; "
        "often a newer release of the package already does), or start the worker with "
        "PYTHON_GIL=0 (or -X gil=0) to keep the GIL off at your own risk"
    )


class _Watch:
    """Process-wide state (one adapter per worker process)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        #: Watching: a free-threaded build whose GIL is not known to be on.
        self.active = False
        self.hooked = False
        self.by = ""
        self.when = ""
        #: What the worker is doing outside tool calls ("adapter import", ...).
        self.phase = ""
        #: Tools whose first call ended.
        self.called: Set[str] = set()


_watch = _Watch()


def watching() -> bool:
    """True while a first tool call should be followed by after_first_call()."""
    return _watch.active


def enabled_by() -> str:
    """The module whose import switched the GIL on ("" if none or unknown)."""
    return _watch.by


def enabled_when() -> str:
    """When the worker noticed the GIL on ("" while it is off, or not a free-threaded build)."""
    return _watch.when


def report() -> Dict[str, Any]:
    """The GIL fields of HealthReply."""
    return {
        "gil_enabled": gil_enabled(),
        "gil_enabled_by": _watch.by,
        "gil_enabled_when": _watch.when,
        "free_threaded_build": free_threaded_build(),
    }


def start() -> None:
    """Begin watching (worker start, before the adapter import; main thread,
    after logging is set up). Nothing on a build with a GIL."""
    if not free_threaded_build() or _watch.active or _watch.when:
        return
    if gil_enabled():
        # PYTHON_GIL=1, -X gil=1, or a module imported before the worker (site).
        _note("", INTERPRETER_START)
        return
    _watch.active = True
    _install_hook()


def _install_hook() -> None:
    if _watch.hooked:
        return
    _watch.hooked = True
    # Shown every time, whatever the filters say (it comes once per process).
    warnings.filterwarnings(
        "always", message=r"The global interpreter lock \(GIL\) has been enabled",
        category=RuntimeWarning)
    previous = warnings.showwarning

    def showwarning(message: Any, category: Any, filename: str, lineno: int,
                    file: Any = None, line: Optional[str] = None) -> None:
        if isinstance(category, type) and issubclass(category, RuntimeWarning):
            match = GIL_WARNING_RE.search(str(message))
            if match is not None:
                _on_gil_warning(match.group(1))
                return  # replaced by the worker's own WARNING (with the fix)
        previous(message, category, filename, lineno, file, line)

    showwarning.__wrapped__ = previous  # type: ignore[attr-defined]
    warnings.showwarning = showwarning


def _on_gil_warning(module: str) -> None:
    call = current_call()
    if call is not None:
        first = call.tool not in _watch.called
        when = f"{'first call' if first else 'a call'} of tool {call.tool}"
    else:
        when = _watch.phase or "an import outside any tool call"
    _note(module, when)


@contextlib.contextmanager
def phase(when: str) -> Iterator[None]:
    """Attribute a GIL switched on inside the block to ``when`` (e.g. the
    adapter import), and check the GIL at its end."""
    _watch.phase = when
    try:
        yield
    finally:
        _watch.phase = ""
        if _watch.active and gil_enabled():
            _note("", when)


def after_first_call(tool: str) -> None:
    """A tool call ended: on the tool's first call, check the GIL (call only
    while watching())."""
    if tool in _watch.called:
        return
    _watch.called.add(tool)
    if gil_enabled():
        _note("", f"first call of tool {tool}")


def _note(module: str, when: str) -> None:
    with _watch.lock:
        if _watch.when:
            return
        _watch.active = False
        _watch.by = module
        _watch.when = when
    if when == INTERPRETER_START:
        logger.warning(
            "this free-threaded worker started with the GIL already enabled (PYTHON_GIL=1, "
            "-X gil=1, or a module imported at start-up): threads do not run Python code "
            "in parallel")
        return
    logger.warning(
        "the GIL was enabled by module %s (%s); this free-threaded worker now runs with "
        "the GIL, so its threads no longer run Python code in parallel. Fix: %s",
        module or "(unknown)", when, fix_advice(module))

