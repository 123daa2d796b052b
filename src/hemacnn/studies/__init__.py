"""Studies: a grid of run configs (a study file) run as ordinary run folders, then summarised.

``load_study`` reads and checks a study file, ``expand_points`` turns it into validated points,
``run_study`` runs the points through an Optuna storage (each exactly once, resumable, several
workers or machines), ``write_summary`` tabulates and plots the finished run folders.
"""

from hemacnn.studies.runner import RunPoint, run_points
from hemacnn.studies.spec import Point, StudySpec, expand_points, load_study
from hemacnn.studies.summary import write_summary
from hemacnn.studies.sweep import run_study, sweep_report

__all__ = ["Point", "RunPoint", "StudySpec", "expand_points", "load_study", "run_points",
           "run_study", "sweep_report", "write_summary"]
