"""``sluice-py-build APP [-o OUT] [--wit DIR]``: builds a connector app into a component.

Runs componentize-py (installed with this package) on the app module with the WIT world shipped
in ``sluice_sdk/wit/`` (or ``--wit``): componentize-py generates the world's bindings
(``wit_world``) for the app and this SDK, and bundles both with CPython into one component.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

WORLD = "connector-plugin"


def wit_dir() -> Path:
    """The WIT world this SDK release targets."""
    return Path(__file__).resolve().parent / "wit"


def componentize_py() -> str:
    """componentize-py next to this interpreter (the same venv), else from PATH."""
    local = Path(sys.executable).parent / "componentize-py"
    if local.exists():
        return str(local)
    found = shutil.which("componentize-py")
    if not found:
        sys.exit("componentize-py not found: pip install sluice-sdk installs it")
    return found


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="sluice-py-build", description=__doc__.splitlines()[0])
    p.add_argument("app", help="the app: a module name (app) or file (app.py) defining Connector")
    p.add_argument("-o", "--output", default=None, help="the component to write (default: APP.wasm)")
    p.add_argument("--wit", default=None, help="a WIT directory to build against instead of the packaged one")
    args = p.parse_args(argv)

    app = Path(args.app)
    app_dir = app.parent if app.suffix == ".py" else Path(".")
    module = app.stem if app.suffix == ".py" else args.app
    out = Path(args.output or f"{module}.wasm").resolve()
    sdk_parent = Path(__file__).resolve().parent.parent
    tmp = out.with_name(out.name + ".tmp")
    cmd = [
        componentize_py(),
        "-d", str(Path(args.wit).resolve() if args.wit else wit_dir()),
        "-w", WORLD,
        "componentize", module,
        "-p", str(app_dir.resolve()),
        "-p", str(sdk_parent),
        "-o", str(tmp),
    ]
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    done = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL)
    if done.returncode != 0:
        tmp.unlink(missing_ok=True)
        return done.returncode
    tmp.replace(out)
    print(f"{out} ({out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
