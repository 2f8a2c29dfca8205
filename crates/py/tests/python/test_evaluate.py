"""Closed-loop evaluation of a Python planner on the CLI's suites."""

import numpy as np
import pytest

import deltaplan


def test_suite_episodes_are_in_suite_order_and_independent_of_threads_and_dtype(weak_sft):
    config = {"eval.per_family": 3}
    a = deltaplan.evaluate(lambda obs: np.zeros((obs.shape[0], 20), np.float32), config=config,
                           action_mode="residual", sft_path=weak_sft)
    b = deltaplan.evaluate(lambda obs: np.zeros((obs.shape[0], 20)), config=config,
                           action_mode="residual", sft_path=weak_sft, num_threads=1)
    assert a["episodes"] == b["episodes"]
    assert len(a["episodes"]) == 15 and all(e is not None for e in a["episodes"])
    assert a["driving_score"] == pytest.approx(np.mean([e["driving_score"] for e in a["episodes"]]))
    assert [e["family"] for e in a["episodes"]] == [f for f in
            ["curvy", "hard_brake", "cut_in", "intersection", "merge"] for _ in range(3)]


def test_a_planner_that_stops_scores_no_route_and_a_nan_planner_is_refused():
    stop = deltaplan.evaluate(lambda obs: np.zeros((obs.shape[0], 20), np.float32),
                              config={"eval.per_family": 1}, families=["curvy"])
    # The ego starts moving and brakes to a stand (zero waypoints), so the episode ends
    # blocked or out of time far from the route's end, and does not count as driven well.
    assert stop["route_completion"] < 20.0 and stop["driving_score"] < 20.0
    assert stop["episodes"][0]["end_reason"] in ("Blocked", "TimeLimit")
    with pytest.raises(deltaplan.ActionError, match="non-finite"):
        deltaplan.evaluate(lambda obs: np.full((obs.shape[0], 20), np.nan, np.float32),
                           config={"eval.per_family": 1})
