"""DCGAN face generator (64 px) with the weights shipped in the ``gan-face-generate`` package.

The network is the DCGAN of the PyTorch tutorial as packaged by ``gan-face-generate`` 1.1.1
(trained on DigiFace-1M, rendered synthetic faces): a 100-d z (as ``N x 100 x 1 x 1``) goes
through five 4x4 transposed convolutions, no biases::

    100 -> 512 x 4 x 4 -> 256 x 8 x 8 -> 128 x 16 x 16 -> 64 x 32 x 32 -> 3 x 64 x 64

with BatchNorm + ReLU after the first four and ``tanh`` at the end, so images are in ``[-1, 1]``.
Parameter names are those of the package's ``netG_state_dict`` (``main.{0,3,6,9,12}.weight``
for the convolutions, ``main.{1,4,7,10}.*`` for BatchNorm), so ``weights.tar`` loads strictly.

It stands in for StyleGAN2 in plumbing tests only: there is no mapping network and no W+; its
"W" space is the z prior itself. Generator interface (see :mod:`anon.nets`): ``z_dim = w_dim = 100``,
``num_ws = 1``, ``has_wplus = False``, ``mapping(z) -> N x 1 x 100``, ``forward(ws) -> N x 3 x 64 x 64``,
``w_avg = 0`` (the mean of the N(0, I) prior, the point truncation moves towards).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from anon.lite.packages import resolve
from anon.nets.checkpoint import read_checkpoint
from anon.nets.frozen import FrozenNetwork

PACKAGED_WEIGHTS = "pkg://gan_face_generate/weights.tar"


class DCGANGenerator(FrozenNetwork):
    """Frozen-BatchNorm DCGAN: ``ws`` (N x 1 x z_dim) -> images N x 3 x 64 x 64 in [-1, 1].

    Args:
        checkpoint: ``pkg://...`` reference or local path of ``weights.tar`` (a dict with
            ``netG_state_dict``, or that state dict itself); default: the file inside the installed
            ``gan-face-generate``; None: random DCGAN initialisation (conv N(0, 0.02), BN scale N(1, 0.02)).
        z_dim: latent size (100 in the released weights).
        ngf: width of the last hidden layer (64); layer widths are ngf x (8, 4, 2, 1).
        channels: image channels (3).
    """

    has_wplus = False  # one code row drives every layer (StyleGAN2: True)

    def __init__(self, checkpoint: str | Path | None = PACKAGED_WEIGHTS, z_dim: int = 100, ngf: int = 64,
                 channels: int = 3):
        super().__init__()
        self.z_dim = self.w_dim = z_dim
        self.num_ws = 1
        self.resolution = 64
        widths = [z_dim, ngf * 8, ngf * 4, ngf * 2, ngf]
        layers: list[nn.Module] = []
        for i, (cin, cout) in enumerate(zip(widths[:-1], widths[1:])):
            # first layer: 1x1 -> 4x4 (stride 1, no padding); the others double the size
            layers += [nn.ConvTranspose2d(cin, cout, 4, 1 if i == 0 else 2, 0 if i == 0 else 1, bias=False),
                       nn.BatchNorm2d(cout), nn.ReLU()]
        layers += [nn.ConvTranspose2d(ngf, channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)
        self.register_buffer("w_avg", torch.zeros(z_dim), persistent=False)
        if checkpoint is None:
            self._random_init()
        else:
            self._load(resolve(checkpoint))
        self.freeze()

    def _random_init(self) -> None:
        for m in self.main:
            if isinstance(m, nn.ConvTranspose2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def _load(self, path: Path) -> None:
        ckpt = read_checkpoint(path, None)
        state = ckpt.get("netG_state_dict", ckpt) if isinstance(ckpt, dict) else None
        if not isinstance(state, dict) or "main.0.weight" not in state:
            raise ValueError(f"{path}: not a gan-face-generate DCGAN checkpoint (no netG_state_dict / main.0.weight)")
        if state["main.0.weight"].shape[0] != self.z_dim:
            raise ValueError(f"{path}: z_dim {state['main.0.weight'].shape[0]} in the file, {self.z_dim} configured")
        self.load_state_dict(state, strict=True)

    def mapping(self, z: torch.Tensor, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None) -> torch.Tensor:
        """z (N x z_dim) -> ws (N x 1 x z_dim); truncation scales rows ``[:cutoff]`` towards ``w_avg`` = 0."""
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"expected z of shape N x {self.z_dim}, got {tuple(z.shape)}")
        ws = z[:, None, :].clone()
        if truncation_psi != 1.0:
            cutoff = self.num_ws if truncation_cutoff is None else truncation_cutoff
            ws[:, :cutoff] = self.w_avg.to(ws.dtype).lerp(ws[:, :cutoff], truncation_psi)
        return ws

    def forward(self, ws: torch.Tensor) -> torch.Tensor:
        """ws (N x 1 x z_dim) -> images (N x 3 x 64 x 64) in [-1, 1] (tanh output)."""
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"expected ws of shape N x {self.num_ws} x {self.w_dim}, got {tuple(ws.shape)}")
        return self.main(ws.reshape(ws.shape[0], self.z_dim, 1, 1))

    def synthesis(self, ws: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`forward` (the generator convention names both)."""
        return self(ws)
