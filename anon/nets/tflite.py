"""A minimal reader of TensorFlow Lite model files (``.tflite``), written from the published schema.

A ``.tflite`` file is one FlatBuffer whose root table is ``tflite.Model``
(``tensorflow/lite/schema/schema.fbs``, file identifier ``"TFL3"``). This module decodes just the
parts a weight importer needs, with the standard library and numpy only (no TensorFlow, no
``flatbuffers`` package):

* ``Model``: ``version`` (field 0), ``operator_codes`` (1), ``subgraphs`` (2), ``description`` (3),
  ``buffers`` (4);
* ``OperatorCode``: ``deprecated_builtin_code`` (0, int8), ``custom_code`` (1), ``version`` (2,
  default 1), ``builtin_code`` (3, int32); the operator is ``max`` of the two codes (the int8 field
  holds codes below 127, the int32 field is absent in older files);
* ``SubGraph``: ``tensors`` (0), ``inputs`` (1), ``outputs`` (2), ``operators`` (3), ``name`` (4);
* ``Tensor``: ``shape`` (0), ``type`` (1), ``buffer`` (2), ``name`` (3), ``quantization`` (4),
  ``is_variable`` (5), ``shape_signature`` (7);
* ``QuantizationParameters``: ``min`` (0), ``max`` (1), ``scale`` (2), ``zero_point`` (3, int64),
  ``quantized_dimension`` (6);
* ``Operator``: ``opcode_index`` (0), ``inputs`` (1), ``outputs`` (2), ``builtin_options_type`` (3),
  ``builtin_options`` (4);
* ``Buffer``: ``data`` (0, bytes) or, in files over 2 GB, ``offset`` (1) / ``size`` (2) into the file.

FlatBuffer layout used (little-endian): the file starts with a ``uoffset`` (uint32) to the root
table; a table starts with an ``soffset`` (int32) such that ``vtable = table - soffset``; a vtable
is ``uint16 vtable_bytes, uint16 table_bytes, uint16 field_offset[...]`` (0 = field absent, use the
default); reference fields hold a ``uoffset`` relative to their own position; vectors and strings
are a ``uint32`` length followed by the elements (strings: bytes, then a NUL).

Builtin options are decoded for the operators listed in :data:`OPTION_FIELDS`; others keep an
empty ``options`` dict.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["TFLiteModel", "TFLiteTensor", "TFLiteOperator", "Quantization", "read_tflite", "BUILTIN_OPS",
           "TENSOR_TYPES", "FlatBufferError"]

FILE_IDENTIFIER = b"TFL3"

# schema.fbs `enum TensorType`: name, numpy dtype (None: no fixed-size numpy equivalent)
TENSOR_TYPES: dict[int, tuple[str, str | None]] = {
    0: ("FLOAT32", "<f4"), 1: ("FLOAT16", "<f2"), 2: ("INT32", "<i4"), 3: ("UINT8", "u1"), 4: ("INT64", "<i8"),
    5: ("STRING", None), 6: ("BOOL", "?"), 7: ("INT16", "<i2"), 8: ("COMPLEX64", "<c8"), 9: ("INT8", "i1"),
    10: ("FLOAT64", "<f8"), 11: ("COMPLEX128", "<c16"), 12: ("UINT64", "<u8"), 13: ("RESOURCE", None),
    14: ("VARIANT", None), 15: ("UINT32", "<u4"), 16: ("UINT16", "<u2"), 17: ("INT4", None), 18: ("BFLOAT16", None),
}

# schema.fbs `enum BuiltinOperator` (codes 0..127 as published; later codes print as BUILTIN_<n>)
_OP_NAMES = (
    "ADD AVERAGE_POOL_2D CONCATENATION CONV_2D DEPTHWISE_CONV_2D DEPTH_TO_SPACE DEQUANTIZE EMBEDDING_LOOKUP "
    "FLOOR FULLY_CONNECTED HASHTABLE_LOOKUP L2_NORMALIZATION L2_POOL_2D LOCAL_RESPONSE_NORMALIZATION LOGISTIC "
    "LSH_PROJECTION LSTM MAX_POOL_2D MUL RELU RELU_N1_TO_1 RELU6 RESHAPE RESIZE_BILINEAR RNN SOFTMAX "
    "SPACE_TO_DEPTH SVDF TANH CONCAT_EMBEDDINGS SKIP_GRAM CALL CUSTOM EMBEDDING_LOOKUP_SPARSE PAD "
    "UNIDIRECTIONAL_SEQUENCE_RNN GATHER BATCH_TO_SPACE_ND SPACE_TO_BATCH_ND TRANSPOSE MEAN SUB DIV SQUEEZE "
    "UNIDIRECTIONAL_SEQUENCE_LSTM STRIDED_SLICE BIDIRECTIONAL_SEQUENCE_RNN EXP TOPK_V2 SPLIT LOG_SOFTMAX "
    "DELEGATE BIDIRECTIONAL_SEQUENCE_LSTM CAST PRELU MAXIMUM ARG_MAX MINIMUM LESS NEG PADV2 GREATER "
    "GREATER_EQUAL LESS_EQUAL SELECT SLICE SIN TRANSPOSE_CONV SPARSE_TO_DENSE TILE EXPAND_DIMS EQUAL NOT_EQUAL "
    "LOG SUM SQRT RSQRT SHAPE POW ARG_MIN FAKE_QUANT REDUCE_PROD REDUCE_MAX PACK LOGICAL_OR ONE_HOT LOGICAL_AND "
    "LOGICAL_NOT UNPACK REDUCE_MIN FLOOR_DIV REDUCE_ANY SQUARE ZEROS_LIKE FILL FLOOR_MOD RANGE "
    "RESIZE_NEAREST_NEIGHBOR LEAKY_RELU SQUARED_DIFFERENCE MIRROR_PAD ABS SPLIT_V UNIQUE CEIL REVERSE_V2 ADD_N "
    "GATHER_ND COS WHERE RANK ELU REVERSE_SEQUENCE MATRIX_DIAG QUANTIZE MATRIX_SET_DIAG ROUND HARD_SWISH IF "
    "WHILE NON_MAX_SUPPRESSION_V4 NON_MAX_SUPPRESSION_V5 SCATTER_ND SELECT_V2 DENSIFY SEGMENT_SUM BATCH_MATMUL "
    "PLACEHOLDER_FOR_GREATER_OP_CODES"
).split()
BUILTIN_OPS: dict[int, str] = dict(enumerate(_OP_NAMES))
assert BUILTIN_OPS[127] == "PLACEHOLDER_FOR_GREATER_OP_CODES"

# Builtin options decoded per operator: (name, slot, struct format, default); `union` is the
# BuiltinOptions union index the operator's options table must carry.
_PADDING = {0: "SAME", 1: "VALID"}
_ACTIVATION = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH", 5: "SIGN_BIT"}
_FUSED = ("fused_activation_function", "b", 0)
OPTION_FIELDS: dict[str, tuple[int, tuple[tuple[str, int, str, object], ...]]] = {
    "CONV_2D": (1, (("padding", 0, "b", 0), ("stride_w", 1, "i", 0), ("stride_h", 2, "i", 0), (_FUSED[0], 3, "b", 0),
                    ("dilation_w_factor", 4, "i", 1), ("dilation_h_factor", 5, "i", 1))),
    "DEPTHWISE_CONV_2D": (2, (("padding", 0, "b", 0), ("stride_w", 1, "i", 0), ("stride_h", 2, "i", 0),
                              ("depth_multiplier", 3, "i", 0), (_FUSED[0], 4, "b", 0),
                              ("dilation_w_factor", 5, "i", 1), ("dilation_h_factor", 6, "i", 1))),
    "AVERAGE_POOL_2D": (5, (("padding", 0, "b", 0), ("stride_w", 1, "i", 0), ("stride_h", 2, "i", 0),
                            ("filter_width", 3, "i", 0), ("filter_height", 4, "i", 0), (_FUSED[0], 5, "b", 0))),
    "MAX_POOL_2D": (5, (("padding", 0, "b", 0), ("stride_w", 1, "i", 0), ("stride_h", 2, "i", 0),
                        ("filter_width", 3, "i", 0), ("filter_height", 4, "i", 0), (_FUSED[0], 5, "b", 0))),
    "FULLY_CONNECTED": (8, ((_FUSED[0], 0, "b", 0), ("weights_format", 1, "b", 0), ("keep_num_dims", 2, "?", False))),
    "ADD": (11, ((_FUSED[0], 0, "b", 0),)),
    "RESHAPE": (17, (("new_shape", 0, "[i]", None),)),
    "MUL": (21, ((_FUSED[0], 0, "b", 0),)),
    "SUB": (28, ((_FUSED[0], 0, "b", 0),)),
    "DIV": (29, ((_FUSED[0], 0, "b", 0),)),
}


class FlatBufferError(ValueError):
    """The bytes are not a well-formed TFLite FlatBuffer (or use a layout this reader does not know)."""


# --------------------------------------------------------------------------- flatbuffer primitives
class _Buf:
    """Bounds-checked little-endian reads of FlatBuffer tables, vectors and strings in ``data``."""

    def __init__(self, data: bytes | memoryview):
        self.data = memoryview(data)

    def _read(self, fmt: str, pos: int):
        size = struct.calcsize("<" + fmt)
        if pos < 0 or pos + size > len(self.data):
            raise FlatBufferError(f"read of {size} bytes at {pos} is outside the buffer ({len(self.data)} bytes)")
        return struct.unpack_from("<" + fmt, self.data, pos)[0]

    def root(self) -> int:
        return self._read("I", 0)

    def field_pos(self, table: int, slot: int) -> int | None:
        """Absolute position of field ``slot`` of the table at ``table``; None when absent."""
        vtable = table - self._read("i", table)
        vt_bytes = self._read("H", vtable)
        entry = 4 + 2 * slot
        if entry + 2 > vt_bytes:
            return None
        off = self._read("H", vtable + entry)
        return table + off if off else None

    def scalar(self, table: int, slot: int, fmt: str, default=0):
        pos = self.field_pos(table, slot)
        return default if pos is None else self._read(fmt, pos)

    def ref(self, table: int, slot: int) -> int | None:
        """Target position of a reference field (table, vector or string); None when absent."""
        pos = self.field_pos(table, slot)
        return None if pos is None else pos + self._read("I", pos)

    def vector(self, table: int, slot: int) -> tuple[int, int] | None:
        """``(first element position, length)`` of a vector field; None when absent."""
        start = self.ref(table, slot)
        if start is None:
            return None
        n = self._read("I", start)
        return start + 4, n

    def scalars(self, table: int, slot: int, fmt: str) -> tuple | None:
        vec = self.vector(table, slot)
        if vec is None:
            return None
        start, n = vec
        size = struct.calcsize("<" + fmt)
        if start + n * size > len(self.data):
            raise FlatBufferError(f"vector of {n} x {fmt} at {start} runs past the end of the buffer")
        return struct.unpack_from(f"<{n}{fmt}", self.data, start)

    def bytes_(self, table: int, slot: int) -> memoryview | None:
        vec = self.vector(table, slot)
        if vec is None:
            return None
        start, n = vec
        if start + n > len(self.data):
            raise FlatBufferError(f"byte vector of {n} at {start} runs past the end of the buffer")
        return self.data[start:start + n]

    def string(self, table: int, slot: int) -> str | None:
        raw = self.bytes_(table, slot)
        return None if raw is None else bytes(raw).decode("utf-8")

    def tables(self, table: int, slot: int) -> list[int]:
        """Positions of the tables in a vector-of-tables field (empty when absent)."""
        vec = self.vector(table, slot)
        if vec is None:
            return []
        start, n = vec
        return [start + 4 * i + self._read("I", start + 4 * i) for i in range(n)]


# --------------------------------------------------------------------------- model objects
@dataclass(frozen=True)
class Quantization:
    """Affine quantisation of a tensor: ``real = scale * (q - zero_point)`` along ``quantized_dimension``."""

    scale: tuple[float, ...] = ()
    zero_point: tuple[int, ...] = ()
    min: tuple[float, ...] = ()
    max: tuple[float, ...] = ()
    quantized_dimension: int = 0


@dataclass
class TFLiteTensor:
    """One tensor of the main subgraph.

    ``data`` is a read-only numpy array of ``shape`` for constant tensors (those with a non-empty
    buffer), else None. ``quantization`` is None when the file carries no scales.
    """

    index: int
    name: str
    shape: tuple[int, ...]
    dtype: str
    buffer: int
    data: np.ndarray | None = None
    quantization: Quantization | None = None
    shape_signature: tuple[int, ...] | None = None
    is_variable: bool = False


@dataclass
class TFLiteOperator:
    """One operator of the main subgraph, in execution order (``-1`` in ``inputs``: optional input left out)."""

    index: int
    opcode: str
    version: int
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    options: dict = field(default_factory=dict)
    custom_code: str | None = None


@dataclass
class TFLiteModel:
    """The decoded main subgraph (subgraph 0) of a ``.tflite`` file."""

    version: int
    description: str | None
    tensors: list[TFLiteTensor]
    operators: list[TFLiteOperator]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    num_subgraphs: int = 1
    num_buffers: int = 0

    def tensor(self, name: str) -> TFLiteTensor:
        """The tensor called ``name`` (KeyError when there is none)."""
        for t in self.tensors:
            if t.name == name:
                return t
        raise KeyError(name)

    def op_counts(self) -> dict[str, int]:
        """How many operators of each kind the graph has."""
        counts: dict[str, int] = {}
        for op in self.operators:
            counts[op.opcode] = counts.get(op.opcode, 0) + 1
        return counts

    def producers(self) -> dict[int, int]:
        """Tensor index -> index of the operator that writes it."""
        return {t: op.index for op in self.operators for t in op.outputs}


# --------------------------------------------------------------------------- decoding
def _options(buf: _Buf, op_table: int, opcode: str) -> dict:
    spec = OPTION_FIELDS.get(opcode)
    if spec is None:
        return {}
    union, fields = spec
    kind = buf.scalar(op_table, 3, "B", 0)
    table = buf.ref(op_table, 4)
    if table is None:
        kind, table = union, None
    elif kind != union:
        raise FlatBufferError(f"{opcode} carries builtin options of union type {kind}, expected {union}")
    out: dict = {}
    for name, slot, fmt, default in fields:
        if table is None:
            value = default
        elif fmt.startswith("["):
            value = buf.scalars(table, slot, fmt[1:-1])
        else:
            value = buf.scalar(table, slot, fmt, default)
        if name == "padding":
            value = _PADDING.get(value, value)
        elif name == "fused_activation_function":
            value = _ACTIVATION.get(value, value)
        out[name] = value
    return out


def _quantization(buf: _Buf, tensor_table: int) -> Quantization | None:
    q = buf.ref(tensor_table, 4)
    if q is None:
        return None
    scale = buf.scalars(q, 2, "f") or ()
    zero = buf.scalars(q, 3, "q") or ()
    lo, hi = buf.scalars(q, 0, "f") or (), buf.scalars(q, 1, "f") or ()
    if not (scale or zero or lo or hi):
        return None
    return Quantization(scale=tuple(scale), zero_point=tuple(zero), min=tuple(lo), max=tuple(hi),
                        quantized_dimension=buf.scalar(q, 6, "i", 0))


def _buffer_bytes(buf: _Buf, buffer_table: int) -> memoryview | None:
    data = buf.bytes_(buffer_table, 0)
    if data is not None and len(data):
        return data
    offset, size = buf.scalar(buffer_table, 1, "Q", 0), buf.scalar(buffer_table, 2, "Q", 0)
    if offset > 1 and size:  # offset 1 is the converter's placeholder for "not set"
        if offset + size > len(buf.data):
            raise FlatBufferError(f"buffer data at {offset}+{size} is outside the file")
        return buf.data[offset:offset + size]
    return None


def parse_tflite(data: bytes | memoryview, *, check_identifier: bool = True) -> TFLiteModel:
    """Decode a ``.tflite`` FlatBuffer held in memory (see the module docstring for what is read)."""
    buf = _Buf(data)
    if len(buf.data) < 8:
        raise FlatBufferError(f"{len(buf.data)} bytes is too short for a FlatBuffer")
    if check_identifier and bytes(buf.data[4:8]) != FILE_IDENTIFIER:
        raise FlatBufferError(f"file identifier is {bytes(buf.data[4:8])!r}, expected {FILE_IDENTIFIER!r}")
    model = buf.root()

    opcodes = []
    for t in buf.tables(model, 1):
        code = max(buf.scalar(t, 0, "b", 0), buf.scalar(t, 3, "i", 0))
        opcodes.append((BUILTIN_OPS.get(code, f"BUILTIN_{code}"), buf.scalar(t, 2, "i", 1), buf.string(t, 1)))

    buffers = [_buffer_bytes(buf, b) for b in buf.tables(model, 4)]
    subgraphs = buf.tables(model, 2)
    if not subgraphs:
        raise FlatBufferError("the model has no subgraph")
    graph = subgraphs[0]

    tensors = []
    for i, t in enumerate(buf.tables(graph, 0)):
        type_code = buf.scalar(t, 1, "b", 0)
        dtype, np_dtype = TENSOR_TYPES.get(type_code, (f"TYPE_{type_code}", None))
        shape = tuple(buf.scalars(t, 0, "i") or ())
        index = buf.scalar(t, 2, "I", 0)
        if index >= max(len(buffers), 1):
            raise FlatBufferError(f"tensor {i} refers to buffer {index} of {len(buffers)}")
        raw = buffers[index] if buffers else None
        array = None
        if raw is not None and np_dtype is not None:
            count = int(np.prod(shape)) if shape else 1
            itemsize = np.dtype(np_dtype).itemsize
            if len(raw) != count * itemsize:
                raise FlatBufferError(f"tensor {i} ({shape}, {dtype}) has {len(raw)} data bytes, "
                                      f"expected {count * itemsize}")
            array = np.frombuffer(raw, dtype=np_dtype).reshape(shape)  # a read-only view
        signature = buf.scalars(t, 7, "i")
        tensors.append(TFLiteTensor(index=i, name=buf.string(t, 3) or "", shape=shape, dtype=dtype, buffer=index,
                                    data=array, quantization=_quantization(buf, t),
                                    shape_signature=None if signature is None else tuple(signature),
                                    is_variable=bool(buf.scalar(t, 5, "B", 0))))

    operators = []
    for i, o in enumerate(buf.tables(graph, 3)):
        k = buf.scalar(o, 0, "I", 0)
        if k >= len(opcodes):
            raise FlatBufferError(f"operator {i} has opcode index {k} of {len(opcodes)}")
        name, version, custom = opcodes[k]
        operators.append(TFLiteOperator(index=i, opcode=name, version=version,
                                        inputs=tuple(buf.scalars(o, 1, "i") or ()),
                                        outputs=tuple(buf.scalars(o, 2, "i") or ()),
                                        options=_options(buf, o, name), custom_code=custom))
    for op in operators:
        for t in op.inputs + op.outputs:
            if t >= len(tensors):
                raise FlatBufferError(f"operator {op.index} ({op.opcode}) refers to tensor {t} of {len(tensors)}")

    return TFLiteModel(version=buf.scalar(model, 0, "I", 0), description=buf.string(model, 3),
                       tensors=tensors, operators=operators,
                       inputs=tuple(buf.scalars(graph, 1, "i") or ()), outputs=tuple(buf.scalars(graph, 2, "i") or ()),
                       num_subgraphs=len(subgraphs), num_buffers=len(buffers))


def read_tflite(path: str | Path) -> TFLiteModel:
    """Read and decode a ``.tflite`` file (its constant tensors are numpy views of the file bytes)."""
    return parse_tflite(Path(path).read_bytes())
