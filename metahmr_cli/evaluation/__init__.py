"""Evaluation: metrics, dataset protocols, the runner behind ``metahmr eval``, and reports."""

from metahmr_cli.evaluation.facing import facing_angle, facing_class
from metahmr_cli.evaluation.metrics import (
    joint_errors,
    mpjpe,
    pa_joint_errors,
    pa_mpjpe,
    paired_difference,
    pve,
    summarize,
)
from metahmr_cli.evaluation.paper_numbers import PAPER_RESULTS, PaperResult, match_paper_result
from metahmr_cli.evaluation.people import PeopleMatch, match_people
from metahmr_cli.evaluation.protocols import EvalProtocol, make_protocol
from metahmr_cli.evaluation.reports import EvalReport, MethodResult, write_reports
from metahmr_cli.evaluation.runner import METHODS, EvalConfig, run_evaluation

__all__ = [
    "METHODS",
    "PAPER_RESULTS",
    "EvalConfig",
    "EvalProtocol",
    "EvalReport",
    "MethodResult",
    "PaperResult",
    "PeopleMatch",
    "facing_angle",
    "facing_class",
    "joint_errors",
    "make_protocol",
    "match_paper_result",
    "match_people",
    "mpjpe",
    "pa_joint_errors",
    "pa_mpjpe",
    "paired_difference",
    "pve",
    "run_evaluation",
    "summarize",
    "write_reports",
]
