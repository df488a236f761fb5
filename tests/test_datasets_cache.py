"""Cache directories, checksums, atomic writes and downloads, against a web server on 127.0.0.1."""

import hashlib
import http.server
import os
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from autoenc.datasets._cache import (ChecksumError, DownloadError, cache_dir, download, first_verified,
                                     join_url, keras_cache_dir, sha256_of)

PAYLOAD = b"pretend this is mnist.npz " * 1000
PAYLOAD_SHA256 = hashlib.sha256(PAYLOAD).hexdigest()


pytestmark = pytest.mark.usefixtures("private_dataset_homes")  # tests/conftest.py


class QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # a client that timed out and hung up is expected here, not an error worth printing


@pytest.fixture
def server():
    """A web server on 127.0.0.1 serving ``files`` (path -> bytes) and recording the paths requested.

    Under /slow/ it waits until the test ends before answering; under /short/ it promises more bytes
    than it sends, then hangs up.
    """
    files, hits = {}, []
    release = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            path = self.path
            if path.startswith("/slow/"):
                release.wait(10)
                path = path.removeprefix("/slow")
            short = path.startswith("/short/")
            body = files.get(path.removeprefix("/short"))
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body) + (100 if short else 0)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = QuietServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield SimpleNamespace(url=f"http://127.0.0.1:{httpd.server_port}", files=files, hits=hits)
    release.set()
    httpd.shutdown()
    httpd.server_close()


def leftovers(directory):
    return sorted(p.name for p in Path(directory).iterdir()) if Path(directory).exists() else []


# ---- directories -----------------------------------------------------------------------------------


def test_cache_dir_follows_autoenc_home(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOENC_HOME", str(tmp_path / "elsewhere"))
    assert cache_dir() == tmp_path / "elsewhere" / "datasets"


def test_cache_dir_defaults_to_home(tmp_path, monkeypatch):
    monkeypatch.delenv("AUTOENC_HOME")
    assert cache_dir() == tmp_path / "home" / ".autoenc" / "datasets"


def test_keras_cache_dir(tmp_path, monkeypatch):
    assert keras_cache_dir() == tmp_path / "keras" / "datasets"
    monkeypatch.delenv("KERAS_HOME")
    assert keras_cache_dir() == tmp_path / "home" / ".keras" / "datasets"


def test_join_url():
    assert join_url("http://a/b/", "c.gz") == join_url("http://a/b", "c.gz") == "http://a/b/c.gz"


# ---- checksums and atomic writes -------------------------------------------------------------------


def test_sha256_of_matches_hashlib(tmp_path):
    (tmp_path / "f").write_bytes(PAYLOAD)
    assert sha256_of(tmp_path / "f") == PAYLOAD_SHA256


def test_first_verified_skips_missing_and_damaged_copies(tmp_path):
    damaged, good = tmp_path / "damaged", tmp_path / "good"
    damaged.write_bytes(PAYLOAD[:-1])
    good.write_bytes(PAYLOAD)
    assert first_verified([tmp_path / "missing", damaged, good], PAYLOAD_SHA256) == good
    assert first_verified([tmp_path / "missing", damaged], PAYLOAD_SHA256) is None


# ---- downloads -------------------------------------------------------------------------------------


def test_download_good_file(server, tmp_path):
    server.files["/mnist.npz"] = PAYLOAD
    destination = cache_dir() / "mnist.npz"
    out = download(server.url + "/mnist.npz", destination, PAYLOAD_SHA256, timeout=5)
    assert out == destination
    assert destination.read_bytes() == PAYLOAD
    assert sha256_of(destination) == PAYLOAD_SHA256
    assert leftovers(cache_dir()) == ["mnist.npz"]  # no temporary file left behind
    assert server.hits == ["/mnist.npz"]


def test_download_corrupted_file_leaves_nothing(server):
    server.files["/mnist.npz"] = PAYLOAD[:-1] + b"!"
    with pytest.raises(ChecksumError, match=r"mnist.npz is corrupted.*expected " + PAYLOAD_SHA256):
        download(server.url + "/mnist.npz", cache_dir() / "mnist.npz", PAYLOAD_SHA256, timeout=5)
    assert leftovers(cache_dir()) == []


def test_checksum_error_is_a_download_error():
    assert issubclass(ChecksumError, DownloadError) and issubclass(DownloadError, OSError)


def test_download_http_error_names_url_and_status(server):
    with pytest.raises(DownloadError, match=r"/missing.npz: HTTP Error 404"):
        download(server.url + "/missing.npz", cache_dir() / "missing.npz", PAYLOAD_SHA256, timeout=5)
    assert leftovers(cache_dir()) == []


def test_download_connection_closed_early(server):
    server.files["/mnist.npz"] = PAYLOAD
    message = f"/short/mnist.npz: the connection closed after {len(PAYLOAD)} of {len(PAYLOAD) + 100} bytes"
    with pytest.raises(DownloadError, match=message):
        download(server.url + "/short/mnist.npz", cache_dir() / "mnist.npz", PAYLOAD_SHA256, timeout=5)
    assert leftovers(cache_dir()) == []


def test_download_server_down_fails_fast(closed_url):
    url = closed_url + "mnist.npz"
    start = time.monotonic()
    with pytest.raises(DownloadError, match=f"Could not download {url}: .*refused"):
        download(url, cache_dir() / "mnist.npz", PAYLOAD_SHA256, timeout=5)
    assert time.monotonic() - start < 5
    assert leftovers(cache_dir()) == []


def test_download_slow_server_times_out(server):
    server.files["/mnist.npz"] = PAYLOAD
    start = time.monotonic()
    with pytest.raises(DownloadError, match=r"/slow/mnist.npz: no answer within 0.3 s"):
        download(server.url + "/slow/mnist.npz", cache_dir() / "mnist.npz", PAYLOAD_SHA256, timeout=0.3)
    assert time.monotonic() - start < 5
    assert leftovers(cache_dir()) == []


def test_download_replaces_a_damaged_copy(server):
    server.files["/mnist.npz"] = PAYLOAD
    destination = cache_dir() / "mnist.npz"
    destination.parent.mkdir(parents=True)
    destination.write_bytes(b"damaged")
    download(server.url + "/mnist.npz", destination, PAYLOAD_SHA256, timeout=5)
    assert destination.read_bytes() == PAYLOAD


def test_download_says_where_from(server, capsys):
    server.files["/mnist.npz"] = PAYLOAD
    download(server.url + "/mnist.npz", cache_dir() / "mnist.npz", PAYLOAD_SHA256, timeout=5)
    assert f"Downloading data from {server.url}/mnist.npz" in capsys.readouterr().err


def test_download_uses_file_urls_too(tmp_path):
    (tmp_path / "mirror").mkdir()
    (tmp_path / "mirror" / "mnist.npz").write_bytes(PAYLOAD)
    url = join_url((tmp_path / "mirror").as_uri(), "mnist.npz")
    out = download(url, cache_dir() / "mnist.npz", PAYLOAD_SHA256)
    assert out.read_bytes() == PAYLOAD
    assert os.path.samefile(out.parent, cache_dir())


# ---- hostile servers: an endless body, a trickle -------------------------------------------------------


@pytest.fixture
def hostile_server():
    """Under /endless/ a body without Content-Length that never ends (64 KiB of zeros at a time); under
    /trickle/ the file PAYLOAD, with its true Content-Length, one byte every 0.2 s. ``sent`` counts the
    bytes each path sent."""
    sent = {}
    stop = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def do_GET(self):
            sent[self.path] = 0
            self.send_response(200)
            if self.path.startswith("/trickle/"):
                self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            try:
                if self.path.startswith("/endless/"):
                    while not stop.is_set():
                        self.wfile.write(bytes(65536))
                        sent[self.path] += 65536
                else:
                    for k in range(len(PAYLOAD)):
                        if stop.wait(0.2):
                            return
                        self.wfile.write(PAYLOAD[k:k + 1])
                        self.wfile.flush()
                        sent[self.path] += 1
            except OSError:
                pass   # the client hung up: what a download that gives up does

        def log_message(self, *args):
            pass

    httpd = QuietServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield SimpleNamespace(url=f"http://127.0.0.1:{httpd.server_port}", sent=sent)
    stop.set()
    httpd.shutdown()
    httpd.server_close()


def test_download_stops_an_endless_body_at_the_expected_size(hostile_server):
    destination = cache_dir() / "mnist.npz"
    with pytest.raises(DownloadError, match=rf"/endless/mnist.npz: the server sent more than the expected "
                                            rf"{len(PAYLOAD)} bytes"):
        download(hostile_server.url + "/endless/mnist.npz", destination, PAYLOAD_SHA256, timeout=5,
                 size=len(PAYLOAD))
    assert leftovers(cache_dir()) == []


def test_download_without_a_known_size_stops_at_the_cap(hostile_server, monkeypatch):
    from autoenc.datasets import _cache
    monkeypatch.setattr(_cache, "MAX_DOWNLOAD_BYTES", 2**20)
    with pytest.raises(DownloadError, match=r"more than the expected 1048576 bytes"):
        download(hostile_server.url + "/endless/f.bin", cache_dir() / "f.bin", PAYLOAD_SHA256, timeout=5)
    assert leftovers(cache_dir()) == []


def test_mnist_download_is_capped_at_the_size_in_its_checksum_table(hostile_server, monkeypatch):
    from autoenc.datasets import _cache, fashion_mnist, mnist
    assert _cache.KNOWN_SIZES[mnist.SHA256] == 11490434
    assert all(sha256 in _cache.KNOWN_SIZES for _, sha256 in fashion_mnist.FILES.values())
    monkeypatch.setenv("AUTOENC_DATASETS_URL", hostile_server.url + "/endless/")
    with pytest.raises(DownloadError, match=r"/endless/mnist.npz: the server sent more than the expected "
                                            r"11490434 bytes"):
        mnist.load_data(timeout=5)
    assert leftovers(cache_dir()) == []
    assert hostile_server.sent["/endless/mnist.npz"] < 100 * 11490434   # it stopped, early


def test_download_gives_up_on_a_trickle_at_its_deadline(hostile_server):
    # the server would take len(PAYLOAD) * 0.2 s = 90 minutes; every byte arrives well within the 1 s timeout
    destination = cache_dir() / "mnist.npz"
    with pytest.raises(DownloadError, match=r"/trickle/mnist.npz: not finished within the deadline of 1.5 s "
                                            r"\(\d+ of 26000 bytes received\)"):
        download(hostile_server.url + "/trickle/mnist.npz", destination, PAYLOAD_SHA256, timeout=1,
                 deadline=1.5)
    assert leftovers(cache_dir()) == []
    assert hostile_server.sent["/trickle/mnist.npz"] < len(PAYLOAD)
