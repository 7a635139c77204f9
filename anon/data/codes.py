"""Initial W+ codes: one ``<id>.pt`` tensor per image in a folder (the inversion and pairing stages write these)."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from anon.errors import MissingDataError


class CodeFolder:
    """Codes stored as ``<root>/<id>.pt`` (shape ``L x D``, ``1 x L x D`` or ``D`` for a single w).

    With ``pairs`` (a JSON file ``{image_id: code_id}``, as the pairing stage writes) an image's code is
    looked up through the map, so many images can share one fake neighbour.
    """

    def __init__(self, root: str | Path, pairs: str | Path | None = None, what: str = "code folder"):
        self.root = Path(root)
        if not self.root.is_dir():
            raise MissingDataError(self.root, what, "run the stage that produces it or fix the path in your config")
        self.pairs = None
        if pairs is not None:
            pairs = Path(pairs)
            if not pairs.is_file():
                raise MissingDataError(pairs, "pair map", "run the pairing stage or fix `dataset.pairs`")
            self.pairs = json.loads(pairs.read_text())

    def path(self, image_id: str) -> Path:
        code_id = self.pairs.get(image_id, image_id) if self.pairs is not None else image_id
        return self.root / f"{code_id}.pt"

    def load(self, image_id: str, num_ws: int | None = None) -> torch.Tensor:
        """The code for ``image_id`` as ``L x D`` float32; a single w is broadcast to ``num_ws`` rows."""
        path = self.path(image_id)
        if not path.is_file():
            raise FileNotFoundError(f"no code for {image_id!r} at {path}")
        try:
            code = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # UnpicklingError (a pickled object), EOFError (empty), RuntimeError (garbage)
            raise ValueError(f"{path} is not a readable tensor file ({type(err).__name__})") from err
        if not isinstance(code, torch.Tensor):
            raise ValueError(f"{path} holds a {type(code).__name__}, expected a tensor")
        code = code.float()
        if code.ndim == 3 and code.shape[0] == 1:
            code = code[0]
        if code.ndim == 1:
            if num_ws is None:
                raise ValueError(f"{path} holds a single w; the number of W+ rows is needed to broadcast it")
            code = code[None].repeat(num_ws, 1)
        if code.ndim != 2 or (num_ws is not None and code.shape[0] != num_ws):
            raise ValueError(f"{path} has shape {tuple(code.shape)}, expected {num_ws or 'L'} x D")
        return code

    def offsets_path(self, image_id: str) -> Path:
        """Where a pivotal-tuning inversion keeps the image's weight offsets: ``offsets/`` beside ``codes/``."""
        return self.root.parent / "offsets" / self.path(image_id).relative_to(self.root)

    def load_offsets(self, image_id: str) -> dict[str, torch.Tensor] | None:
        """The image's generator weight offsets ``{name: tensor}``, or None when the inversion has none."""
        path = self.offsets_path(image_id)
        if not path.is_file():
            return None
        try:
            offsets = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise ValueError(f"{path} is not a readable tensor file ({type(err).__name__})") from err
        if not isinstance(offsets, dict) or not all(isinstance(v, torch.Tensor) for v in offsets.values()):
            raise ValueError(f"{path} holds a {type(offsets).__name__}, expected {{parameter name: tensor}}")
        return {k: v.float() for k, v in offsets.items()}
