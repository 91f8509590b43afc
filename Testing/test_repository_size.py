"""The Extensions Index's size rule, measured as its check_repository_size does: every file of a depth-1 clone
of the committed HEAD, .git included. The Index refuses more than 100 MB; we keep a margin (40 MB)."""

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LIMIT_MB = 40


@pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(), reason="needs git and a checkout")
def test_depth_one_clone_is_small(tmp_path):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", "--depth", "1", (REPO / ".git").as_uri(), str(clone)], check=True,
                   timeout=300)
    files = [p for p in clone.rglob("*") if p.is_file()]
    total_mb = sum(p.stat().st_size for p in files) / 2**20
    largest = sorted(files, key=lambda p: p.stat().st_size)[-3:]
    assert total_mb <= LIMIT_MB, (f"depth-1 clone is {total_mb:.1f} MB; largest files: "
                                  + ", ".join(f"{p.relative_to(clone)} {p.stat().st_size / 2**20:.1f} MB"
                                              for p in reversed(largest)))
