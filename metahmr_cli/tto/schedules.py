"""Named TTO schedules and their defaults.

A schedule resolves to a list of phases. Every phase applies up to ``steps`` updates of one optimiser to one
weight scope, driven by one loss. Iterations are numbered across phases: iteration k evaluates the loss at the
parameters after k updates, applies update k + 1 and then runs the convergence test.

``metahmr`` (the default: the released procedure, per person)
    The refinement that produced the paper's numbers (notes 4.4), with one weight copy per person, so a
    person's result does not depend on who else shares the batch. Iteration 0: SGD lr 1e-5 on the head
    (fc1, fc2, decpose, decshape, deccam) with the full pseudo loss L_expl (2D keypoints plus the frozen
    auxiliary net's pseudo mesh), exactly the update meta-training prepares the weights for. Iterations 1..14:
    Adam (betas 0.9/0.999, eps 1e-8) lr 1e-5 on ALL weights with the unweighted L_2D. Convergence test after
    each Adam update: |L_prev - L| < 2e-5, where at iteration 1 L_prev is the iteration-0 pseudo loss (the
    released quirk). At most 1 + 14 updates. ``optimizer``, ``lr``, ``scope`` and ``max_steps`` set the Adam
    phase.
``reference`` (the released evaluation exactly)
    The same procedure with grouping "batch" and group_size 20: one weight copy per consecutive group of 20
    people with batch-reduced losses, as ``eval_cliff.py`` runs it. This reproduces the paper's tables.
``paper`` (the literal Eq. 7/9 of the paper)
    Every iteration minimises the full L_expl (the training loss form: 2D keypoints, and pose, betas,
    vertices and 3D joints against the pseudo mesh of the frozen auxiliary net, computed once), per person,
    stopping when two consecutive losses are within ``early_stop_tol`` (2e-5, the released threshold) or
    after at most M = 14 updates. Eq. 9 is a plain gradient step with the paper's test-time learning rate
    1e-5, so the default optimiser is SGD with lr 1e-5 on the head (the parameter set the released
    meta-training adapts); ``optimizer`` and ``lr`` change them, ``scope="all"`` gives all of w. Choices the
    paper leaves open, taken from the released code: the loss weights, the camera term and the
    has_smpl/has_pose_3d gates of L_expl (all ones at inference); the stop test is made after the update of
    iteration k on the losses of iterations k-1 and k (both computed before their own update), so a stopped
    person has taken the update of the iteration that passed the test; the 2D term uses the GT keypoint slots
    (``LossWeights.openpose_2d`` / ``gt_2d`` select others).
``eft`` (EFT baseline, notes 7.1)
    Adam lr 5e-6 on all weights except the BatchNorm affine parameters (EFT's ``exemplerTrainingMode`` freezes
    them), up to 20 updates, per person, on the EFT loss (see :func:`metahmr_cli.tto.eft.eft_loss`; GT hips are
    removed from L_2D unless ``TTOConfig.eft_with_hips``); stops when the masked L_2D drops below 2e-4 (EFT's test-time
    default).
``none``
    Plain regression, no update.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from metahmr_cli.errors import ConfigError
from metahmr_cli.losses import LossWeights
from metahmr_cli.tto.config import TTOConfig

LossKind = Literal["expl", "2d", "eft", "eft_hips"]

PAPER_TTO_LR = 1e-5
"""Test-time learning rate of the paper (Sec. 3.5) and of the released step-0 update (inner_lr)."""
REFERENCE_ADAM_LR = 1e-5
"""Released ``--after_innerlr`` of the README run."""
REFERENCE_MAX_ADAM_STEPS = 14
"""Released ``--test_val_step`` of the README run."""
EARLY_STOP_TOL = 2e-5
"""Released ``--adapt_val_step`` threshold on |loss_prev - loss|."""
RELEASED_PROCEDURE: tuple[str, ...] = ("metahmr", "reference")
"""Schedules that run the released two-phase procedure (they differ only in the default grouping)."""
EFT_LR = 5e-6
EFT_MAX_STEPS = 20
EFT_THRESH_2D = 2e-4


@dataclass(frozen=True)
class Phase:
    """One stretch of updates with one optimiser, scope and loss."""

    scope: str
    optimizer: str
    lr: float
    loss: LossKind
    steps: int
    freeze_norm: bool = False
    """Leave the affine parameters of BatchNorm layers out of the scope (EFT)."""


@dataclass(frozen=True)
class ResolvedSchedule:
    """A schedule with every default filled in."""

    name: str
    phases: tuple[Phase, ...]
    grouping: str
    group_size: int
    stop_rule: Literal["delta", "threshold", "none"]
    tol: float
    weights: LossWeights
    needs_aux: bool

    @property
    def max_steps(self) -> int:
        """Upper bound on the number of updates of one person."""
        return sum(p.steps for p in self.phases)

    def describe(self) -> str:
        """One line for the user: the phases with their step budgets, e.g. ``eft: up to 20 adam steps on all
        weights (eft loss), per person``."""
        if not self.phases:
            return f"{self.name}: the regression alone (no test-time optimisation)"
        parts = [f"{'1' if p.steps == 1 else f'up to {p.steps}'} {p.optimizer} step{'s' if p.steps != 1 else ''} on "
                 f"{'all weights' if p.scope == 'all' else f'the {p.scope}'.replace('_', ' ')} ({p.loss} loss)"
                 for p in self.phases]
        who = "per person" if self.grouping == "person" else f"one weight copy per batch of {self.group_size}"
        return f"{self.name}: {', then '.join(parts)}, {who}"

    @property
    def released_procedure(self) -> bool:
        """The two-phase released procedure (``metahmr`` and ``reference``): step 0 SGD, then Adam."""
        return self.name in RELEASED_PROCEDURE

    @property
    def max_iterations(self) -> int:
        """Length of the per-person loss record (``max_steps + 1`` of the config)."""
        return self.max_steps if self.released_procedure else self.max_steps + 1

    @property
    def scopes(self) -> tuple[str, ...]:
        """Scopes of all phases, widest first."""
        order = {"all": 0, "last_stage": 1, "head": 2}
        return tuple(sorted({p.scope for p in self.phases}, key=order.__getitem__))


def resolve_schedule(config: TTOConfig) -> ResolvedSchedule:
    """Fill the ``None`` fields of ``config`` with the defaults of its schedule.

    Returns:
        the resolved schedule; raises :class:`ConfigError` for invalid settings.
    """
    config.validate()
    name = config.schedule
    weights = config.loss_weights if config.loss_weights is not None else LossWeights()
    stop_rule: Literal["delta", "threshold", "none"]
    if name == "none":
        return ResolvedSchedule(name, (), "person", config.group_size, "none", 0.0, weights, False)
    if name == "paper":
        steps = 14 if config.max_steps is None else config.max_steps
        phases = (
            Phase(
                scope=config.scope or "head",
                optimizer=config.optimizer or "sgd",
                lr=PAPER_TTO_LR if config.lr is None else config.lr,
                loss="expl",
                steps=steps,
            ),
        )
        stop_rule, tol, grouping, needs_aux = "delta", EARLY_STOP_TOL, config.grouping or "person", True
    elif name in RELEASED_PROCEDURE:
        steps = REFERENCE_MAX_ADAM_STEPS if config.max_steps is None else config.max_steps
        phases = (
            Phase(scope="head", optimizer="sgd", lr=PAPER_TTO_LR, loss="expl", steps=1),
            Phase(
                scope=config.scope or "all",
                optimizer=config.optimizer or "adam",
                lr=REFERENCE_ADAM_LR if config.lr is None else config.lr,
                loss="2d",
                steps=steps,
            ),
        )
        default_grouping = "batch" if name == "reference" else "person"
        stop_rule, tol, grouping, needs_aux = "delta", EARLY_STOP_TOL, config.grouping or default_grouping, True
    elif name == "eft":
        steps = EFT_MAX_STEPS if config.max_steps is None else config.max_steps
        phases = (
            Phase(
                scope=config.scope or "all",
                optimizer=config.optimizer or "adam",
                lr=EFT_LR if config.lr is None else config.lr,
                loss="eft_hips" if config.eft_with_hips else "eft",
                steps=steps,
                freeze_norm=True,
            ),
        )
        stop_rule, tol, grouping, needs_aux = "threshold", EFT_THRESH_2D, config.grouping or "person", False
    else:  # pragma: no cover - validate() rejects it
        raise ConfigError(f"unknown TTO schedule {name!r}")
    if config.early_stop_tol is not None:
        tol = config.early_stop_tol
    if not config.early_stop:
        stop_rule = "none"
    phases = tuple(p for p in phases if p.steps > 0)
    return ResolvedSchedule(name, phases, grouping, config.group_size, stop_rule, tol, weights, needs_aux)
