"""Make ``import torchvision`` work beside the CPU build of torch.

The torchvision wheels reachable here are CUDA builds whose compiled ops do not load next to CPU
torch; ``torchvision/_meta_registrations.py`` then registers fake kernels for ``torchvision::nms``
and ``torchvision::qnms`` unconditionally and crashes with ``operator torchvision::nms does not
exist`` (which also breaks ``import nerfstudio``). This idempotent step makes those two
registrations conditional on the ops being present. Run by ``make setup`` after ``pip install``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

MARK = "# loopdrive: conditional on compiled ops"


def main() -> int:
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        print("torchvision not installed; nothing to fix")
        return 0
    path = Path(spec.origin).parent / "_meta_registrations.py"
    src = path.read_text()
    if MARK in src:
        print(f"torchvision already fixed: {path}")
        return 0
    lines = src.splitlines(keepends=True)
    out: list[str] = []
    changed = 0
    for line in lines:
        stripped = line.lstrip()
        if stripped.startswith('@torch.library.register_fake("torchvision::nms")') or stripped.startswith(
            '@torch.library.register_fake("torchvision::qnms")'
        ):
            indent = line[: len(line) - len(stripped)]
            op = "nms" if '"torchvision::nms"' in stripped else "qnms"
            out.append(
                f"{indent}@(torch.library.register_fake(\"torchvision::{op}\") "
                f"if hasattr(torch.ops.torchvision, \"{op}\") else (lambda f: f))  {MARK}\n"
            )
            changed += 1
        else:
            out.append(line)
    if changed == 0:
        print(f"torchvision: no unconditional nms registration found in {path}; leaving it")
        return 0
    path.write_text("".join(out))
    print(f"torchvision fixed ({changed} registrations made conditional): {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
