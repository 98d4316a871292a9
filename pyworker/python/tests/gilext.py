"""Build the GIL-enabling test extension (testdata/pyadapters/gil_ext/gilmod.c)
for a given interpreter.

``build_gil_extension(python, directory)`` compiles ``gilmod`` with the C
compiler (``$CC``, else ``cc``, else ``gcc``) against ``python``'s headers and
returns the directory to put on PYTHONPATH; None when there is no compiler
or the interpreter has no headers (callers skip). Importing the module into a
free-threaded interpreter switches its GIL on.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Dict, Optional

from helpers import REPO_ROOT

GIL_EXT_SOURCE = REPO_ROOT / "testdata" / "pyadapters" / "gil_ext" / "gilmod.c"
MODULE = "gilmod"


def c_compiler() -> Optional[str]:
    for candidate in (os.environ.get("CC", ""), "cc", "gcc"):
        if candidate and shutil.which(candidate):
            return shutil.which(candidate)
    return None


def interpreter_build(python: str) -> Dict[str, object]:
    """include dir, EXT_SUFFIX and whether ``python`` is a free-threaded build."""
    code = ("import json, sysconfig; print(json.dumps({'include': sysconfig.get_paths()['include'], "
            "'suffix': sysconfig.get_config_var('EXT_SUFFIX'), "
            "'free_threaded': bool(sysconfig.get_config_var('Py_GIL_DISABLED'))}))")
    out = subprocess.run([python, "-c", code], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def build_gil_extension(python: str, directory: Path, source: Path = GIL_EXT_SOURCE) -> Optional[Path]:
    """Compile ``gilmod`` for ``python`` into ``directory``; that directory,
    or None without a compiler or Python headers."""
    compiler = c_compiler()
    if compiler is None:
        return None
    build = interpreter_build(python)
    include = str(build["include"])
    if not os.path.exists(os.path.join(include, "Python.h")):
        return None
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"{MODULE}{build['suffix']}"
    subprocess.run(
        [compiler, "-shared", "-fPIC", "-O0", f"-I{include}", str(source), "-o", str(target)],
        check=True, capture_output=True, text=True,
    )
    return directory
