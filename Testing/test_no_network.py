"""Nothing reaches for the network unless the user asked for a download.

`import openvino` imports its model converter, which sends a usage event through the openvino-telemetry
package (opt-out: consent is assumed until the user records a choice), from a forked child process on
Linux. qmedsam hides that package before openvino is imported (qmedsam/__init__.py). The check is real:
Python audit hooks (inherited by forked children) append every socket/urllib event to a file, and HOME is
an empty folder, where telemetry would write its client id (intel/openvino_ga_cid). The same check on a
bare `import openvino` shows that it would catch the event.
"""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CASE = REPO.parent / "shared" / "data" / "imgs" / "2DBox_Endoscopy_kvasir-cju0roawvklr.npz"

WATCH = """
import sys
def _watch(event, args, log=open(sys.argv[1], "a", buffering=1)):
    if event.startswith(("socket.", "urllib.")) and event != "socket.gethostname":
        log.write(event + "\\n")
sys.addaudithook(_watch)
"""
ENGINE = WATCH + """
from qmedsam.cli import main
from qmedsam.engine import Segmenter, segment_case
from qmedsam.npz_io import load_npz_case

case = load_npz_case(sys.argv[2])
assert segment_case(Segmenter(None, threads=1), case.kind, case.image, case.boxes).max() > 0
assert main(["models"]) == 0
import time; time.sleep(1)  # telemetry sends from a background thread
"""
BARE = WATCH + """
import openvino
import time; time.sleep(1)
"""


def watched(program: str, home: Path) -> tuple:
    """(network events, telemetry files in HOME) of running `program` with an empty HOME."""
    home.mkdir()
    log = home.parent / f"{home.name}.events"
    log.touch()
    environment = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HOME": str(home)}
    run = subprocess.run([sys.executable, "-c", program, str(log), str(CASE)], capture_output=True, text=True,
                         timeout=300, cwd=home, env=environment)
    assert run.returncode == 0, run.stderr[-2000:]
    return sorted(set(log.read_text().split())), sorted(p.name for p in (home / "intel").glob("*"))


def test_bare_openvino_import_would_be_caught(tmp_path):
    events, files = watched(BARE, tmp_path / "bare")
    assert "openvino_ga_cid" in files and "urllib.Request" in events


def test_engine_and_catalogue_send_nothing(tmp_path):
    assert watched(ENGINE, tmp_path / "engine") == ([], [])
