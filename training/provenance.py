"""Where a training result came from: the repository root, file checksums, the command that ran and the
library versions, recorded beside models (catalogue_writer), tables and measurements."""

from __future__ import annotations

import hashlib
import shlex
import sys
from importlib import metadata
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def sha256_file(path: Path) -> str:
    """The file's sha256 (hex), read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def invoked_command() -> str:
    """The command line that is running, relative to the repo (never a path of this machine)."""
    args = [Path(a).resolve().relative_to(REPO_ROOT).as_posix() if Path(a).is_absolute() and
            Path(a).resolve().is_relative_to(REPO_ROOT) else a for a in sys.argv[1:]]
    module = Path(sys.argv[0]).resolve()
    if module.is_relative_to(REPO_ROOT):
        name = module.relative_to(REPO_ROOT).with_suffix("").as_posix().replace("/", ".")
        return shlex.join(["python", "-m", name, *args])
    return shlex.join([Path(sys.argv[0]).name, *args])


def library_versions(*names: str) -> dict:
    """{package: installed version} of the named packages that are installed."""
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found
