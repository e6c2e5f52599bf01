"""`make package`: the SAM template and code package in build/sam, with compiled bytecode.

Why not plain `chalice package` on the working tree: chalice zips chalicelib/ as it finds it
(with whatever stale __pycache__ the tree holds) and the dependencies as pip installs them,
without bytecode. Lambda cannot write bytecode (/var/task is read-only), so every cold start
would compile app.py's whole import graph again: measured on this package, importing app took
~800 ms from sources against ~300 ms with bytecode. So the project is copied to build/src
without caches, chalice packages the copy, and every .py in deployment.zip then gets its .pyc,
compiled with ``--invalidation-mode unchecked-hash`` (valid whatever file times the zip keeps;
nothing in a deployed package is ever edited). The bytecode, and the wheels chalice downloads
(for its local Python's version), are for the Python that builds: so it must be the runtime the
template pins (``infra.generate.RUNTIME``), and ``main`` refuses any other.

Run: .venv/bin/python -m tools.package [output dir, default build/sam]
"""
from __future__ import annotations

import compileall
import os
import py_compile
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHES = shutil.ignore_patterns("__pycache__", "*.pyc", "deployments", "venv")
CHALICE = "import sys; from chalice.cli import main; sys.argv[0] = 'chalice'; sys.exit(main())"


def stage_project(dest: Path, *, requirements: str | None = None) -> Path:
    """A clean copy of what chalice packages (app.py, chalicelib, .chalice, requirements.txt,
    infra for --merge-template). ``requirements`` replaces requirements.txt (the tests pass ""
    to stay off PyPI)."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    shutil.copy2(ROOT / "app.py", dest / "app.py")
    for folder in ("chalicelib", ".chalice", "infra"):
        shutil.copytree(ROOT / folder, dest / folder, ignore=CACHES)
    if requirements is None:
        shutil.copy2(ROOT / "requirements.txt", dest / "requirements.txt")
    else:
        (dest / "requirements.txt").write_text(requirements)
    return dest


def compile_tree(tree: Path) -> None:
    """Bytecode for every .py below ``tree``, as shipped: unchecked-hash, so it is used as is."""
    compileall.compile_dir(str(tree), quiet=2, workers=0,
                           invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)


def compile_archive(archive: Path) -> int:
    """Adds a .pyc beside every .py of the zip (unchecked-hash); returns how many. Entries keep
    their order, content and permissions."""
    with tempfile.TemporaryDirectory() as scratch:
        tree = Path(scratch)
        with zipfile.ZipFile(archive) as source:
            entries = source.infolist()
            source.extractall(tree)
        compile_tree(tree)
        known = {entry.filename for entry in entries}
        added = sorted(str(path.relative_to(tree)) for path in tree.rglob("*.pyc")
                       if str(path.relative_to(tree)) not in known)
        rebuilt = archive.with_suffix(".tmp")
        with zipfile.ZipFile(rebuilt, "w", zipfile.ZIP_DEFLATED) as target:
            for entry in entries:
                target.writestr(entry, (tree / entry.filename).read_bytes() if not entry.is_dir() else b"")
            for name in added:
                info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
                info.external_attr = 0o644 << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                target.writestr(info, (tree / name).read_bytes())
        rebuilt.replace(archive)
    if not any(name.startswith("chalicelib/") for name in added):
        raise RuntimeError("chalicelib did not compile")
    return len(added)


def chalice_package(project: Path, out: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return subprocess.run([sys.executable, "-c", CHALICE, "package", "--merge-template",
                           "infra/resources.json", str(out)], cwd=project, env=env,
                          capture_output=True, text=True, timeout=900)


def runtime_mismatch() -> str | None:
    """Why this Python cannot build the package (None: it can)."""
    from infra.generate import RUNTIME

    major, minor = sys.version_info[:2]
    here = f"python{major}.{minor}"
    if here == RUNTIME:
        return None
    return (f"the functions run {RUNTIME} (infra/generate.py RUNTIME), and the package carries wheels "
            f"and bytecode for the Python that builds it, here {here}: build with {RUNTIME}, e.g. "
            f"`make package PYTHON={RUNTIME} VENV=.venv-{RUNTIME[len('python'):]}`")


def main() -> int:
    mismatch = runtime_mismatch()
    if mismatch:
        print(mismatch, file=sys.stderr)
        return 2
    out = Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else ROOT / "build" / "sam"
    if out.exists():
        shutil.rmtree(out)
    project = stage_project(ROOT / "build" / "src")
    done = chalice_package(project, out)
    sys.stdout.write(done.stdout)
    sys.stderr.write(done.stderr)
    if done.returncode != 0:
        return done.returncode
    compiled = compile_archive(out / "deployment.zip")
    print(f"packaged: {out / 'sam.json'} and {out / 'deployment.zip'} ({compiled} modules compiled)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
