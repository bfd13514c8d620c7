"""Named TTO schedules and their defaults.

A schedule resolves to a list of phases. Every phase applies up to ``steps`` updates of one optimiser to one
weight scope, driven by one loss. Iterations are numbered across phases: iteration k evaluates the loss at the
parameters after k updates, applies update k + 1 and then runs the convergence test.

``metahmr`` (the default: the released procedure, per person)
    The refinement that produced the paper's numbers (notes 4.4), with one weight copy per person, so a
    person's result does not depend on who else shares the batch. Iteration 0: SGD lr 1e-5 on the head
    (fc1, fc2, decpose, decshape, deccam) with the full pseudo loss L_expl (2D keypoints plus the frozen
    auxiliary net's pseudo mesh), exactly the update meta-training prepares the weights for: the network's
    :class:`InnerLoop` (recorded in checkpoints metahmr trains; the released one otherwise), whose optimiser,
    learning rate, number of updates, scope and loss the training inner loop used. Iterations 1..14:
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
    meta-training adapts; a network trained with another :class:`InnerLoop` repeats its own inner update: its
    optimiser, learning rate, scope and loss); ``optimizer`` and ``lr`` change them, ``scope="all"`` gives all of
    w. Choices the
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
from metahmr_cli.tto.config import PAPER_TTO_LR, InnerLoop, TTOConfig

LossKind = Literal["expl", "2d", "eft", "eft_hips"]

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
    stop_test: bool = True
    """Run the convergence test after this phase's updates (off for the inner-loop updates, which training
    always takes in full)."""


def inner_phase(inner: InnerLoop, steps: int | None = None) -> Phase:
    """The phase of the test-time schedules that repeats meta-training's inner loop: ``inner.steps`` updates (or
    ``steps``) of the same optimiser, learning rate, scope and loss (``"expl"``: L_expl, ``"2d"``: L_2D)."""
    inner.validate()
    return Phase(scope=inner.scope, optimizer=inner.optimizer, lr=float(inner.lr), loss=inner.loss,
                 steps=inner.steps if steps is None else int(steps), stop_test=False)


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
    inner = config.inner_loop if config.inner_loop is not None else InnerLoop(lr=PAPER_TTO_LR)
    if name == "paper":
        steps = 14 if config.max_steps is None else config.max_steps
        phases = (
            Phase(
                scope=config.scope or inner.scope,
                optimizer=config.optimizer or inner.optimizer,
                lr=float(inner.lr) if config.lr is None else config.lr,
                loss=inner.loss,
                steps=steps,
            ),
        )
        stop_rule, tol, grouping = "delta", EARLY_STOP_TOL, config.grouping or "person"
    elif name in RELEASED_PROCEDURE:
        steps = REFERENCE_MAX_ADAM_STEPS if config.max_steps is None else config.max_steps
        phases = (
            inner_phase(inner),
            Phase(
                scope=config.scope or "all",
                optimizer=config.optimizer or "adam",
                lr=REFERENCE_ADAM_LR if config.lr is None else config.lr,
                loss="2d",
                steps=steps,
            ),
        )
        default_grouping = "batch" if name == "reference" else "person"
        stop_rule, tol, grouping = "delta", EARLY_STOP_TOL, config.grouping or default_grouping
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
        stop_rule, tol, grouping = "threshold", EFT_THRESH_2D, config.grouping or "person"
    else:  # pragma: no cover - validate() rejects it
        raise ConfigError(f"unknown TTO schedule {name!r}")
    if config.early_stop_tol is not None:
        tol = config.early_stop_tol
    if not config.early_stop:
        stop_rule = "none"
    # the pseudo mesh is needed by the phases that minimise L_expl (a network meta-trained without the auxiliary
    # net repeats its 2D-only inner loop and needs none)
    needs_aux = any(p.loss == "expl" for p in phases)
    phases = tuple(p for p in phases if p.steps > 0)
    return ResolvedSchedule(name, phases, grouping, config.group_size, stop_rule, tol, weights, needs_aux)
