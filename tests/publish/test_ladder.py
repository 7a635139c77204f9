"""The escalation ladder: parsing, settings applied to the run config, and the per-item decision."""
import pytest
from omegaconf import OmegaConf

from anon.errors import ConfigError
from anon.publish.ladder import (ESCALATE, FALLBACK, PUBLISH, RETRY_UTILITY, UTILITY_FAILED, apply_setting,
                                 next_step, parse_ladder)


def attempt(n, kind="privacy", rung=None, privacy=False, utility=True, verifiable=True):
    rung = n - 1 if kind == "privacy" and rung is None else rung
    return {"attempt": n, "kind": kind, "rung": rung, "privacy": privacy, "utility": utility,
            "passed": bool(privacy and utility), "verifiable": verifiable}


def initial(**kw):
    return attempt(0, kind="initial", rung=None, **kw)


def test_privacy_failures_climb_one_rung_at_a_time_then_fall_back():
    history = [initial()]
    assert next_step(history, 3, True) == (ESCALATE, 0)
    history.append(attempt(1))
    assert next_step(history, 3, True) == (ESCALATE, 1)
    history.append(attempt(2))
    assert next_step(history, 3, True) == (ESCALATE, 2)
    history.append(attempt(3))
    assert next_step(history, 3, True) == (FALLBACK, None)
    assert next_step([initial()], 0, True) == (FALLBACK, None)  # no ladder: straight to the fallback


def test_first_pass_stops_the_climb():
    assert next_step([initial(privacy=True)], 3, True) == (PUBLISH, 0)
    assert next_step([initial(), attempt(1), attempt(2, privacy=True)], 3, True) == (PUBLISH, 2)


def test_utility_failure_gets_one_retry_then_is_final():
    history = [initial(), attempt(1, privacy=True, utility=False)]
    assert next_step(history, 3, True) == (RETRY_UTILITY, None)
    assert next_step(history, 3, False) == (UTILITY_FAILED, 1)
    history.append(attempt(2, kind="utility", rung=0, privacy=True, utility=False))
    assert next_step(history, 3, True) == (UTILITY_FAILED, 2)
    # a retry that loses privacy ends the item on the attempt before it (which kept privacy)
    lost = [initial(), attempt(1, privacy=True, utility=False), attempt(2, kind="utility", rung=0)]
    assert next_step(lost, 3, True) == (UTILITY_FAILED, 1)
    passed = [initial(privacy=True, utility=None), attempt(1, kind="utility", privacy=True)]
    assert next_step(passed, 3, True) == (PUBLISH, 1)


def test_an_original_no_evaluator_can_judge_is_not_re_optimised():
    assert next_step([initial(verifiable=False)], 3, True) == (FALLBACK, None)


def test_ladder_from_config_and_its_errors():
    rungs = parse_ladder(OmegaConf.create([{"name": "a", "scale": {"module.steps": 4}},
                                           {"name": "b", "set": {"loss.margin": -0.3}, "neighbour_rank": 1}]))
    assert [r.name for r in rungs] == ["a", "b"] and rungs[1].neighbour_rank == 1
    assert rungs[0].describe() == {"name": "a", "set": {}, "scale": {"module.steps": 4}, "neighbour_rank": 0}
    for bad, words in (([{"scale": {}}], "needs a name"), ([{"name": "a", "scale": {"x": 0}}], "number > 0"),
                       ([{"name": "a"}, {"name": "a"}], "must differ"), ([{"name": "a", "steps": 3}], "unknown key"),
                       ([{"name": "a", "neighbour_rank": -1}], "neighbour_rank")):
        with pytest.raises(ConfigError, match=words):
            parse_ladder(bad)


def test_settings_are_applied_on_a_copy_of_the_run_config():
    run = OmegaConf.create({"module": {"steps": 50}, "loss": {"margin": 0.0, "lambda_attr": 0.003}})
    rung = parse_ladder([{"name": "r", "set": {"loss.margin": -0.3}, "scale": {"module.steps": 4}}])[0]
    out = apply_setting(run, rung, {"loss.lambda_attr": 4})
    assert out.module.steps == 200 and isinstance(out.module.steps, int)
    assert out.loss.margin == -0.3 and out.loss.lambda_attr == pytest.approx(0.012)
    assert run.module.steps == 50 and run.loss.margin == 0.0  # the run's own config is untouched
    with pytest.raises(ConfigError, match="not a number"):
        apply_setting(run, parse_ladder([{"name": "r", "scale": {"loss": 2}}])[0])


def test_next_nearest_fake_comes_from_the_pair_stage_table(tmp_path):
    import json

    from anon.publish.attempts import neighbour_pairs

    (tmp_path / "neighbours.json").write_text(json.dumps({"p/a": {"ids": ["f7", "f3"], "similarity": [0.9, 0.8]}}))
    run = OmegaConf.create({"dataset": {"pairs": str(tmp_path / "pairs.json")}})
    path = neighbour_pairs(run, ["p/a"], 1, tmp_path / "attempt" / "pairs.json")
    assert json.loads(path.read_text()) == {"p/a": "f3"}
    with pytest.raises(ConfigError, match="pair.k=3"):
        neighbour_pairs(run, ["p/a"], 2, tmp_path / "attempt" / "pairs.json")
    with pytest.raises(ConfigError, match="neighbours.json"):
        neighbour_pairs(OmegaConf.create({"dataset": {"pairs": None}}), ["p/a"], 1, tmp_path / "x.json")
