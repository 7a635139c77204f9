"""Golden output of pytorch-fid's FID Inception-v3 (pool features, block 3) on seeded weights.

Official code: mseitzer/pytorch-fid ``src/pytorch_fid/inception.py`` (``InceptionV3([3])`` with
``use_fid_inception=True``: torchvision's Inception3 with the FID blocks patched in). It subclasses
torchvision's ``models/inception.py``, taken from a torchvision wheel downloaded from PyPI (``pip
download --no-deps torchvision``) and read as source only: torchvision is not installed (its compiled
part does not run beside this torch). The pure-Python files the Inception needs (``models/inception.py``,
``models/_api.py``, ``models/_utils.py``, ``models/_meta.py``, ``_utils.py``,
``_internally_replaced_utils.py``) are imported as they are; two names are placeholders:
``transforms._presets.ImageClassification`` (only named in the pretrained-weights metadata) and
``utils._log_api_usage_once`` (usage telemetry). pytorch-fid's weight download is replaced by the
seeded state dict (``load_state_dict_from_url`` returns it; the key layout is read from the network
being loaded). Input: a seeded 2 x 3 x 150 x 150 batch in [0, 1], so the 299 resize is exercised.
Writes ``tests/golden/fid_inception_v3.{json,pt}``.

    pip download --no-deps torchvision==0.29.1 -d /tmp/tv
    python experiments/golden/make_fid.py --official-git <mirror>/mseitzer+pytorch-fid/repo \
        --torchvision-wheel /tmp/tv/torchvision-0.29.1-cp311-cp311-manylinux_2_28_x86_64.whl
"""
from __future__ import annotations

import atexit
import hashlib
import importlib
import shutil
import sys
import tempfile
import types
import zipfile
from pathlib import Path

import torch

from official import export_sources, load_file, parse_args, source_record, stub_module
from tests.golden_data import seeded_state, seeded_tensor, state_layout, write_golden

WEIGHT_SEED, INPUT_SEED, INPUT_SHAPE = 15071, 15072, (2, 3, 150, 150)
TORCHVISION_FILES = ["torchvision/models/inception.py", "torchvision/models/_api.py", "torchvision/models/_utils.py",
                     "torchvision/models/_meta.py", "torchvision/_utils.py", "torchvision/_internally_replaced_utils.py"]


def import_torchvision_inception(wheel: Path) -> str:
    """Register ``torchvision`` / ``torchvision.models`` as bare packages over the wheel's sources; return its version."""
    folder = Path(tempfile.mkdtemp(prefix="torchvision_src_"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(folder, members=TORCHVISION_FILES + ["torchvision/version.py"])
    version = {}
    exec((folder / "torchvision" / "version.py").read_text().split("from torchvision.extension")[0], version)
    for name in ("torchvision", "torchvision.models"):
        package = types.ModuleType(name)
        package.__path__ = [str(folder / name.replace(".", "/"))]  # sources found here, __init__ not run
        sys.modules[name] = package
    sys.modules["torchvision"].models = sys.modules["torchvision.models"]
    sys.modules["torchvision"].__version__ = version["__version__"]
    stub_module("torchvision.transforms._presets", ImageClassification=object)
    stub_module("torchvision.utils", _log_api_usage_once=lambda obj: None)
    inception = importlib.import_module("torchvision.models.inception")
    sys.modules["torchvision.models"].inception = inception
    sys.modules["torchvision.models"].inception_v3 = inception.inception_v3
    return version["__version__"]


def main() -> None:
    args = parse_args(__doc__.split("\n")[0], torchvision_wheel="torchvision wheel from PyPI (read, not installed)")
    src, commit = export_sources(args.official_git)
    wheel = Path(args.torchvision_wheel)
    tv_version = import_torchvision_inception(wheel)
    fid = load_file("pytorch_fid_inception", src / "src" / "pytorch_fid" / "inception.py")

    recorded = {}

    def seeded_download(url, progress=True):
        """Stands for the weight download: the seeded state dict, in the layout of the network loading it."""
        layout = state_layout(sys._getframe(1).f_locals["inception"].state_dict())
        recorded.update(url=url, layout=layout)
        return seeded_state(layout, WEIGHT_SEED)

    fid.load_state_dict_from_url = seeded_download
    net = fid.InceptionV3([fid.InceptionV3.DEFAULT_BLOCK_INDEX]).eval()  # resize_input, normalize_input: True

    images = seeded_tensor(INPUT_SHAPE, INPUT_SEED, 0.0, 1.0)
    with torch.no_grad():
        pool = net(images)[0].squeeze(-1).squeeze(-1)
    meta = source_record("mseitzer/pytorch-fid", commit, ["src/pytorch_fid/inception.py"],
                         torchvision_wheel=f"{wheel.name} (PyPI), sha256 "
                                           f"{hashlib.sha256(wheel.read_bytes()).hexdigest()}",
                         torchvision_version=tv_version, torchvision_files=TORCHVISION_FILES,
                         placeholders="torchvision.transforms._presets.ImageClassification (weights metadata), "
                                      "torchvision.utils._log_api_usage_once (telemetry)",
                         call="InceptionV3([3]).eval()(images)[0] with the FID weights replaced by seeded ones",
                         weights_url=recorded["url"], weight_seed=WEIGHT_SEED, input_seed=INPUT_SEED,
                         input_shape=list(INPUT_SHAPE), input_range=[0, 1], torch_version=torch.__version__,
                         layout=recorded["layout"])
    write_golden("fid_inception_v3", meta, {"pool": pool})
    print(f"pool {tuple(pool.shape)} |mean| {pool.abs().mean():.4f}, commit {commit}, torchvision {tv_version}")


if __name__ == "__main__":
    main()
