"""The README's before | after figure: ``anon photos`` with the default (lite) set on a public-domain photo.

    python experiments/figures/readme_figure.py            # -> experiments/figures/photos_before_after.jpg
    python experiments/figures/readme_figure.py --out x.jpg photos.face_anonymizer=identity   # + overrides

The photo is NASA's astronaut portrait that ships inside scikit-image (public domain). The figure shows
a square around the face (2.2 times the detection box), before and after, titled with the generator's
resolution and the paste-back mask, small enough for a README (JPEG, 256 px per panel).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

PHOTO = "pkg://skimage/data/astronaut.png"
PANEL = 256


def face_square(box: np.ndarray, height: int, width: int, scale: float = 2.2) -> tuple[int, int, int, int]:
    """A square ``scale`` times the box's longer side around its centre, shifted to fit the photo."""
    side = int(min(scale * max(box[2] - box[0], box[3] - box[1]), height, width))
    cx, cy = 0.5 * (box[0] + box[2]), 0.5 * (box[1] + box[3])
    x0 = int(np.clip(round(cx - side / 2), 0, width - side))
    y0 = int(np.clip(round(cy - side / 2), 0, height - side))
    return x0, y0, x0 + side, y0 + side


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("photos_before_after.jpg"))
    parser.add_argument("overrides", nargs="*", help="conf/photos.yaml overrides")
    args = parser.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    from anon.lite.packages import resolve
    from anon.photos import Anonymizer

    with Image.open(resolve(PHOTO)) as im:
        image = np.asarray(im.convert("RGB")).copy()
    anonymizer = Anonymizer.from_config(list(args.overrides))
    result = anonymizer.process(image)
    face = max(result.faces, key=lambda f: f.face_size or 0.0)
    x0, y0, x1, y1 = face_square(face.box, *image.shape[:2])
    panels = [Image.fromarray(a[y0:y1, x0:x1]).resize((PANEL, PANEL), Image.Resampling.LANCZOS)
              for a in (image, result.image)]
    titles = ["before", f"after: face generated at {anonymizer.generated_px} px, "
                        f"pasted inside its outline ({face.info.get('mask', anonymizer.mask_shape)})"]
    dpi = 100
    fig, axes = plt.subplots(1, 2, figsize=(2 * PANEL / dpi + 0.1, PANEL / dpi + 0.3), dpi=dpi)
    for ax, panel, title in zip(axes, panels, titles):
        ax.imshow(np.asarray(panel))
        ax.set_title(title, fontsize=6)
        ax.set_axis_off()
    fig.subplots_adjust(left=0.0, right=1.0, bottom=0.0, top=0.92, wspace=0.02)
    fig.savefig(args.out, dpi=dpi, pil_kwargs={"quality": 85})
    plt.close(fig)
    print(f"[figure] {args.out} ({args.out.stat().st_size // 1024} KiB): face {face.record()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
