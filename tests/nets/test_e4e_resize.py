"""e4e's input resize (FALCO's ``Resize((256, 256))``: bilinear, antialiased, aspect not kept)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from tests.nets.test_e4e import tiny


def test_larger_images_are_downsized_with_antialiasing():
    torch.manual_seed(0)
    inv = tiny().eval()
    size = inv.input_size
    x = torch.rand(2, 3, 4 * size, 3 * size) * 2 - 1  # fine detail: aliasing would change the codes
    x[..., ::2, :] *= -1
    expected = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    aliased = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
    with torch.no_grad():
        codes = inv(x)
        assert torch.equal(codes, inv(expected))
        assert not torch.allclose(codes, inv(aliased), atol=1e-4)
