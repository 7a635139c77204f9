"""Registry, cache lookup and download, against a real HTTP server on 127.0.0.1.

The server (``http.server`` in a thread, port 0) serves byte strings, honours ``Range: bytes=N-``
with ``206``, records every request's Range header, and can be told to cut a response short
once, to ignore Range, or to answer 404. Expected sums are computed here with ``hashlib`` from
the served bytes, independently of the code under test.
"""
from __future__ import annotations

import hashlib
import io
import re
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from anon.runtime.download import ChecksumError, DownloadError
from anon.errors import AnonError, MissingCheckpointError
from anon.runtime.weights import REGISTRY, Checkpoint, resolve, weights_dir
from anon.runtime.weights_download import download, download_main


# ----------------------------------------------------------------------------- test server
class _State:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.cut_once: set[str] = set()  # paths whose next response stops half-way
        self.ignore_range: set[str] = set()
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.base = ""

    def url(self, path: str) -> str:
        return self.base + path

    def ranges(self, path: str) -> list[str | None]:
        return [r for p, r in self.requests if p == path]


def _handler(state: _State):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep pytest output clean
            return

        def do_GET(self) -> None:
            path = self.path
            rng = self.headers.get("Range")
            state.requests.append((path, rng))
            data = state.files.get(path)
            if data is None:
                self.send_error(404)
                return
            start = 0
            m = re.fullmatch(r"bytes=(\d+)-", rng or "")
            if m and path not in state.ignore_range:
                start = int(m.group(1))
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = data[start:]
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if path in state.cut_once:
                state.cut_once.discard(path)
                self.wfile.write(body[: len(body) // 3])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(body)

    return Handler


@pytest.fixture
def server(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    state = _State()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()


def _entry(name: str, urls, sha256, filename: str | None = None, member: str | None = None,
           size: int | None = None) -> Checkpoint:
    return Checkpoint(name=name, filename=filename or f"sub/{name}.bin", urls=tuple(urls),
                      sha256=sha256, size=size, licence="test", description="test", member=member)


def _files(root: Path) -> list[Path]:
    """Files in the cache, less the record of their sums (``.sha256.json``)."""
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name != ".sha256.json")


def _payload(n: int, seed: int = 0) -> bytes:
    # deterministic, incompressible-looking bytes
    out, block = bytearray(), hashlib.sha256(str(seed).encode()).digest()
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:n])


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ----------------------------------------------------------------------------- downloads
def test_good_file_is_verified_and_cached(server, tmp_path):
    data = _payload(300_000)
    server.files["/good.bin"] = data
    reg = {"good": _entry("good", [server.url("/good.bin")], _sha(data))}
    paths = download(["good"], registry=reg, cache_dir=tmp_path, progress=False, quiet=True)
    assert paths == [tmp_path / "sub" / "good.bin"]
    assert paths[0].read_bytes() == data
    assert _files(tmp_path) == [paths[0]]  # no .part left behind
    assert resolve("good", registry=reg, cache_dir=tmp_path) == paths[0]


def test_corrupt_file_raises_and_leaves_nothing(server, tmp_path):
    data = _payload(100_000)
    server.files["/bad.bin"] = data
    wrong = _sha(b"the publisher's bytes")
    reg = {"bad": _entry("bad", [server.url("/bad.bin")], wrong)}
    with pytest.raises(ChecksumError) as info:
        download(["bad"], registry=reg, cache_dir=tmp_path, progress=False, quiet=True)
    assert wrong in str(info.value) and _sha(data) in str(info.value)
    assert _files(tmp_path) == []


def test_corrupt_redownload_also_removes_the_old_file(server, tmp_path):
    data = _payload(10_000)
    server.files["/x.bin"] = data
    old = tmp_path / "sub" / "x.bin"
    old.parent.mkdir(parents=True)
    old.write_bytes(b"old")
    reg = {"x": _entry("x", [server.url("/x.bin")], _sha(b"other"))}
    with pytest.raises(ChecksumError):
        download(["x"], registry=reg, cache_dir=tmp_path, force=True, progress=False, quiet=True)
    assert _files(tmp_path) == []


def test_interrupted_transfer_resumes_with_range(server, tmp_path):
    data = _payload(600_000, seed=1)
    server.files["/big.bin"] = data
    server.cut_once.add("/big.bin")
    reg = {"big": _entry("big", [server.url("/big.bin")], _sha(data))}
    with pytest.raises(DownloadError, match="resume"):
        download(["big"], registry=reg, cache_dir=tmp_path, retries=0, progress=False, quiet=True)
    part = tmp_path / "sub" / "big.bin.part"
    got = part.stat().st_size
    assert 0 < got < len(data)
    assert not (tmp_path / "sub" / "big.bin").exists()
    with pytest.raises(MissingCheckpointError):
        resolve("big", registry=reg, cache_dir=tmp_path)

    path, = download(["big"], registry=reg, cache_dir=tmp_path, retries=0, progress=False, quiet=True)
    assert server.ranges("/big.bin") == [None, f"bytes={got}-"]
    assert path.read_bytes() == data
    assert not part.exists()


def test_cut_transfer_is_resumed_within_one_call(server, tmp_path):
    data = _payload(200_000, seed=2)
    server.files["/f.bin"] = data
    server.cut_once.add("/f.bin")
    reg = {"f": _entry("f", [server.url("/f.bin")], _sha(data))}
    path, = download(["f"], registry=reg, cache_dir=tmp_path, retries=1, progress=True, quiet=True)
    first, second = server.ranges("/f.bin")
    assert first is None and second is not None and second.startswith("bytes=")
    assert path.read_bytes() == data


def test_server_ignoring_range_rewrites_the_part_file(server, tmp_path):
    data = _payload(50_000, seed=3)
    server.files["/n.bin"] = data
    server.ignore_range.add("/n.bin")
    part = tmp_path / "sub" / "n.bin.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"garbage from an older attempt")
    reg = {"n": _entry("n", [server.url("/n.bin")], _sha(data))}
    path, = download(["n"], registry=reg, cache_dir=tmp_path, progress=False, quiet=True)
    assert server.ranges("/n.bin") == ["bytes=29-"]
    assert path.read_bytes() == data


def test_complete_part_file_is_not_downloaded_again(server, tmp_path):
    data = _payload(5_000, seed=4)
    server.files["/c.bin"] = data
    part = tmp_path / "sub" / "c.bin.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(data)
    reg = {"c": _entry("c", [server.url("/c.bin")], _sha(data))}
    path, = download(["c"], registry=reg, cache_dir=tmp_path, progress=False, quiet=True)
    assert server.ranges("/c.bin") == [f"bytes={len(data)}-"]  # answered 416: already complete
    assert path.read_bytes() == data


def test_mirrors_are_tried_in_order(server, tmp_path):
    data = _payload(20_000, seed=5)
    server.files["/mirror2.bin"] = data
    reg = {"m": _entry("m", [server.url("/gone.bin"), server.url("/mirror2.bin")], _sha(data))}
    path, = download(["m"], registry=reg, cache_dir=tmp_path, progress=False, quiet=True)
    assert [p for p, _ in server.requests] == ["/gone.bin", "/mirror2.bin"]
    assert path.read_bytes() == data


def test_all_urls_failing_names_them(server, tmp_path):
    reg = {"m": _entry("m", [server.url("/a.bin"), server.url("/b.bin")], None)}
    with pytest.raises(DownloadError) as info:
        download(["m"], registry=reg, cache_dir=tmp_path, progress=False, quiet=True)
    assert "/a.bin" in str(info.value) and "/b.bin" in str(info.value) and "404" in str(info.value)
    assert _files(tmp_path) == []


def test_size_mismatch_is_rejected(server, tmp_path):
    data = _payload(1_000, seed=6)
    server.files["/s.bin"] = data
    reg = {"s": _entry("s", [server.url("/s.bin")], None, size=999)}
    with pytest.raises(ChecksumError, match="size"):
        download(["s"], registry=reg, cache_dir=tmp_path, progress=False, quiet=True)
    assert _files(tmp_path) == []


def test_unknown_sum_prints_the_computed_sum_and_can_be_pinned(server, tmp_path, capsys, monkeypatch):
    data = _payload(40_000, seed=7)
    server.files["/u.bin"] = data
    reg = {"unk_model": _entry("unk_model", [server.url("/u.bin")], None)}
    path, = download(["unk_model"], registry=reg, cache_dir=tmp_path, progress=False, quiet=True)
    out = capsys.readouterr().out
    assert _sha(data) in out
    assert "ANON_SHA256_UNK_MODEL" in out and "--sha256" in out
    assert path.read_bytes() == data

    # a wrong pin (env var) rejects the same bytes and removes the cached file
    monkeypatch.setenv("ANON_SHA256_UNK_MODEL", _sha(b"something else"))
    with pytest.raises(ChecksumError):
        download(["unk_model"], registry=reg, cache_dir=tmp_path, force=True, progress=False, quiet=True)
    assert _files(tmp_path) == []
    # the right pin (option) is accepted
    monkeypatch.delenv("ANON_SHA256_UNK_MODEL")
    download(["unk_model"], registry=reg, cache_dir=tmp_path, sha256=_sha(data).upper(),
             progress=False, quiet=True)
    assert path.read_bytes() == data


def _tar(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def test_archive_is_verified_and_members_extracted(server, tmp_path):
    a, b, other = _payload(30_000, 8), _payload(20_000, 9), b"not wanted"
    blob = _tar({"./bundle/a.pth": a, "bundle/b.pth": b, "bundle/extra.dat": other})
    urls = [server.url("/bundle.tar?dl=1")]
    server.files["/bundle.tar?dl=1"] = blob
    reg = {
        "a": _entry("a", urls, _sha(blob), filename="bundle/a.pth", member="bundle/a.pth"),
        "b": _entry("b", urls, _sha(blob), filename="bundle/b.pth", member="bundle/b.pth"),
    }
    path, = download(["a"], registry=reg, cache_dir=tmp_path, progress=False, quiet=True)
    assert path.read_bytes() == a
    assert (tmp_path / "bundle" / "b.pth").read_bytes() == b  # sibling taken from the same archive
    assert _files(tmp_path) == [tmp_path / "bundle" / "a.pth", tmp_path / "bundle" / "b.pth"]
    # `all` finds both cached: no second request for the archive
    download(["all"], registry=reg, cache_dir=tmp_path, progress=False, quiet=True)
    assert len(server.requests) == 1
    # --force on both downloads the archive once
    download(["all"], registry=reg, cache_dir=tmp_path, force=True, progress=False, quiet=True)
    assert len(server.requests) == 2


def test_corrupt_archive_leaves_nothing(server, tmp_path):
    blob = _tar({"bundle/a.pth": b"x" * 1000})
    server.files["/t.tar"] = blob
    reg = {"a": _entry("a", [server.url("/t.tar")], _sha(b"y"), filename="bundle/a.pth",
                       member="bundle/a.pth")}
    with pytest.raises(ChecksumError):
        download(["a"], registry=reg, cache_dir=tmp_path, progress=False, quiet=True)
    assert _files(tmp_path) == []


def test_archive_without_the_member_is_an_error(server, tmp_path):
    blob = _tar({"bundle/other.pth": b"x"})
    server.files["/t.tar"] = blob
    reg = {"a": _entry("a", [server.url("/t.tar")], _sha(blob), filename="bundle/a.pth",
                       member="bundle/a.pth")}
    with pytest.raises(DownloadError, match="bundle/other.pth"):
        download(["a"], registry=reg, cache_dir=tmp_path, progress=False, quiet=True)
    assert _files(tmp_path) == []


def test_all_keeps_going_and_reports_failures(server, tmp_path):
    data = _payload(1000, 10)
    server.files["/ok.bin"] = data
    reg = {"missing": _entry("missing", [server.url("/nope.bin")], None),
           "ok": _entry("ok", [server.url("/ok.bin")], _sha(data))}
    with pytest.raises(DownloadError, match="1 of 2") as info:
        download(["all"], registry=reg, cache_dir=tmp_path, progress=False, quiet=True)
    assert "missing" in str(info.value)
    assert (tmp_path / "sub" / "ok.bin").read_bytes() == data


# ----------------------------------------------------------------------------- resolve
def test_resolve_local_path(tmp_path):
    f = tmp_path / "my.pth"
    f.write_bytes(b"w")
    assert resolve(f, registry={}, cache_dir=tmp_path / "cache") == f
    assert resolve(str(f)) == f


def test_resolve_cached_name(tmp_path):
    reg = {"g": _entry("g", ["http://unused"], None, filename="genforce/g.pth")}
    cached = tmp_path / "genforce" / "g.pth"
    cached.parent.mkdir()
    cached.write_bytes(b"w")
    assert resolve("g", registry=reg, cache_dir=tmp_path) == cached


def test_resolve_missing_names_file_and_command(tmp_path, monkeypatch):
    monkeypatch.setenv("ANON_WEIGHTS", str(tmp_path / "w"))
    assert weights_dir() == tmp_path / "w"
    with pytest.raises(MissingCheckpointError) as info:
        resolve("stylegan2_ffhq1024")  # real registry, default cache = $ANON_WEIGHTS
    msg = str(info.value)
    assert str(tmp_path / "w" / "genforce" / "stylegan2_ffhq1024.pth") in msg
    assert "anon download stylegan2_ffhq1024" in msg
    assert info.value.name == "stylegan2_ffhq1024"
    with pytest.raises(MissingCheckpointError, match="no_such.pth"):
        resolve(tmp_path / "no_such.pth")


def test_default_cache_dir(monkeypatch):
    monkeypatch.delenv("ANON_WEIGHTS", raising=False)
    assert weights_dir() == Path.home() / ".cache" / "anon" / "weights"


def test_tampered_cached_file_is_downloaded_again(server, tmp_path, capsys):
    data = _payload(5_000, 12)
    server.files["/t.bin"] = data
    reg = {"t": _entry("t", [server.url("/t.bin")], _sha(data))}
    path, = download(["t"], registry=reg, cache_dir=tmp_path, progress=False, quiet=True)
    path.write_bytes(b"tampered" + data[8:])  # same size, other bytes
    capsys.readouterr()
    download(["t"], registry=reg, cache_dir=tmp_path, progress=False)
    out = capsys.readouterr().out
    assert "already in the cache" not in out and "does not match its sha256" in out
    assert path.read_bytes() == data and len(server.requests) == 2


def test_tampered_archive_member_is_downloaded_again(server, tmp_path, capsys):
    a = _payload(3_000, 13)
    blob = _tar({"bundle/a.pth": a})
    server.files["/m.tar"] = blob
    reg = {"a": _entry("a", [server.url("/m.tar")], _sha(blob), filename="bundle/a.pth", member="bundle/a.pth")}
    path, = download(["a"], registry=reg, cache_dir=tmp_path, progress=False, quiet=True)
    download(["a"], registry=reg, cache_dir=tmp_path, progress=False)
    assert "sha256 checked" in capsys.readouterr().out and len(server.requests) == 1
    path.write_bytes(b"\0" * len(a))
    download(["a"], registry=reg, cache_dir=tmp_path, progress=False)
    assert "does not match its sha256" in capsys.readouterr().out
    assert path.read_bytes() == a and len(server.requests) == 2


# ----------------------------------------------------------------------------- command line
def test_download_main(server, tmp_path, capsys):
    data = _payload(2_000, 11)
    server.files["/cli.bin"] = data
    reg = {"cli": _entry("cli", [server.url("/cli.bin")], _sha(data))}
    assert download_main(["cli", "--dir", str(tmp_path), "--quiet"], registry=reg) == 0
    assert (tmp_path / "sub" / "cli.bin").read_bytes() == data
    assert download_main(["cli", "--dir", str(tmp_path)], registry=reg) == 0
    assert "already in the cache" in capsys.readouterr().out
    assert len(server.requests) == 1

    assert download_main(["nope", "--dir", str(tmp_path)], registry=reg) == 2
    err = capsys.readouterr().err
    assert "unknown checkpoint 'nope'" in err and "cli" in err

    assert download_main(["--list", "--dir", str(tmp_path)], registry=reg) == 0
    assert "cli" in capsys.readouterr().out
    assert download_main(["all", "--sha256", "0" * 64, "--dir", str(tmp_path)], registry=reg) == 2
    assert download_main(["cli", "--sha256", "xyz", "--force", "--dir", str(tmp_path)], registry=reg) == 2
    assert download_main(["--help"], registry=reg) == 0


# ----------------------------------------------------------------------------- the real table
def test_real_registry_is_well_formed():
    required = {"stylegan2_ffhq1024", "e4e_ffhq_encode", "e4e_ir_se50", "arcface_ir_se50",
                "farl_ep64", "farl_ep16", "sfd", "facenet_vggface2", "facenet_casia_webface",
                "stylegan2_ada_ffhq"}
    assert required <= set(REGISTRY)
    assert len({e.filename for e in REGISTRY.values()}) == len(REGISTRY)
    by_archive: dict[tuple[str, ...], set] = {}
    for name, e in REGISTRY.items():
        assert e.name == name and e.urls and e.licence and e.description
        assert all(u.startswith("https://") for u in e.urls)
        assert e.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", e.sha256)
        assert not Path(e.filename).is_absolute() and ".." not in Path(e.filename).parts
        if e.member is not None:
            assert e.sha256 is not None  # every FALCO bundle has a published sum
            by_archive.setdefault(e.urls, set()).add(e.sha256)
    assert all(len(sums) == 1 for sums in by_archive.values())
    with pytest.raises(AnonError):
        download(["not_a_checkpoint"])
