"""Fetching, importing and removing models, against a real HTTP server on 127.0.0.1 serving the real INT8 files.

The catalogue under test is the shipped one's INT8 entry under another name ("served-int8"), so the files,
sizes and sha256 are real and the model is absent until fetched. Every failure must leave the user folder
exactly as it was.
"""

import http.server
import json
import threading
import zipfile
from pathlib import Path

import pytest
from qmedsam import model_store
from qmedsam.catalogue import DEFAULT_MODELS_DIR, find_model, load_catalogue
from qmedsam.cli import main
from qmedsam.errors import QMedSAMError

NAME = "served-int8"
SHIPPED = DEFAULT_MODELS_DIR / "litemedsam-int8-ptq"


class Server(http.server.ThreadingHTTPServer):
    """Serves SHIPPED's files at /<NAME>/<file>; `modes` makes a path fail: 404, truncate, corrupt, flaky."""

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.modes, self.requests = {}, []
        self.url = f"http://127.0.0.1:{self.server_address[1]}"


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        path = "/" + self.path.split("://", 1)[-1].split("/", 1)[-1] if "://" in self.path else self.path
        self.server.requests.append(self.path)
        parts = path.strip("/").split("/")
        mode = self.server.modes.get(parts[-1], "ok")
        if mode == "flaky":  # fails once, then works: an interrupted download retried
            self.server.modes[parts[-1]] = "ok"
            mode = "truncate"
        if len(parts) != 2 or parts[0] != NAME or not (SHIPPED / parts[1]).is_file() or mode == "404":
            self.send_error(404)
            return
        data = (SHIPPED / parts[1]).read_bytes()
        if mode == "corrupt":
            data = data[:-1] + bytes([data[-1] ^ 1])
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 2] if mode == "truncate" else data)
        if mode == "truncate":
            self.close_connection = True


@pytest.fixture
def server():
    httpd = Server()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def catalogue(tmp_path, monkeypatch):
    """A catalogue folder with the served model (absent) and the shipped default; an empty user folder."""
    shipped = json.loads((DEFAULT_MODELS_DIR / "models.json").read_text())["models"]
    int8 = next(m for m in shipped if m["name"] == "litemedsam-int8-ptq")
    folder = tmp_path / "catalogue"
    folder.mkdir()
    (folder / "models.json").write_text(json.dumps({"models": [dict(int8, name=NAME, folder=NAME, default=False)]}))
    user = tmp_path / "user-models"
    monkeypatch.setenv("QMEDSAM_USER_MODELS_DIR", str(user))
    monkeypatch.delenv("QMEDSAM_MODELS_URL", raising=False)
    return folder, user


def entry(folder):
    return find_model(NAME, folder)


def left_behind(user: Path) -> list:
    return sorted(p.name for p in user.iterdir()) if user.exists() else []


def test_fetch_installs_a_verified_model_that_loads(server, catalogue):
    folder, user = catalogue
    seen = []
    assert not entry(folder).present
    target = model_store.fetch(entry(folder), base_url=server.url, progress=lambda done, total: seen.append(done))
    assert target == user / NAME and left_behind(user) == [NAME]
    assert entry(folder).present and entry(folder).folder == target
    assert entry(folder).model_pair("encoder")[1] == (SHIPPED / "encoder.bin").read_bytes()  # sha256 checked
    assert seen[-1] == entry(folder).total_bytes and seen == sorted(seen)


@pytest.mark.parametrize("mode, message", [("404", "HTTP 404"), ("truncate", "truncated|interrupted"),
                                           ("corrupt", "sha256")])
def test_failed_download_leaves_nothing(server, catalogue, mode, message):
    folder, user = catalogue
    server.modes["encoder.bin"] = mode
    with pytest.raises(QMedSAMError, match=message):
        model_store.fetch(entry(folder), base_url=server.url)
    assert left_behind(user) == [] and not entry(folder).present


def test_interrupted_download_succeeds_when_retried(server, catalogue):
    folder, user = catalogue
    server.modes["decoder.bin"] = "flaky"
    with pytest.raises(QMedSAMError):
        model_store.fetch(entry(folder), base_url=server.url)
    assert left_behind(user) == []
    model_store.fetch(entry(folder), base_url=server.url)  # restarts from the beginning
    assert entry(folder).present and left_behind(user) == [NAME]


def test_cancel_keeps_nothing(server, catalogue):
    folder, user = catalogue
    with pytest.raises(model_store.Cancelled):
        model_store.fetch(entry(folder), base_url=server.url, cancel=lambda: True)
    assert left_behind(user) == []


def test_too_little_disk_space_is_refused_before_any_request(server, catalogue):
    folder, user = catalogue
    record = json.loads((folder / "models.json").read_text())
    record["models"][0]["size"] = {name: 10**15 for name in record["models"][0]["size"]}  # a petabyte per file
    (folder / "models.json").write_text(json.dumps(record))
    with pytest.raises(QMedSAMError, match="Not enough disk space"):
        model_store.fetch(entry(folder), base_url=server.url)
    assert server.requests == [] and left_behind(user) == []


def test_cli_fetch_uses_the_url_variable_and_exits_2_with_one_line(server, catalogue, monkeypatch, capsys):
    folder, user = catalogue
    monkeypatch.setenv("QMEDSAM_MODELS_URL", server.url + "/missing-prefix")
    assert main(["models", "--models-dir", str(folder), "--fetch", NAME, "-q"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "HTTP 404" in error and left_behind(user) == []
    monkeypatch.setenv("QMEDSAM_MODELS_URL", server.url)
    assert main(["models", "--models-dir", str(folder), "--fetch", NAME, "-q"]) == 0
    assert main(["models", "--models-dir", str(folder)]) == 0
    assert str(user / NAME) in capsys.readouterr().out


def test_the_proxy_from_the_environment_is_used(server, catalogue, monkeypatch):
    """The loopback server doubles as the proxy; the model host does not resolve, so only the proxy can serve."""
    folder, user = catalogue
    monkeypatch.setenv("http_proxy", server.url)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    model_store.fetch(entry(folder), base_url="http://models.example.invalid")
    assert entry(folder).present
    assert all(r.startswith(f"http://models.example.invalid/{NAME}/") for r in server.requests)


def test_import_from_folder_and_zip_then_remove(catalogue, tmp_path):
    folder, user = catalogue
    source = tmp_path / "offline" / NAME
    source.mkdir(parents=True)
    for name in entry(folder).sha256:
        (source / name).write_bytes((SHIPPED / name).read_bytes())
    assert model_store.import_models(source.parent, load_catalogue(folder)) == [NAME]
    assert entry(folder).present and entry(folder).folder == user / NAME
    model_store.remove(entry(folder))
    assert left_behind(user) == [] and not entry(folder).present

    archive = tmp_path / "models.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for name in entry(folder).sha256:
            zipped.write(source / name, f"release/{NAME}/{name}")
    assert model_store.import_models(archive, load_catalogue(folder)) == [NAME]
    assert entry(folder).present


def test_import_refuses_corrupt_and_path_escaping_archives(catalogue, tmp_path):
    folder, user = catalogue
    names = sorted(entry(folder).sha256)
    corrupt = tmp_path / "corrupt.zip"
    with zipfile.ZipFile(corrupt, "w") as zipped:
        for name in names:
            data = (SHIPPED / name).read_bytes()
            zipped.writestr(f"{NAME}/{name}", data if name != "decoder.bin" else data[::-1])
    with pytest.raises(QMedSAMError, match="sha256"):
        model_store.import_models(corrupt, load_catalogue(folder))
    assert left_behind(user) == []

    escaping = tmp_path / "escaping.zip"
    with zipfile.ZipFile(escaping, "w") as zipped:
        for name in names:
            zipped.writestr(f"../../{NAME}/{name}", (SHIPPED / name).read_bytes())
    with pytest.raises(QMedSAMError, match="holds no missing catalogue model"):
        model_store.import_models(escaping, load_catalogue(folder))
    assert left_behind(user) == [] and not (tmp_path.parent / NAME).exists()


def test_the_shipped_default_is_never_removed(catalogue):
    default = find_model(None)  # the shipped catalogue's default, in the extension's own folder
    with pytest.raises(QMedSAMError, match="ships with the extension"):
        model_store.remove(default)
    assert default.present
    assert main(["models", "--remove", default.name]) == 2


def test_listing_touches_no_network(catalogue, monkeypatch, capsys):
    folder, _ = catalogue
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")  # would fail loudly if anything were requested
    monkeypatch.setenv("QMEDSAM_MODELS_URL", "http://127.0.0.1:9")
    assert main(["models", "--models-dir", str(folder)]) == 0
    assert "absent: qmedsam models --fetch " + NAME in capsys.readouterr().out


def test_an_absent_model_says_how_to_get_it(catalogue):
    folder, _ = catalogue
    with pytest.raises(QMedSAMError, match=f"not on this computer.*qmedsam models --fetch {NAME}"):
        entry(folder).model_pair("encoder")
