"""The publish stage's loop with stand-ins for the anonymisation and the evaluators (no networks): which
images are re-optimised, which published, withheld or fallen back, and resume after a crash.

Stand-in images are uniform PNGs whose grey level encodes how they were made: 0 the run's own output,
k + 1 the k-th rung, + 100 the utility retry. The stand-in evaluator re-identifies an image while its
rung level is not above the item's ``need``.
"""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anon.errors import ConfigError
from anon.publish.loop import ATTEMPTS
from anon.publish.stage import compose_publish, run_publish

LADDER = ["more_steps", "lower_target_similarity", "more_layers"]  # conf/publish/default.yaml


def png(path: Path, level: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((16, 16, 3), level, np.uint8)).save(path)
    return path


def level_of(path) -> int:
    return int(np.asarray(Image.open(path))[0, 0, 0])


def write_manifest(folder: Path, records: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


class Stub:
    """``need[id]``: rungs needed before privacy holds (0: the first output passes; 99: never).
    ``utility[id]``: "retry" (fails until the utility retry), "never", else it holds."""

    def __init__(self, need, utility=None, unverifiable=(), fallback_reidentified=False, crash_on=None):
        self.need, self.utility, self.unverifiable = need, utility or {}, set(unverifiable)
        self.fallback_reidentified, self.crash_on, self.calls = fallback_reidentified, crash_on, []

    def optimise(self, rung, scale, sources, folder):
        self.calls.append((rung.name if rung else None, scale, sorted(sources)))
        if self.crash_on == len(self.calls):
            raise RuntimeError("killed")
        level = (LADDER.index(rung.name) + 1 if rung else 0) + (100 if scale else 0)
        records = [{"id": i, "source": s, "status": "done", "image": f"images/{i}.png"} for i, s in sources.items()]
        for i in sources:
            png(folder / "run" / "images" / f"{i}.png", level)
        write_manifest(folder / "run", records)
        return {r["id"]: r for r in records}

    def verify(self, folder):
        lines = {}
        for rec in map(json.loads, (Path(folder) / "manifest.jsonl").read_text().splitlines()):
            i, image = rec["id"], Path(folder) / rec["image"]
            level = level_of(image)
            if Path(folder).name.startswith("fallback-"):
                privacy = not self.fallback_reidentified
            else:
                privacy = level % 100 >= self.need[i]
            kind = self.utility.get(i)
            utility = not (kind == "never" or kind == "retry" and level < 100)
            judged = i not in self.unverifiable
            lines[i] = {"id": i, "image": str(image), "evaluable": judged, "privacy": privacy,
                        "utility": utility, "utility_failures": [] if utility else ["|Δyaw| 9.0° > 5°"],
                        "face_detected": True,
                        "evaluators": {"stub": {"distance": 0.5 + 0.1 * (level % 100), "threshold": 0.6,
                                                "reidentified": (not privacy) if judged else None,
                                                "pass": privacy if judged else None}}}
        return lines


def make_run(tmp_path: Path, ids, failed=()) -> Path:
    run = tmp_path / "run"
    records = []
    for i in ids:
        source = png(tmp_path / "sources" / f"{i}.png", 200)
        png(run / "images" / f"{i}.png", 0)
        records.append({"id": i, "source": str(source), "status": "done", "image": f"images/{i}.png"})
    records += [{"id": i, "source": "x", "status": "failed", "error": "OSError: truncated file"} for i in failed]
    write_manifest(run, records)
    return run


def publish(tmp_path, stub, *overrides, out="out"):
    cfg = compose_publish([f"run_dir={tmp_path / 'run'}", f"out={tmp_path / out}", "verify.decide=[stub]",
                           "verify.report=[stub]", *overrides])
    summary = run_publish(cfg, optimise=stub.optimise, verify_decide=stub.verify, verify_report=stub.verify)
    lines = [json.loads(s) for s in (tmp_path / out / "manifest.jsonl").read_text().splitlines()]
    return summary, {e["id"]: e for e in lines}


def published_images(out: Path) -> dict[str, int]:
    return {p.relative_to(out / "images").with_suffix("").as_posix(): level_of(p)
            for p in sorted((out / "images").rglob("*.png"))}


NEED = {"p/a": 0, "p/b": 1, "q/c": 2, "q/d": 99}


def test_failures_climb_the_ladder_and_only_passing_images_are_published(tmp_path):
    make_run(tmp_path, NEED)
    stub = Stub(NEED)
    summary, entries = publish(tmp_path, stub)
    # each rung re-optimises exactly the images still failing, in ladder order
    assert stub.calls == [("more_steps", None, ["p/b", "q/c", "q/d"]),
                          ("lower_target_similarity", None, ["q/c", "q/d"]), ("more_layers", None, ["q/d"])]
    # published: the image of the attempt that passed, byte for byte; the never-passing one is left out
    assert published_images(tmp_path / "out") == {"p/a": 0, "p/b": 1, "q/c": 2}
    assert {i: (e["status"], e["attempt"]) for i, e in entries.items()} == {
        "p/a": ("published", 0), "p/b": ("published", 1), "q/c": ("published", 2), "q/d": ("withheld", 3)}
    assert "privacy failed" in entries["q/d"]["reason"] and "re-identified by stub" in entries["q/d"]["reason"]
    assert entries["q/d"]["image"] is None
    # every attempt is a record: number, setting, score under each deciding evaluator
    work = Path(summary["settings"]["work_folder"])
    d = [r for r in map(json.loads, (work / ATTEMPTS).read_text().splitlines()) if r["id"] == "q/d"]
    assert [r["attempt"] for r in d] == [0, 1, 2, 3]
    assert [r["setting"]["name"] for r in d[1:]] == LADDER
    assert [round(r["score"]["stub"], 3) for r in d] == [0.5, 0.6, 0.7, 0.8]
    assert summary["published"] == 3 and summary["withheld"] == 1 and summary["re_optimised"] == 3
    assert summary["published_by_attempt"] == {"0 (initial (the run's own setting))": 1, "1 (more_steps)": 1,
                                               "2 (lower_target_similarity)": 1}
    assert summary["worst_remaining"]["decide"]["stub"]["worst"] == pytest.approx(0.5)
    md = (tmp_path / "out" / "summary.md").read_text()
    assert "**deciding**" in md and "**reporting**" in md and "3 were published" in md
    assert summary["verdict_thresholds"]["utility_checks"] == ["pose", "expression"]  # conf/evaluate.yaml defaults
    assert not (tmp_path / "run" / "verification.jsonl").exists()  # the run folder itself is not written


def test_a_crash_mid_ladder_resumes_from_the_records_to_the_same_published_set(tmp_path):
    make_run(tmp_path, NEED)
    with pytest.raises(RuntimeError, match="killed"):
        publish(tmp_path, Stub(NEED, crash_on=2))
    assert not (tmp_path / "out" / "images").exists()  # nothing is copied before every decision is made
    work = next((tmp_path / "run" / "publish").iterdir())
    with open(work / ATTEMPTS, "a") as fh:
        fh.write('{"id": "q/c", "attempt": 2, "kind": "pri')  # a line torn by kill -9
    again = Stub(NEED)
    _, entries = publish(tmp_path, again)
    assert again.calls == [("lower_target_similarity", None, ["q/c", "q/d"]), ("more_layers", None, ["q/d"])]
    (tmp_path / "fresh").mkdir()
    make_run(tmp_path / "fresh", NEED)
    _, reference = publish(tmp_path / "fresh", Stub(NEED))
    assert published_images(tmp_path / "out") == published_images(tmp_path / "fresh" / "out")
    strip = lambda es: {i: (e["status"], e["attempt"], e["reason"]) for i, e in es.items()}  # noqa: E731
    assert strip(entries) == strip(reference)


@pytest.mark.parametrize("kind", ["mask", "blur"])
def test_a_fallback_is_published_marked_only_when_it_passes(tmp_path, kind):
    make_run(tmp_path, NEED)
    summary, entries = publish(tmp_path, Stub(NEED), f"publish.fallback={kind}")
    d = entries["q/d"]
    assert d["status"] == "published" and d["fallback"] == kind and "privacy failed" in d["reason"]
    pixels = np.asarray(Image.open(tmp_path / "out" / d["image"]))
    assert summary["fell_back"] == {kind: 1} and pixels.shape == (16, 16, 3)
    if kind == "mask":  # the box covers the face region of the last attempt's image (grey level 3)
        assert pixels[8, 8].tolist() == [0, 0, 0] and pixels[0, 0].tolist() == [3, 3, 3]
    # a fallback the deciding evaluators still re-identify is withheld
    _, entries = publish(tmp_path, Stub(NEED, fallback_reidentified=True), f"publish.fallback={kind}",
                         f"publish.work_dir={tmp_path / 'work2'}", out="out2")
    assert entries["q/d"]["status"] == "withheld" and f"{kind} fallback" in entries["q/d"]["reason"]
    assert "q/d" not in published_images(tmp_path / "out2")


def test_utility_failures_get_one_retry_with_attribute_weights_raised(tmp_path):
    need = {"u/e": 0, "u/f": 0}
    make_run(tmp_path, need)
    stub = Stub(need, utility={"u/e": "retry", "u/f": "never"})
    summary, entries = publish(tmp_path, stub)
    assert stub.calls == [(None, {"loss.lambda_attr": 4}, ["u/e", "u/f"])]
    assert entries["u/e"]["status"] == "published" and entries["u/e"]["attempt"] == 1
    assert entries["u/f"]["status"] == "withheld" and "utility failed" in entries["u/f"]["reason"]
    assert "|Δyaw|" in entries["u/f"]["reason"]
    # by choice, published with the failed verdict recorded (the attempt that kept privacy)
    _, entries = publish(tmp_path, Stub(need, utility={"u/e": "retry", "u/f": "never"}),
                         "publish.on_utility_failure=publish", out="out2")
    assert entries["u/f"]["status"] == "published_utility_failed" and entries["u/f"]["final"]["utility"] is False
    assert set(published_images(tmp_path / "out2")) == {"u/e", "u/f"}


def test_failed_and_unjudgeable_items_are_withheld_and_stale_files_removed(tmp_path):
    need = {"a/ok": 0, "a/noface": 99}
    make_run(tmp_path, need, failed=["a/broken"])
    png(tmp_path / "out" / "images" / "old" / "gone.png", 7)  # published by an earlier setting
    stub = Stub(need, unverifiable=["a/noface"])
    _, entries = publish(tmp_path, stub)
    assert stub.calls == []  # an original no evaluator can judge is not re-optimised
    assert entries["a/broken"]["status"] == "withheld" and "truncated file" in entries["a/broken"]["reason"]
    assert entries["a/noface"]["status"] == "withheld" and "cannot be verified" in entries["a/noface"]["reason"]
    assert published_images(tmp_path / "out") == {"a/ok": 0}


@pytest.mark.parametrize("override, words", [("verify.decide=[]", "verify.decide is empty"),
                                             ("publish.fallback=burn", "publish.fallback='burn'"),
                                             ("publish.on_utility_failure=maybe", "on_utility_failure")])
def test_bad_settings_are_one_line_errors(tmp_path, override, words):
    make_run(tmp_path, {"a/ok": 0})
    cfg = compose_publish([f"run_dir={tmp_path / 'run'}", f"out={tmp_path / 'out'}", "verify.decide=[stub]", override])
    with pytest.raises(ConfigError, match=words):
        run_publish(cfg, optimise=Stub({}).optimise, verify_decide=Stub({}).verify)


def test_out_inside_the_run_folder_is_refused(tmp_path):
    make_run(tmp_path, {"a/ok": 0})
    cfg = compose_publish([f"run_dir={tmp_path / 'run'}", f"out={tmp_path / 'run' / 'pub'}"])
    with pytest.raises(ConfigError, match="outside the run folder"):
        run_publish(cfg)


@pytest.mark.slow
def test_cli_publish_on_a_folder_without_a_run_is_one_line(tmp_path):
    from tests.helpers import run_anon

    result = run_anon("publish", f"run_dir={tmp_path / 'nothing'}", f"out={tmp_path / 'out'}", timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0 and "run manifest" in result.stderr
    assert not (tmp_path / "out").exists()


def test_an_image_changed_after_its_verification_is_never_copied(tmp_path):
    make_run(tmp_path, {"a/ok": 0, "a/also": 0})
    publish(tmp_path, Stub({"a/ok": 0, "a/also": 0}))
    assert set(published_images(tmp_path / "out")) == {"a/ok", "a/also"}
    png(tmp_path / "run" / "images" / "a" / "ok.png", 42)  # the run's output redone in place
    _, entries = publish(tmp_path, Stub({"a/ok": 0, "a/also": 0}))
    assert entries["a/ok"]["status"] == "withheld" and "changed after it was verified" in entries["a/ok"]["reason"]
    assert published_images(tmp_path / "out") == {"a/also": 0}
