"""Every request's intervention state and settings as tensors over an engine's batch slots.

`SlotTable` is the storage of `l2ray.decode.core.PolicyCore`: one row per slot in an int64 table
(`Col` names its columns: the state `RequestPolicy` keeps in attributes, then the settings its
`PolicySpec` fixes), a float row of tag biases, a row of ``ignore_str`` token ids and a row of
thinking tokens per language. A request's row is written once when it enters a slot: `admit` stages
it on the host and `flush` writes every staged row to the device in one copy per tensor, so
admissions cost no device work between flushes. A host-side mirror of what each slot needs
(`needs`) lets a step skip the passes no row in the batch uses without asking the device.

Slots move (vLLM V1's persistent batch condenses and swaps rows): `move`; a request that leaves a
slot and comes back (preemption) takes its state along: `park` / `restore`.

Example:
    >>> from l2ray.recipe import InterventionConfig
    >>> table = SlotTable(languages=2)
    >>> table.admit(3, PolicySpec(InterventionConfig(max_thinking_tokens=5)))
    >>> table.flush()
    >>> int(table.table[3, Col.BUDGET]), table.needs(slice(0, 4)).budget
    (5, True)
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np
import torch

from l2ray.decode.spec import DRAW_SPACE, PolicySpec

NONE = -1
"""A column's "not set" (no language yet, no forced language, no switch limit)."""
NO_BUDGET = 1 << 62
"""The thinking budget of a request without one (so "spent" is one comparison)."""


class Status(IntEnum):
    """Where a slot's request is (`Col.STATUS`)."""

    EMPTY = 0
    THINKING = 1
    ANSWERING = 2
    DONE = 3


class Col(IntEnum):
    """Columns of `SlotTable.table`: state first (it changes every step), then settings. STATUS and the
    two token counters are adjacent: one step's transition adds to all three at once."""

    STATUS = 0
    THINKING_TOKENS = 1
    ANSWER_TOKENS = 2
    LANGUAGE = 3
    SWITCHES = 4
    IGNORES_LEFT = 5
    QUEUE_POS = 6  # the next forced token of ignore_str; the queue is empty at IGNORE_LEN
    DRAWS_SPENT = 7  # counted where some row of the batch draws a fractional alpha (else never read)
    CONSUMED = 8  # tokens of the slot's sequence observed (Model Runner V2 reads its token history)
    FORCE = 9
    MAX_SWITCHES = 10
    BUDGET = 11
    TOP_K = 12
    DRAWS = 13
    THRESHOLD = 14
    KEY = 15
    IGNORE_LEN = 16
    EACH_TAG = 17


@dataclass(frozen=True)
class Needs:
    """Which parts of a step the slots of a batch need (read on the host, no device sync)."""

    switch: bool = False
    """boost/suppress: the switch-point test."""
    force: bool = False
    limit: bool = False
    """max_switches (so languages must be tracked)."""
    budget: bool = False
    ignore: bool = False
    each_tag: bool = False
    fractional: bool = False
    """a probability alpha strictly between 0 and 1 (so the draws must be computed)."""
    top_k: int = 1

    @property
    def tags(self) -> bool:
        return self.switch or self.force or self.limit

    @property
    def any(self) -> bool:
        return self.tags or self.budget


@dataclass
class Parked:
    """A slot's rows taken out while its request is away (clones, on the device)."""

    table: torch.Tensor
    bias: torch.Tensor
    ignore: torch.Tensor
    langs: torch.Tensor
    flags: np.ndarray


class SlotTable:
    """The tensors over slots (see the module doc); grows when a slot past its end is admitted.

    Args:
        languages: how many language tags the model has (the width of the per-language rows).
        device: where the tensors live (the logits' device).
        slots: initial number of slots.
    """

    FLAGS = ("active", "switch", "force", "limit", "budget", "ignore", "each_tag", "fractional", "top_k")

    def __init__(self, languages: int, device: torch.device | str = "cpu", slots: int = 0) -> None:
        self.languages = languages
        self.device = torch.device(device)
        self.table = torch.zeros((0, len(Col)), dtype=torch.long, device=self.device)
        self.bias = torch.zeros((0, languages), dtype=torch.float32, device=self.device)
        self.ignore = torch.zeros((0, 1), dtype=torch.long, device=self.device)
        self.langs = torch.zeros((0, languages), dtype=torch.long, device=self.device)
        self.flags = np.zeros((0, len(self.FLAGS)), dtype=np.int64)
        self._staged: dict[int, tuple[np.ndarray, np.ndarray, list[int]]] = {}
        self.grow(slots)

    @property
    def size(self) -> int:
        return self.table.shape[0]

    def admit(
        self,
        slot: int,
        spec: PolicySpec,
        bias: list[float] | None = None,
        force: int = NONE,
        consumed: int = 0,
    ) -> None:
        """Stage a fresh request's row for ``slot``: ``bias`` is its switch bias per language column,
        ``force`` the column of its forced language, ``consumed`` the tokens of its sequence already
        accounted for (its prompt, where the engine keeps prompt and output in one history)."""
        self.grow(slot + 1)
        row = _fresh_row(spec, consumed)
        row[Col.FORCE] = force
        self._staged[slot] = (row, np.asarray(bias or [0.0] * self.languages), list(spec.ignore_ids))
        self.flags[slot] = _flags_of(spec)

    def release(self, slot: int) -> None:
        """The slot no longer holds a request of ours (its rows stay until the next admission)."""
        if slot < self.size:
            self._staged.pop(slot, None)
            self.flags[slot] = 0
            self.table[slot, Col.STATUS] = Status.EMPTY

    def flush(self) -> None:
        """Write every staged row to the device: one host-to-device copy per tensor."""
        if not self._staged:
            return
        slots = sorted(self._staged)
        width = max(len(self._staged[s][2]) for s in slots)
        self._widen(width)
        ignore = np.zeros((len(slots), self.ignore.shape[1]), dtype=np.int64)
        for row, slot in enumerate(slots):
            ids = self._staged[slot][2]
            ignore[row, : len(ids)] = ids
        index = _to(np.asarray(slots), self.device)
        self.table.index_copy_(0, index, _to(np.stack([self._staged[s][0] for s in slots]), self.device))
        bias = np.stack([self._staged[s][1] for s in slots]).astype(np.float32)
        self.bias.index_copy_(0, index, _to(bias.reshape(len(slots), self.languages), self.device))
        self.ignore.index_copy_(0, index, _to(ignore, self.device))
        self.langs.index_fill_(0, index, 0)
        self._staged.clear()

    def needs(self, slots: slice | np.ndarray) -> Needs:
        """What the slots of a batch need, from the host mirror."""
        flags = self.flags[slots]
        flags = flags[flags[:, 0] == 1]
        if not len(flags):
            return Needs()
        wanted = flags[:, 1:-1].any(axis=0)
        return Needs(*(bool(w) for w in wanted), top_k=int(flags[:, -1].max()))

    def park(self, slot: int) -> Parked:
        """A copy of ``slot``'s rows, to `restore` when its request comes back."""
        self.flush()
        return Parked(
            self.table[slot].clone(),
            self.bias[slot].clone(),
            self.ignore[slot].clone(),
            self.langs[slot].clone(),
            self.flags[slot].copy(),
        )

    def restore(self, slot: int, parked: Parked) -> None:
        """Put a parked request's rows into ``slot`` (it may be another slot than it left)."""
        self.grow(slot + 1)
        self._staged.pop(slot, None)
        self._widen(parked.ignore.shape[0])
        self.table[slot] = parked.table
        self.bias[slot] = parked.bias
        self.ignore[slot].zero_()
        self.ignore[slot, : parked.ignore.shape[0]] = parked.ignore
        self.langs[slot] = parked.langs
        self.flags[slot] = parked.flags

    def move(self, source: int, target: int, swap: bool) -> None:
        """vLLM V1's batch moves: ``source``'s rows go to ``target`` (and ``target``'s back when ``swap``)."""
        self.flush()
        self.grow(max(source, target) + 1)
        pair = [source, target]
        order = [target, source] if swap else [source, source]
        for tensor in (self.table, self.bias, self.ignore, self.langs):
            tensor[pair] = tensor[order].clone()
        self.flags[pair] = self.flags[order].copy()
        if not swap:
            self.release(source)

    def grow(self, slots: int) -> None:
        """Make room for at least ``slots`` slots (doubling, so growth is rare)."""
        if slots <= self.size:
            return
        extra = max(slots, 2 * self.size) - self.size
        self.table = _padded(self.table, extra)
        self.bias = _padded(self.bias, extra)
        self.ignore = _padded(self.ignore, extra)
        self.langs = _padded(self.langs, extra)
        self.flags = np.concatenate([self.flags, np.zeros((extra, len(self.FLAGS)), dtype=np.int64)])

    def _widen(self, width: int) -> None:
        if width > self.ignore.shape[1]:
            wider = torch.zeros((self.size, width), dtype=torch.long, device=self.device)
            wider[:, : self.ignore.shape[1]] = self.ignore
            self.ignore = wider


def _fresh_row(spec: PolicySpec, consumed: int) -> np.ndarray:
    """A request's row as it enters: the settings from its spec, the state as `RequestPolicy` starts."""
    config = spec.config
    row = np.zeros(len(Col), dtype=np.int64)
    row[Col.STATUS] = Status.THINKING if spec.thinking else Status.ANSWERING
    row[Col.LANGUAGE] = NONE
    row[Col.IGNORES_LEFT] = config.num_ignore
    row[[Col.QUEUE_POS, Col.IGNORE_LEN]] = len(spec.ignore_ids)
    row[Col.CONSUMED] = consumed
    row[Col.MAX_SWITCHES] = NONE if config.max_switches is None else config.max_switches
    row[Col.BUDGET] = NO_BUDGET if config.max_thinking_tokens is None else config.max_thinking_tokens
    row[Col.TOP_K] = config.top_k
    row[Col.EACH_TAG] = int(config.top_k_rule == "each_tag")
    row[Col.DRAWS] = int(spec.draws)
    row[Col.THRESHOLD] = spec.alpha_threshold
    row[Col.KEY] = spec.draw_key
    return row


def _flags_of(spec: PolicySpec) -> list[int]:
    """The host mirror's row: active, then what the request needs (`Needs`' fields in order)."""
    config = spec.config
    switch = bool(config.boost or config.suppress)
    return [
        1,
        int(switch),
        int(config.force is not None),
        int(config.max_switches is not None),
        int(config.max_thinking_tokens is not None or config.num_ignore > 0),
        int(config.num_ignore > 0),
        int(switch and config.top_k_rule == "each_tag"),
        int(spec.draws and 0 < spec.alpha_threshold < DRAW_SPACE),
        config.top_k if switch else 1,
    ]


def _padded(tensor: torch.Tensor, rows: int) -> torch.Tensor:
    return torch.cat([tensor, tensor.new_zeros((rows, *tensor.shape[1:]))])


def _to(array: np.ndarray, device: torch.device) -> torch.Tensor:
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if device.type == "cpu":
        return tensor
    return tensor.pin_memory().to(device, non_blocking=True)


__all__ = ["NONE", "NO_BUDGET", "Col", "Needs", "Parked", "SlotTable", "Status"]
