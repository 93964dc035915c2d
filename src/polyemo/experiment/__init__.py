"""Experiments and benchmarks from one YAML file.

:func:`run_experiment` runs one experiment (:class:`ExperimentConfig`) into a run folder and
returns a :class:`RunResult`; :func:`run_bench` runs a grid of experiments
(:class:`BenchConfig`) with a leaderboard and cross-corpus heatmaps. Both resume after an
interruption.
"""

from polyemo.experiment.bench import BenchConfig, BenchResult, load_bench, run_bench
from polyemo.experiment.config import ConfigError, ExperimentConfig, load_experiment
from polyemo.experiment.errors import ExperimentError
from polyemo.experiment.results import RunResult
from polyemo.experiment.run import run_experiment

__all__ = ["BenchConfig", "BenchResult", "load_bench", "run_bench", "ConfigError", "ExperimentConfig", "ExperimentError", "RunResult", "load_experiment", "run_experiment"]
