"""Build gsplat's CUDA kernels once, ahead of the first run (``python -m text4d.render.gsplat_build``).

gsplat ships its CUDA sources and compiles them the first time ``gsplat.cuda._backend`` is
imported, into torch's extension cache (``$TORCH_EXTENSIONS_DIR``, else
``~/.cache/torch_extensions``). Left to itself that happens silently inside the first training
step: 1-2 minutes in which a new user sees nothing move. ``scripts/install.sh`` runs this module
on machines with an NVIDIA GPU so the build happens during the install, with a message, and every
later process loads the cached library in a second.
"""

from __future__ import annotations

import sys
import time

from text4d.errors import Text4DError
from text4d.extras import require as require_extra


def build_kernels() -> float:
    """Compile (or load the cached) gsplat CUDA extension; return the seconds it took.

    Raises:
        MissingExtra: gsplat is not installed.
        Text4DError: no CUDA toolkit (nvcc) to compile with, or the compiler failed.
    """
    require_extra("cuda")
    start = time.perf_counter()
    try:
        from gsplat.cuda import (
            _backend,  # compiles on its first import on a machine, loads the cache after
        )
    except (RuntimeError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise Text4DError(f"gsplat's CUDA kernels did not build ({first}); "
                          "VERBOSE=1 python -m text4d.render.gsplat_build shows the compiler output") from e
    if _backend._C is None:
        raise Text4DError("gsplat needs the CUDA toolkit (nvcc) to build its kernels once; install the toolkit matching "
                          "torch.version.cuda or set CUDA_HOME, then run python -m text4d.render.gsplat_build")
    return time.perf_counter() - start


def main() -> None:
    try:
        seconds = build_kernels()
    except Text4DError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"gsplat's CUDA kernels are ready ({seconds:.0f} s); text4d's first GPU step will not compile them")


if __name__ == "__main__":
    main()
