"""How the TTO engine executes a schedule: the strategy of each phase, chunk sizes from a memory budget, and the
device settings (TF32, bf16 autocast of the backbone, ``torch.compile``).

Strategies (a unit is one person, or one group of people sharing a weight copy; results do not depend on the
strategy beyond float32 rounding, see ``tests/test_tto_strategies.py``):

``vmap``
    All units of a chunk run at once: ``torch.func.vmap(functional_call)`` over the stacked weights (G, ...)
    and one ``autograd.grad`` of the sum of the unit losses. On a GPU this is one batched kernel per layer. On a
    CPU, vmap turns a convolution whose weights differ per unit into a grouped convolution (its backward is
    several times slower there than G single-person convolutions) and a linear layer into a batched matmul.
``loop``
    The units run one after another, each with a plain ``functional_call`` on its own slice of the stacked
    weights and its own ``autograd.grad``: the kernels of a single-person forward (those of the deep-copy loop)
    and only one unit's activations alive at a time. A unit that has stopped is not run again.

``auto`` (:func:`choose_strategy`) picks, per phase: ``vmap`` on GPUs; on a CPU ``loop`` when the phase adapts
a convolution or a large weight matrix (the released heads' fc1/fc2), ``vmap`` otherwise (the open keypoint
model); a run with a single unit loops (vmap over one unit only adds overhead). A phase that adapts only the
head while the backbone still has its own weights (the released step-0 update) runs the head alone, on backbone
features computed once per chunk, whatever the strategy.

Optimiser updates: on a CPU every unit is updated in place, one unit and one tensor at a time
(:class:`metahmr_cli.tto.optim.UnitwiseOptimizer`), which keeps the working set in cache and allocates nothing
per step (a stacked update of ResNet-50's weights measured 5x slower per unit there); elsewhere the stacked
optimisers update all units with a few large kernels. Both use ``torch.optim``'s formulas, in the same order,
and give the same bits.

Order of work: when every phase loops, each unit runs its whole schedule before the next unit starts (only one
unit's weights and optimiser state exist at a time, as in the deep-copy loop; the chunk shares one batched
feature pass). Otherwise a chunk advances step by step, all its units together, with one host sync per step (the
batched early-stop test).

Chunk size (units optimised at once, :func:`plan_chunk`)::

    units = clamp(floor((budget - fixed) / per_unit), 1, cap)
    per_unit = I + k_unit · W + A · [vmap phase]        fixed = k_fixed · W + A · [loop phase]

W: bytes of one unit's adapted weights (the union of the phases' scopes); A: activation bytes of one unit's
forward and backward (2 x the bytes autograd saves in a probe forward of one unit, :func:`probe_activation_bytes`;
the factor covers the gradients of the activations alive during the backward); I: bytes of one unit's inputs and
of the predictions kept for it. With a = 1 when a phase uses Adam (its two moment buffers), else 0:

    order        update     strategy   k_unit (held per unit)                         k_fixed (one unit at a time)
    unit-major   in place   loop       0                                              weights 1 + moments 2a +
                                                                                      gradient 1
    unit-major   stacked    loop       0                                              weights 1 + moments 2a +
                                                                                      gradient 1 + proposal 1 + 2a
    step-major   stacked    any        weights 1 + moments 2a + gradient 1 +          0
                                       proposal 1 + 2a
    step-major   in place   vmap       weights 1 + moments 2a + gradient 1            0
    step-major   in place   loop       weights 1 + moments 2a                         gradient 1

The largest per_unit and fixed over the phases are used. ``cap`` = ``TTOConfig.chunk_size`` (people) divided
by the people per unit. The budget defaults to :func:`default_memory_budget`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)

Strategy = Literal["vmap", "loop"]
STRATEGIES: tuple[str, ...] = ("auto", "vmap", "loop")

CPU_BUDGET_FRACTION = 0.25
"""Default CPU budget: this share of the memory the kernel reports available (MemAvailable)."""
CPU_BUDGET_FALLBACK = 4 * 2**30
"""Default CPU budget when the available memory cannot be read."""
CUDA_BUDGET_FRACTION = 0.6
"""Default GPU budget: this share of the device memory that is free (including PyTorch's cached blocks)."""
ACTIVATION_FACTOR = 2.0
"""Activation bytes of one unit = this x the bytes autograd saves in its forward (see :func:`plan_chunk`)."""
REGRESSION_BATCH = 64
"""People per no-grad regression / feature batch when ``TTOConfig.chunk_size`` sets no cap."""


# ------------------------------------------------------------------------------------------------ strategy


LOOP_MATRIX_ELEMENTS = 2**19
"""CPU rule: a phase that adapts a weight tensor of at least this many elements (2 MiB in float32, about a core's
L2 cache) runs as a loop. vmap turns such a linear layer into a batched matmul over per-unit weights, measured
1.5-1.8x slower on a CPU than the same matrix-vector products unit by unit (fc1 2208x1024 and fc2 1024x1024 of
the released heads); for smaller weights (the open kpnet model: at most 512x544) vmap's batching of the body model
and of the Python overhead wins."""


def adapted_convolutions(main: nn.Module, names: list[str] | tuple[str, ...]) -> bool:
    """True when ``names`` (parameter names of ``main``) include the weight of a convolution."""
    wanted = set(names)
    for mod_name, mod in main.named_modules():
        if isinstance(mod, nn.modules.conv._ConvNd):
            for p_name, _ in mod.named_parameters(recurse=False):
                if (f"{mod_name}.{p_name}" if mod_name else p_name) in wanted:
                    return True
    return False


def choose_strategy(setting: str, device: torch.device, main: nn.Module, names: list[str]) -> Strategy:
    """The strategy of one phase.

    Args:
        setting: ``TTOConfig.strategy`` ("auto", "vmap" or "loop"; the last two are returned as they are).
        device: where the chunk runs; main: the network; names: the parameters the phase adapts.
    Returns:
        "auto": "vmap" on GPUs (and other accelerators); on a CPU "loop" when the phase adapts a convolution
        weight or a weight tensor of at least :data:`LOOP_MATRIX_ELEMENTS` elements, else "vmap".
    """
    if setting in ("vmap", "loop"):
        return setting  # type: ignore[return-value]
    if device.type != "cpu":
        return "vmap"
    named = dict(main.named_parameters())
    largest = max((named[n].numel() for n in names if n in named), default=0)
    return "loop" if adapted_convolutions(main, names) or largest >= LOOP_MATRIX_ELEMENTS else "vmap"


# ------------------------------------------------------------------------------------------------ memory


def _cpu_available_bytes() -> int | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import psutil  # optional
    except ImportError:
        return None
    return int(psutil.virtual_memory().available)


def default_memory_budget(device: torch.device) -> int:
    """Bytes the engine may use for one chunk when ``TTOConfig.memory_budget`` is None.

    CUDA: 60 % of the free device memory (free as reported by the driver plus PyTorch's cached, unused blocks).
    CPU: 25 % of MemAvailable (4 GiB when it cannot be read).
    """
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(CUDA_BUDGET_FRACTION * (free + cached))
    avail = _cpu_available_bytes()
    return int(CPU_BUDGET_FRACTION * avail) if avail else CPU_BUDGET_FALLBACK


@dataclass(frozen=True)
class ChunkPlan:
    """How many units one chunk holds, and the numbers behind it (bytes)."""

    units: int
    budget: int
    weight_bytes: int  # W
    activation_bytes: int  # A (max over phases)
    per_unit_bytes: int
    fixed_bytes: int
    io_bytes: int  # I
    unit_major: bool


def state_factors(strategy: Strategy, unitwise: bool, adam: bool, unit_major: bool = False) -> tuple[int, int]:
    """(k_unit, k_fixed) of the table in the module docstring."""
    a = 1 if adam else 0
    if unit_major:
        return 0, (2 + 2 * a) if unitwise else (3 + 4 * a)
    if not unitwise:
        return 3 + 4 * a, 0
    if strategy == "vmap":
        return 2 + 2 * a, 0
    return 1 + 2 * a, 1


def plan_chunk(
    *,
    num_units: int,
    people_per_unit: int,
    weight_bytes: int,
    phases: list[tuple[Strategy, int]],
    unitwise: bool,
    adam: bool,
    budget: int,
    cap_people: int | None,
    unit_major: bool = False,
    io_bytes: int = 0,
) -> ChunkPlan:
    """Units per chunk from a memory budget (formula in the module docstring).

    Args:
        num_units: units to optimise (the result never exceeds it).
        people_per_unit: n (1 for per-person TTO).
        weight_bytes: W, bytes of one unit's adapted weights.
        phases: (strategy, activation bytes A of one unit) per phase.
        unitwise: the in-place per-unit optimiser (CPU) instead of the stacked one.
        adam: a phase uses Adam (two moment buffers per weight).
        budget: bytes available; cap_people: most people per chunk (None: no cap).
        unit_major: every phase loops and units run one after another through the whole schedule.
        io_bytes: I, bytes of one unit's inputs and kept predictions (what a unit costs when unit_major).
    """
    per_unit = io_bytes
    fixed = 0
    act_max = 0
    for strategy, act in phases:
        k_unit, k_fixed = state_factors(strategy, unitwise, adam, unit_major)
        looped = strategy == "loop"
        per_unit = max(per_unit, io_bytes + k_unit * weight_bytes + (0 if looped else act))
        fixed = max(fixed, k_fixed * weight_bytes + (act if looped else 0))
        act_max = max(act_max, act)
    cap = num_units if cap_people is None else max(1, cap_people // people_per_unit)
    fit = (budget - fixed) // per_unit if per_unit > 0 else num_units
    units = int(max(1, min(fit, cap, num_units)))
    return ChunkPlan(units, int(budget), int(weight_bytes), int(act_max), int(per_unit), int(fixed), int(io_bytes),
                     unit_major)


_PROBES: weakref.WeakKeyDictionary[nn.Module, dict[Any, int]] = weakref.WeakKeyDictionary()


def probe_activation_bytes(main: nn.Module, key: Any, run: Callable[[], Any], exclude: list[Tensor]) -> int:
    """A = ``ACTIVATION_FACTOR`` x the bytes autograd saves while ``run()`` (one unit's forward) executes.

    Tensors sharing storage with ``exclude`` (the weights, counted separately) and repeated storages count once
    or not at all. The result is cached per network and ``key`` (shapes, scope, dtype, device), so the probe
    forward runs once per configuration.
    """
    cache = _PROBES.setdefault(main, {})
    if key in cache:
        return cache[key]
    seen: set[int] = set()
    skip = {t.untyped_storage().data_ptr() for t in exclude}
    total = 0

    def pack(t: Tensor) -> Tensor:
        nonlocal total
        try:
            storage = t.untyped_storage()
            ptr = storage.data_ptr()
        except (RuntimeError, NotImplementedError):  # tensors without storage (functorch wrappers)
            total += t.numel() * t.element_size()
            return t
        if ptr not in seen and ptr not in skip:
            seen.add(ptr)
            total += storage.nbytes()
        return t

    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        run()
    cache[key] = int(ACTIVATION_FACTOR * total)
    return cache[key]


# ------------------------------------------------------------------------------------------------ device


@contextlib.contextmanager
def tf32_mode(enabled: bool, device: torch.device) -> Iterator[None]:
    """TF32 for CUDA matmuls and cuDNN convolutions on (``enabled``) or off, restored afterwards.

    Off is full float32 (PyTorch leaves cuDNN's TF32 on by default; TTO turns it off unless asked). No effect on
    other devices.
    """
    if device.type != "cuda":
        yield
        return
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul
        torch.backends.cudnn.allow_tf32 = cudnn


@contextlib.contextmanager
def backbone_autocast(main: nn.Module, enabled: bool, device: torch.device) -> Iterator[None]:
    """Run ``main.backbone`` under bf16 autocast (its output cast back to float32); the head, body model and
    losses stay in float32. Implemented with forward hooks, removed on exit."""
    backbone = getattr(main, "backbone", None)
    if not enabled or backbone is None:
        yield
        return
    contexts: list[torch.autocast] = []

    def enter(_mod: nn.Module, _args: Any) -> None:
        ctx = torch.autocast(device.type, dtype=torch.bfloat16)
        ctx.__enter__()
        contexts.append(ctx)

    def leave(_mod: nn.Module, _args: Any, out: Any) -> Any:
        contexts.pop().__exit__(None, None, None)
        return out.float() if isinstance(out, Tensor) else out

    handles = [backbone.register_forward_pre_hook(enter), backbone.register_forward_hook(leave)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
        while contexts:  # a forward that raised inside the backbone
            contexts.pop().__exit__(None, None, None)


def pin(t: Tensor) -> Tensor:
    """Page-locked copy of a CPU tensor (so a following ``.to(cuda, non_blocking=True)`` is asynchronous)."""
    if t.device.type != "cpu" or not torch.cuda.is_available():
        return t
    try:
        return t.pin_memory()
    except RuntimeError:  # no driver / pinning refused: a plain (synchronous) copy still works
        return t


def to_device(t: Tensor, device: torch.device) -> Tensor:
    """``t`` on ``device``; CPU -> CUDA copies go through pinned memory without blocking the host."""
    if t.device == device:
        return t
    if t.device.type == "cpu" and device.type == "cuda":
        return pin(t).to(device, non_blocking=True)
    return t.to(device)


# ------------------------------------------------------------------------------------------------ compile


_COMPILE_FAILED: set[Any] = set()


def compiled_or_eager(key: Any, fn: Callable[..., Any], enabled: bool) -> Callable[..., Any]:
    """``torch.compile(fn)`` that falls back to ``fn`` (with one warning) when compiling or running it fails.

    A key that failed once is not compiled again in this process.
    """
    if not enabled or key in _COMPILE_FAILED or os.environ.get("METAHMR_NO_COMPILE"):
        return fn
    try:
        # fullgraph: a graph break inside vmap(grad) would run the whole step eagerly anyway; fail and fall back
        compiled = torch.compile(fn, dynamic=False, fullgraph=True)
    except Exception as exc:  # pragma: no cover - depends on the installation
        log.warning("TTO: torch.compile unavailable (%s); running eagerly", exc)
        _COMPILE_FAILED.add(key)
        return fn
    state = {"ok": True}

    def call(*args: Any, **kwargs: Any) -> Any:
        if state["ok"]:
            try:
                return compiled(*args, **kwargs)
            except Exception as exc:
                state["ok"] = False
                _COMPILE_FAILED.add(key)
                log.warning("TTO: the compiled step failed (%s: %s); falling back to eager execution",
                            type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
        return fn(*args, **kwargs)

    return call


__all__ = [
    "ACTIVATION_FACTOR", "CPU_BUDGET_FRACTION", "CUDA_BUDGET_FRACTION", "LOOP_MATRIX_ELEMENTS", "ChunkPlan",
    "REGRESSION_BATCH",
    "STRATEGIES", "Strategy", "adapted_convolutions", "backbone_autocast", "choose_strategy", "compiled_or_eager",
    "default_memory_budget", "pin", "plan_chunk", "probe_activation_bytes", "state_factors", "tf32_mode",
    "to_device",
]
