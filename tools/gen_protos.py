"""Generate the Python code for protos/a2c/v1/*.proto into a2c/v1/ (never edit those files by hand).

    python tools/gen_protos.py           # regenerate
    python tools/gen_protos.py --check   # exit 1 if a2c/v1/ is out of date with the .proto files
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
OUT = ROOT / "a2c" / "v1"
INIT = '"""Generated from protos/a2c/v1/*.proto by tools/gen_protos.py: do not edit."""\n'


def generate(dest: Path) -> None:
    """Run protoc (grpcio-tools) for every .proto into dest/a2c/v1/."""
    from grpc_tools import protoc  # dev dependency only

    files = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.glob("a2c/v1/*.proto"))
    include = str(Path(protoc.__file__).parent / "_proto")
    args = ["protoc", f"-I{PROTOS}", f"-I{include}", f"--python_out={dest}", f"--pyi_out={dest}",
            f"--grpc_python_out={dest}", *files]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    (dest / "a2c" / "v1" / "__init__.py").write_text(INIT)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        fresh = Path(tmp) / "a2c" / "v1"
        names = sorted(p.name for p in fresh.iterdir() if p.is_file())
        if args.check:
            current = sorted(p.name for p in OUT.iterdir() if p.is_file()) if OUT.exists() else []
            stale = [n for n in names if not (OUT / n).exists() or not filecmp.cmp(fresh / n, OUT / n, shallow=False)]
            extra = [n for n in current if n not in names]
            if stale or extra:
                print(f"a2c/v1 is out of date with protos/: regenerate with python tools/gen_protos.py "
                      f"(differs: {stale}, not generated: {extra})", file=sys.stderr)
                return 1
            print("a2c/v1 matches protos/")
            return 0
        if OUT.exists():
            shutil.rmtree(OUT)
        shutil.copytree(fresh, OUT)
        print(f"wrote {len(names)} files to {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
