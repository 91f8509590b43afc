"""Models that do not ship with the extension: fetch, import, remove (standard library only).

Nothing here touches the network unless the user asked for it (`qmedsam models --fetch NAME`, or Download...
in the QMedSAM module). A model is staged in a hidden folder beside its destination, every file is checked
against the catalogue's size and sha256, and only then is the folder moved into place in one rename, so a
failure of any kind (HTTP error, dropped connection, wrong bytes, full disk, cancel) leaves nothing behind.
Proxies: urllib's ProxyHandler reads http_proxy / https_proxy / no_proxy from the environment; a fresh
opener is built per fetch so that settings changed while Slicer runs are honoured.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath
from typing import Callable, Optional

from .catalogue import ModelEntry, user_models_dir
from .errors import QMedSAMError

# One GitHub release per model, tagged with the model's name, its files as assets:
# <base>/<name>/<file> = https://github.com/qmedsam/SlicerQMedSAM/releases/download/<name>/<file>
DEFAULT_MODELS_URL = "https://github.com/qmedsam/SlicerQMedSAM/releases/download"
CHUNK = 1 << 20
TIMEOUT_S = 60

Progress = Callable[[int, int], None]  # (bytes done, bytes total)


class Cancelled(QMedSAMError):
    """The user stopped a download; nothing was kept."""


def models_url() -> str:
    return os.environ.get("QMEDSAM_MODELS_URL", DEFAULT_MODELS_URL).rstrip("/")


def file_url(entry: ModelEntry, file_name: str, base_url: Optional[str] = None) -> str:
    return f"{(base_url or models_url()).rstrip('/')}/{entry.name}/{file_name}"


def is_user_model(entry: ModelEntry) -> bool:
    """Installed in the per-user folder (fetched or imported), as opposed to shipped with the extension."""
    return entry.folder.parent.resolve() == user_models_dir().resolve()


def _check_free_space(folder: Path, needed: int) -> None:
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise QMedSAMError(f"Not enough disk space in {folder}: the model needs {needed / 1e6:.1f} MB, "
                           f"{free / 1e6:.1f} MB are free. Free some space and try again.")


def _stage(entry: ModelEntry) -> tuple[Path, Path]:
    """(user root, empty hidden staging folder inside it) for installing `entry`."""
    if not entry.sizes:
        raise QMedSAMError(f"Model '{entry.name}' has no file sizes in the catalogue; it cannot be installed "
                           "here. Update the extension.")
    root = user_models_dir()
    try:
        root.mkdir(parents=True, exist_ok=True)
        _check_free_space(root, entry.total_bytes)
        return root, Path(tempfile.mkdtemp(prefix=f".partial-{entry.name}-", dir=root))
    except OSError as error:
        raise QMedSAMError(f"Cannot write the models folder {root} ({error.strerror or error}); set "
                           "QMEDSAM_USER_MODELS_DIR to a writable folder.") from None


def _install(entry: ModelEntry, staging: Path, root: Path) -> Path:
    """Move a complete, verified staging folder into place in one rename (replacing an older copy)."""
    target = root / entry.record["folder"]
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".old-{entry.name}-", dir=root))
        os.replace(target, old / "model")
    os.replace(staging, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return target


class _Verifier:
    """Counts and hashes bytes as they are written, and checks them against the catalogue."""

    def __init__(self, entry: ModelEntry, file_name: str, source: str):
        self.entry, self.file_name, self.source = entry, file_name, source
        self.expected_size = entry.sizes[file_name]
        self.digest = hashlib.sha256()
        self.size = 0

    def update(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.expected_size:
            raise QMedSAMError(f"{self.source} is larger than the catalogue's {self.expected_size} bytes: it is not "
                               f"the file of model '{self.entry.name}'.")
        self.digest.update(chunk)

    def check(self) -> None:
        if self.size < self.expected_size:
            raise QMedSAMError(f"{self.source} is truncated ({self.size} of {self.expected_size} bytes); try again.")
        if self.digest.hexdigest() != self.entry.sha256[self.file_name]:
            raise QMedSAMError(f"{self.source} does not match its sha256 in the catalogue: the file is corrupted "
                               "or is another model. Nothing was installed.")


def _copy_verified(read: Callable[[int], bytes], out_path: Path, verifier: _Verifier,
                   on_bytes: Callable[[int], None], cancel: Optional[Callable[[], bool]]) -> None:
    try:
        with open(out_path, "wb") as out:
            while True:
                if cancel is not None and cancel():
                    raise Cancelled(f"Download of model '{verifier.entry.name}' cancelled; nothing was kept.")
                chunk = read(CHUNK)
                if not chunk:
                    break
                verifier.update(chunk)
                out.write(chunk)
                on_bytes(len(chunk))
    except OSError as error:
        raise QMedSAMError(f"Cannot write {out_path.parent} ({error.strerror or error}); check free space and "
                           "permissions. Nothing was installed.") from None
    verifier.check()


def _run_staged(entry: ModelEntry, fill: Callable[[Path], None]) -> Path:
    """Run `fill(staging)` and install the result; on any failure remove the staging folder and re-raise."""
    root, staging = _stage(entry)
    try:
        fill(staging)
        return _install(entry, staging, root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def fetch(entry: ModelEntry, base_url: Optional[str] = None, progress: Optional[Progress] = None,
          cancel: Optional[Callable[[], bool]] = None) -> Path:
    """Download `entry`'s files from <base_url>/<name>/<file> into the user folder; returns the model folder."""
    total = entry.total_bytes
    done = [0]

    def on_bytes(count: int) -> None:
        done[0] += count
        if progress is not None:
            progress(done[0], total)

    def fill(staging: Path) -> None:
        opener = urllib.request.build_opener()  # reads the proxy environment now
        for file_name in sorted(entry.sha256):
            url = file_url(entry, file_name, base_url)
            try:
                with opener.open(url, timeout=TIMEOUT_S) as response:
                    _copy_verified(response.read, staging / file_name, _Verifier(entry, file_name, url),
                                   on_bytes, cancel)
            except QMedSAMError:
                raise
            except urllib.error.HTTPError as error:
                raise QMedSAMError(f"Download of {url} failed: HTTP {error.code} {error.reason}. Check "
                                   "QMEDSAM_MODELS_URL, or import the model from a file (--import-from).") from None
            except (urllib.error.URLError, OSError) as error:  # DNS, refused, proxy, timeout, dropped connection
                reason = getattr(error, "reason", None) or error
                raise QMedSAMError(f"Download of {url} failed ({reason}). Check the network or proxy "
                                   "(http_proxy/https_proxy), or import the model from a file (--import-from).") \
                    from None
            except Exception as error:  # http.client.IncompleteRead and friends: the connection ended early
                raise QMedSAMError(f"Download of {url} was interrupted ({type(error).__name__}); try again.") \
                    from None

    return _run_staged(entry, fill)


def _members(source: Path) -> dict:
    """Relative POSIX path -> opener, for the files of a folder or a zip. Paths never leave the source."""
    if source.is_dir():
        return {p.relative_to(source).as_posix(): (lambda p=p: p.open("rb")) for p in source.rglob("*") if p.is_file()}
    if zipfile.is_zipfile(source):
        archive = zipfile.ZipFile(source)
        return {info.filename: (lambda info=info: archive.open(info)) for info in archive.infolist()
                if not info.is_dir()}
    raise QMedSAMError(f"{source} is neither a folder nor a zip file; give the folder or zip that holds "
                       "<model name>/encoder.xml etc.")


def _find(members: dict, entry: ModelEntry) -> Optional[dict]:
    """file name -> member path for each of entry's files, as <folder>/<file> at the top or one folder down."""
    folder = entry.record["folder"]
    found = {}
    for file_name in entry.sha256:
        for member in members:
            parts = PurePosixPath(member).parts
            if parts[-2:] == (folder, file_name) and len(parts) <= 3 and ".." not in parts:
                found[file_name] = member
                break
        else:
            return None
    return found


def import_models(source, entries: list) -> list:
    """Install every catalogue model found in a folder or zip (checked like a download); returns the names."""
    source = Path(source)
    if not source.exists():
        raise QMedSAMError(f"{source} does not exist; give the folder or zip that holds the model files.")
    members = _members(source)
    wanted = [(entry, _find(members, entry)) for entry in entries if not entry.present]
    wanted = [(entry, found) for entry, found in wanted if found]
    if not wanted:
        names = ", ".join(f"{e.record['folder']}/" for e in entries if not e.present) or "none (all present)"
        raise QMedSAMError(f"{source} holds no missing catalogue model; expected a folder per model with its "
                           f"files, e.g. {names}.")
    for entry, found in wanted:
        def fill(staging: Path, entry=entry, found=found) -> None:
            for file_name, member in found.items():
                with members[member]() as stream:
                    _copy_verified(stream.read, staging / file_name,
                                   _Verifier(entry, file_name, f"{source.name}:{member}"), lambda _: None, None)

        _run_staged(entry, fill)
    return [entry.name for entry, _ in wanted]


def remove(entry: ModelEntry) -> Path:
    """Delete a fetched or imported model; the models shipped with the extension are never removed."""
    if not is_user_model(entry) or entry.default:
        raise QMedSAMError(f"Model '{entry.name}' ships with the extension ({entry.folder}) and cannot be removed.")
    if not entry.folder.exists():
        raise QMedSAMError(f"Model '{entry.name}' is not installed; nothing to remove.")
    # Rename first so a half-deleted folder is never mistaken for the model.
    doomed = Path(tempfile.mkdtemp(prefix=f".removed-{entry.name}-", dir=entry.folder.parent))
    os.replace(entry.folder, doomed / "model")
    shutil.rmtree(doomed, ignore_errors=True)
    return entry.folder
