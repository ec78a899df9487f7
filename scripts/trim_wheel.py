"""Copy a wheel without the shared libraries a machine will not load (bitsandbytes ships one per CUDA version: 129 MB
unpacked, of which the CUDA 13 ones are 8 MB), so that it fits what travels to a GPU machine.

    python3 scripts/trim_wheel.py WHEEL OUTDIR KEEP_REGEX
Members named ``lib<package>_*`` whose file name does not match KEEP_REGEX are left out, and so are their RECORD lines.
"""

from __future__ import annotations

import re
import sys
import zipfile
from pathlib import Path


def trim(wheel: Path, out_dir: Path, keep: str) -> Path:
    package = wheel.name.split("-")[0]
    dropped = re.compile(rf"(^|/)lib{re.escape(package)}_")

    def wanted(name: str) -> bool:
        return not dropped.search(name) or re.search(keep, name) is not None

    target = out_dir / wheel.name
    with zipfile.ZipFile(wheel) as source, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as copy:
        for info in source.infolist():
            if not wanted(info.filename):
                continue
            data = source.read(info)
            if info.filename.endswith(".dist-info/RECORD"):
                lines = data.decode().splitlines()
                data = "\n".join(line for line in lines if wanted(line.split(",")[0])).encode() + b"\n"
            copy.writestr(info, data)
    return target


if __name__ == "__main__":
    path = trim(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3])
    print(f"{path.name}: {path.stat().st_size / 1e6:.1f} MB")
