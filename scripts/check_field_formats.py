#!/usr/bin/env python3
"""Recompute a run's field-format files with the field's own code and compare.

usage: check_field_formats.py RUN_DIR [--leaderboard CHECKOUT] [--nuplan CHECKOUT]

--leaderboard: a git checkout of carla-simulator/leaderboard (2.x). Its
  leaderboard/utils/statistics_manager.py reads the route records of every
  RUN_DIR/eval/<split>/<policy>/carla_leaderboard.json and computes the global record,
  `values`, `labels` and the entry status again; they must equal the file's.
--nuplan: a git checkout of motional/nuplan-devkit. Its WeightedAverageMetricAggregator
  (closed-loop weights and multiplier metrics) aggregates the scenario rows of every
  nuplan_aggregator.csv; every row must equal the file's. Needs pandas and pyarrow.

The upstream files are imported from the checkouts as they are; only the modules they import
and this check does not need (CARLA's traffic-event enum, dictor, requests, nuPlan's S3 and
I/O helpers, its metric dataframe) are replaced by small stand-ins. Exit status 1 on any
difference.
"""
import argparse
import enum
import glob
import importlib.util
import json
import math
import os
import sys
import tempfile
import types
from pathlib import Path


def module(name, **attrs):
    m = types.ModuleType(name)
    m.__dict__.update(attrs)
    sys.modules[name] = m
    return m


def load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    m = importlib.util.module_from_spec(spec)
    sys.modules[name] = m
    spec.loader.exec_module(m)
    return m


def check_leaderboard(run_dir, checkout):
    # scenario_runner's TrafficEventType: only the member names matter to the statistics.
    names = ["COLLISION_STATIC", "COLLISION_VEHICLE", "COLLISION_PEDESTRIAN", "ROUTE_DEVIATION",
             "ROUTE_COMPLETION", "TRAFFIC_LIGHT_INFRACTION", "STOP_INFRACTION",
             "OUTSIDE_ROUTE_LANES_INFRACTION", "VEHICLE_BLOCKED", "MIN_SPEED_INFRACTION",
             "YIELD_TO_EMERGENCY_VEHICLE", "SCENARIO_TIMEOUT"]
    for pkg in ["srunner", "srunner.scenariomanager", "leaderboard", "leaderboard.utils"]:
        module(pkg, __path__=[])
    module("srunner.scenariomanager.traffic_events",
           TrafficEventType=enum.Enum("TrafficEventType", names))

    def dictor(d, path):
        for key in path.split("."):
            d = d.get(key) if isinstance(d, dict) else None
        return d

    module("dictor", dictor=dictor)
    module("requests")
    utils = Path(checkout) / "leaderboard" / "utils"
    load("leaderboard.utils.checkpoint_tools", utils / "checkpoint_tools.py")
    sm_mod = load("leaderboard.utils.statistics_manager", utils / "statistics_manager.py")
    bad = 0
    files = sorted(glob.glob(os.path.join(run_dir, "eval", "*", "*", "carla_leaderboard.json")))
    with tempfile.TemporaryDirectory() as tmp:
        for f in files:
            ours = json.load(open(f))
            sm = sm_mod.StatisticsManager(os.path.join(tmp, "r.json"), os.path.join(tmp, "d.txt"))
            sm.add_file_records(f)
            n = len(ours["_checkpoint"]["records"])
            sm.save_progress(n, n)
            sm.compute_global_statistics()
            theirs = json.loads(json.dumps(sm._results.to_json()))  # tuples become lists
            same = all(theirs[k] == ours[k] for k in ["values", "labels", "entry_status", "eligible"])
            same &= theirs["_checkpoint"] == ours["_checkpoint"]
            bad += not same
            print(f"{f}: {'same' if same else 'DIFFERENT'} (values[:3] {theirs['values'][:3]})")
    return len(files), bad


def check_nuplan(run_dir, checkout):
    import pandas as pd

    for pkg in ["nuplan", "nuplan.common", "nuplan.common.utils", "nuplan.planning",
                "nuplan.planning.metrics", "nuplan.planning.metrics.aggregator"]:
        module(pkg, __path__=[])
    module("nuplan.common.utils.s3_utils", is_s3_path=lambda p: False)
    module("nuplan.common.utils.io_utils", safe_path_to_string=str)

    class MetricStatisticsDataFrame:
        """One metric's score per scenario: the columns the aggregator reads."""

        def __init__(self, frame):
            self.frame = frame

        @property
        def planner_names(self):
            return list(self.frame["planner_name"].unique())

        def query_scenarios(self, planner_names):
            return self.frame[self.frame["planner_name"].isin(planner_names)]

    module("nuplan.planning.metrics.metric_dataframe",
           MetricStatisticsDataFrame=MetricStatisticsDataFrame)
    agg_dir = Path(checkout) / "nuplan" / "planning" / "metrics" / "aggregator"
    load("nuplan.planning.metrics.aggregator.abstract_metric_aggregator",
         agg_dir / "abstract_metric_aggregator.py")
    agg_mod = load("nuplan.planning.metrics.aggregator.weighted_average_metric_aggregator",
                   agg_dir / "weighted_average_metric_aggregator.py")
    weights = {"ego_progress_along_expert_route": 5.0, "time_to_collision_within_bound": 5.0,
               "speed_limit_compliance": 4.0, "ego_is_comfortable": 2.0, "default": 1.0}
    multipliers = ["no_ego_at_fault_collisions", "drivable_area_compliance",
                   "ego_is_making_progress", "driving_direction_compliance"]
    bad, worst = 0, 0.0
    files = sorted(glob.glob(os.path.join(run_dir, "eval", "*", "*", "nuplan_aggregator.csv")))
    for f in files:
        ours = pd.read_csv(f)
        scenarios = ours[ours["log_name"].notna()]
        frames = {}
        for m in ours.columns[6:-1]:
            rows = scenarios[scenarios[m].notna()]
            frames[m] = MetricStatisticsDataFrame(pd.DataFrame({
                "scenario_name": rows["scenario"], "log_name": rows["log_name"],
                "scenario_type": rows["scenario_type"], "planner_name": rows["planner_name"],
                "metric_score": rows[m]}))
        with tempfile.TemporaryDirectory() as tmp:
            agg = agg_mod.WeightedAverageMetricAggregator("check", weights, "check", Path(tmp), multipliers)
            agg(frames)
            theirs = agg.aggregated_metric_dataframe
        # nuPlan has no row for a scenario without any metric value (a non-finite episode).
        ours = ours[ours["scenario"].isin(theirs["scenario"])].reset_index(drop=True)
        same = list(theirs.columns) == list(ours.columns) and list(theirs["scenario"]) == list(ours["scenario"])
        file_worst = 0.0
        for c in ours.columns[3:]:
            for x, y in zip(theirs[c], ours[c]):
                x_na, y_na = x is None or (isinstance(x, float) and math.isnan(x)), pd.isna(y)
                if x_na or y_na:
                    same &= x_na == y_na
                elif isinstance(y, str):
                    same &= str(x) == y
                else:
                    file_worst = max(file_worst, abs(float(x) - float(y)))
        same &= file_worst <= 1e-12
        worst = max(worst, file_worst)
        bad += not same
        print(f"{f}: {'same' if same else 'DIFFERENT'} (final score {theirs.iloc[-1, -1]})")
    print(f"largest numeric difference {worst}")
    return len(files), bad


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run_dir")
    p.add_argument("--leaderboard")
    p.add_argument("--nuplan")
    a = p.parse_args()
    total_files, total_bad = 0, 0
    if a.leaderboard:
        n, bad = check_leaderboard(a.run_dir, a.leaderboard)
        total_files, total_bad = total_files + n, total_bad + bad
    if a.nuplan:
        n, bad = check_nuplan(a.run_dir, a.nuplan)
        total_files, total_bad = total_files + n, total_bad + bad
    print(f"{total_files} files checked, {total_bad} different")
    sys.exit(1 if total_bad or not total_files else 0)


if __name__ == "__main__":
    main()
