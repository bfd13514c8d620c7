"""The inner loop: the adaptation a Meta-HMR network is meta-trained for and starts its test-time optimisation with.

One settings object shared by training (:mod:`metahmr_cli.training`), test-time optimisation (:mod:`metahmr_cli.tto`)
and checkpoints (:mod:`metahmr_cli.models.checkpoints`, which record it); it depends on nothing of theirs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from metahmr_cli.errors import ConfigError

OPTIMIZERS: tuple[str, ...] = ("sgd", "adam")
SCOPES: tuple[str, ...] = ("head", "last_stage", "all")
INNER_LOSSES: tuple[str, ...] = ("expl", "2d")

PAPER_TTO_LR = 1e-5
"""Test-time learning rate of the paper (Sec. 3.5) and of the released step-0 update (inner_lr)."""


@dataclass(frozen=True)
class InnerLoop:
    """The adaptation a Meta-HMR network is meta-trained for: one object for training and test time.

    Meta-training adapts the weights of every unit (a sample or a group of samples) with ``steps`` updates of
    ``optimizer`` (a fresh state per unit, learning rate ``lr``) on the ``scope`` weights, driven by ``loss``
    ("expl": L_expl, the 2D keypoints plus the auxiliary net's pseudo mesh; "2d": the 2D keypoints alone, for a
    network trained without the auxiliary net), and evaluates the outer loss at the adapted weights (first order).
    At test time the ``metahmr`` and ``reference`` schedules start with exactly these updates (then refine with
    Adam on the 2D loss), and ``paper`` repeats them. Checkpoints written by ``metahmr train`` record the inner loop
    (:meth:`to_record`), and ``process`` / ``eval`` run the network's own; files without a record (the Meta-HMR
    releases) get the released one, the defaults here: one SGD step, lr 1e-5, on the head, with L_expl.
    """

    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = PAPER_TTO_LR
    steps: int = 1
    scope: Literal["head", "last_stage", "all"] = "head"
    loss: Literal["expl", "2d"] = "expl"

    def validate(self, what: str = "inner_loop") -> None:
        """Raise :class:`ConfigError` naming the bad field (``what`` names the object in the message)."""
        for name, value, valid in (("optimizer", self.optimizer, OPTIMIZERS), ("scope", self.scope, SCOPES),
                                   ("loss", self.loss, INNER_LOSSES)):
            if value not in valid:
                raise ConfigError(f"{what}.{name} = {value!r} is not valid; choose one of {', '.join(valid)}.")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ConfigError(f"{what}.steps must be an integer >= 1, got {self.steps!r}.")
        if isinstance(self.lr, bool) or not isinstance(self.lr, int | float) or not float(self.lr) >= 0:
            raise ConfigError(f"{what}.lr must be a number >= 0, got {self.lr!r}.")

    def to_record(self) -> dict[str, Any]:
        """Plain values for a checkpoint entry (weights-only loadable)."""
        return {k: (float(v) if k == "lr" else v) for k, v in asdict(self).items()}

    @classmethod
    def from_record(cls, record: Any, source: str = "checkpoint") -> InnerLoop:
        """The inner loop of a checkpoint's ``inner_loop`` entry; raises :class:`ConfigError` naming ``source``
        when the entry is malformed."""
        if not isinstance(record, Mapping):
            raise ConfigError(f"{source}: 'inner_loop' must be a table of {', '.join(f.name for f in fields(cls))}, "
                              f"got {type(record).__name__}.")
        unknown = sorted(set(record) - {f.name for f in fields(cls)})
        if unknown:
            raise ConfigError(f"{source}: unknown 'inner_loop' entries {unknown}; valid: "
                              f"{', '.join(f.name for f in fields(cls))}.")
        inner = cls(**dict(record))
        inner.validate(f"{source}: inner_loop")
        return inner
