"""The intervention for a whole batch at once: `RequestPolicy`'s state machine as tensors over slots.

An engine keeps one `PolicyCore` for its batch slots. A request's settings are written once when it
enters a slot (`admit`); each decoding step is then a fixed number of tensor operations over the
batch, whatever its size — no Python loop over rows, no host sync — and over the vocabulary only
one ``topk`` (the switch points, and the most likely token that s1's ignore acts on) and one pass
that makes forced rows one-hot:

1. `observe` — the tokens sampled last step update each slot: one lookup gives each token's kind
   (plain, stop, end of thinking, a language's tag) and one transition-table lookup moves the
   status (thinking → answering → done) and both token counters at once; the language, switches
   and the position in ``ignore_str`` follow where a batch needs them;
2. `begin` — which rows act this step, and the ones budget forcing owns (the rest of
   ``ignore_str``, or the end of thinking on a spent budget);
3. `tag_pass` — the forced opening tag, the boost/suppress bias at switch points (a tag is among the
   top-``k`` when its logit reaches the row's ``k``-th largest; a banned tag never is), the bans
   under ``force``/``max_switches``, computed on the tag columns only;
4. `budget_pass` — on the token chosen: budget forcing's token, s1's ignore;
5. `write` — the tag columns and the forced rows into the logits (in place, or as a new tensor).

`before_sampling` is the whole step for vLLM (which samples after its processors); the transformers
processors call the passes around their own sampling. `needs` (host-side flags of the batch's
requests) skips what no row uses. `rows` picks the batch's rows out of the slot table (views when
rows are slots ``0..B-1``, gathered under Model Runner V2's row → slot mapping, then `commit`).
The decisions equal `RequestPolicy`'s for the same tokens and seed, draws included (`switch_draw`).

Example:
    >>> from l2ray.recipe import InterventionConfig
    >>> vocab = ReasoningVocab(tag_ids={"en": 5, "zh": 6}, think_end_id=3, stop_ids=(1,))
    >>> core = PolicyCore(vocab)
    >>> core.admit(0, PolicySpec(InterventionConfig(force="zh")))
    >>> logits = torch.zeros(1, 8)
    >>> rows = core.rows(1)
    >>> core.before_sampling(rows, logits, core.needs(slice(0, 1))).argmax(-1).tolist()
    [6]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import torch

from l2ray.decode.policy import usage_counters
from l2ray.decode.slots import NONE, Col, Needs, SlotTable, Status
from l2ray.decode.spec import PolicySpec, ReasoningVocab, switch_draw

NO_TOKEN, PLAIN, STOP, END, TAG = range(5)
"""Token kinds (`PolicyCore.observe`); a tag's kind is ``TAG + its language column``."""


@dataclass
class Rows:
    """The batch's rows of the slot table for one step (views, or gathered copies to `commit`)."""

    store: SlotTable
    count: int
    slots: torch.Tensor | None
    table: torch.Tensor = field(init=False)
    acting: torch.Tensor | None = None
    """Rows inside thinking whose token this step is kept (`PolicyCore.begin`)."""
    owned: torch.Tensor | None = None
    """Acting rows whose token budget forcing decides (`PolicyCore.begin`)."""
    budget_token: torch.Tensor | None = None
    ignores_end: torch.Tensor | None = None
    """Acting rows where an end of thinking chosen now would become ``ignore_str`` (ignores and budget
    left for it)."""

    def __post_init__(self) -> None:
        self.table = self._pick(self.store.table)

    @cached_property
    def cols(self) -> _Columns:
        """The table's columns as views (writes reach the table), each taken once."""
        return _Columns(self.table)

    @cached_property
    def bias(self) -> torch.Tensor:
        return self._pick(self.store.bias)

    @cached_property
    def ignore(self) -> torch.Tensor:
        return self._pick(self.store.ignore)

    @cached_property
    def langs(self) -> torch.Tensor:
        return self._pick(self.store.langs)

    def _pick(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor[: self.count] if self.slots is None else tensor[self.slots]


class _Columns:
    """``table[:, column]`` views, made on first use (a step reads a dozen of the table's columns)."""

    def __init__(self, table: torch.Tensor) -> None:
        self.table = table
        self._views: dict[int, torch.Tensor] = {}

    def __getitem__(self, column: Col) -> torch.Tensor:
        view = self._views.get(column)
        if view is None:
            view = self._views[column] = self.table[:, column]
        return view


@dataclass
class TagEdit:
    """`PolicyCore.tag_pass`'s result: the tag columns' new values and the rows forced to a tag
    (``None`` when no row of the batch forces a language)."""

    values: torch.Tensor
    forced: torch.Tensor | None
    forced_mask: torch.Tensor | None


class PolicyCore:
    """`RequestPolicy` for every slot of a batch (see the module doc).

    Args:
        vocab: the model's tag, end-of-thinking and stop ids (read once per engine).
        slots: initial number of slots (the table grows when needed).
        device: the logits' device.
        counts: keep every row's switches and tokens per language (`counters`); without it they are
            kept only where ``max_switches`` needs them (vLLM's callers replay counters themselves).
    """

    def __init__(
        self, vocab: ReasoningVocab, slots: int = 0, device: torch.device | str = "cpu", counts: bool = True
    ) -> None:
        self.vocab = vocab
        self.codes = list(vocab.tag_ids)
        self.device = torch.device(device)
        self.counts = counts
        self.store = SlotTable(len(self.codes), self.device, slots)
        self.tag_cols = torch.tensor(list(vocab.tag_ids.values()), dtype=torch.long, device=self.device)
        self.think_end = vocab.think_end_id if vocab.think_end_id is not None else -2
        self._kinds = _kind_lookup(vocab, self.device)
        self._transitions = _transition_table(self.device)
        self._columns = torch.arange(len(self.codes), device=self.device)

    # -- slots (host side) -----------------------------------------------------------------------

    def admit(self, slot: int, spec: PolicySpec, consumed: int = 0) -> None:
        """Stage a checked spec's request into ``slot`` (written to the device by the next `rows`)."""
        bias = spec.switch_bias()
        force = self.codes.index(spec.config.force) if spec.config.force is not None else NONE
        self.store.admit(slot, spec, [bias.get(code, 0.0) for code in self.codes], force, consumed)

    def needs(self, slots: slice | Any) -> Needs:
        """What the rows of a batch need this step (host-side, no sync)."""
        return self.store.needs(slots)

    def rows(self, count: int, slots: torch.Tensor | None = None) -> Rows:
        """The batch's rows: slots ``0..count-1`` as views, or the gathered ``slots`` (one per row)."""
        self.store.flush()
        if slots is None:
            self.store.grow(count)
        return Rows(self.store, count, slots)

    def commit(self, rows: Rows) -> None:
        """Write a gathered batch's state back to its slots (views need nothing)."""
        if rows.slots is not None:
            self.store.table.index_copy_(0, rows.slots, rows.table)
            if "langs" in rows.__dict__:
                self.store.langs.index_copy_(0, rows.slots, rows.langs)

    def counters(self, slots: list[int]) -> list[dict[str, Any]]:
        """The usage counters of ``slots`` (one host read for all of them; call when rows finish)."""
        index = torch.tensor(slots, dtype=torch.long, device=self.device)
        picked = [Col.THINKING_TOKENS, Col.ANSWER_TOKENS, Col.SWITCHES]
        table = self.store.table[index][:, picked].tolist()
        langs = self.store.langs[index].tolist()
        return [
            usage_counters(*row, {code: n for code, n in zip(self.codes, counts, strict=True) if n})
            for row, counts in zip(table, langs, strict=True)
        ]

    # -- one step (device side) ------------------------------------------------------------------

    def observe(
        self, rows: Rows, tokens: torch.Tensor, valid: torch.Tensor | None = None, needs: Needs | None = None
    ) -> None:
        """Record each row's emitted token (rows where ``valid`` is false are skipped; ``-1`` is no token)."""
        c = rows.cols
        kind = self._kind_of(tokens)
        kind = kind if valid is None else kind * valid
        status = c[Col.STATUS]
        thinking = status == Status.THINKING
        klass = kind.clamp(max=TAG)
        step = self._transitions[status * (TAG + 1) + klass]
        if needs is None or needs.ignore:
            self._advance_queue(rows, tokens, thinking, klass)
        rows.table[:, : Col.ANSWER_TOKENS + 1] += step
        if self.codes and (self.counts or needs is None or needs.limit):
            self._track_language(rows, kind - TAG, thinking, step[:, Col.THINKING_TOKENS])

    def begin(self, rows: Rows, needs: Needs, sampled: torch.Tensor | None = None) -> None:
        """Mark the rows the intervention acts on (inside thinking; ``sampled``: the token is kept, as
        Model Runner V2 also samples rows still in chunked prefill) and those budget forcing owns."""
        c = rows.cols
        acting = c[Col.STATUS] == Status.THINKING
        rows.acting = acting if sampled is None else acting & sampled
        spent = c[Col.THINKING_TOKENS] >= c[Col.BUDGET]
        if needs.ignore:
            queued = c[Col.QUEUE_POS] < c[Col.IGNORE_LEN]
            rows.owned = rows.acting & (queued | spent)
            rows.budget_token = torch.where(queued, _at(rows.ignore, c[Col.QUEUE_POS]), self.think_end)
            room = c[Col.THINKING_TOKENS] + c[Col.IGNORE_LEN] < c[Col.BUDGET]
            rows.ignores_end = rows.acting & (c[Col.IGNORES_LEFT] > 0) & room
        else:
            rows.owned = rows.acting & spent
            rows.budget_token = torch.full_like(c[Col.STATUS], self.think_end)

    def tag_pass(
        self,
        rows: Rows,
        logits: torch.Tensor,
        needs: Needs,
        top: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> TagEdit | None:
        """The forced opening tags and the tag columns' values after switch-point bias and bans (``None``
        for a model without tags). A row budget forcing owns this step gets no tag edit and spends no
        draw. ``top`` may pass ``logits.topk`` (at least ``needs.top_k`` columns) already taken."""
        if not self.codes:
            return None
        c = rows.cols
        wants = rows.acting & ~rows.owned
        forced = forced_mask = None
        if needs.force:
            forced_mask = wants & (c[Col.FORCE] >= 0) & (c[Col.THINKING_TOKENS] == 0)
            forced = self.tag_cols[c[Col.FORCE].clamp(min=0)]
            wants = wants & ~forced_mask
        values = logits[:, self.tag_cols]
        if needs.switch:
            top = top if top is not None else logits.topk(min(needs.top_k, logits.shape[-1]), dim=-1)
            values = values + self._switch_bias(rows, top[0], values, wants, needs)
        if needs.force or needs.limit:
            values = values.masked_fill(self._banned(c, wants), -torch.inf)
        return TagEdit(values, forced, forced_mask)

    def budget_pass(self, rows: Rows, chosen: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(token, forced)`` per row: budget forcing's token where it owns the position (always
        forced: under sampling the most likely token is not the one drawn), ``ignore_str``'s first
        token where s1's ignore replaces a ``chosen`` end of thinking (``None``: no row has ignores)."""
        if chosen is None:
            return rows.budget_token, rows.owned
        c = rows.cols
        replaced = ~rows.owned & (chosen == self.think_end) & rows.ignores_end
        c[Col.IGNORES_LEFT].sub_(replaced.long())
        c[Col.QUEUE_POS].copy_(torch.where(replaced, 1, c[Col.QUEUE_POS]))
        rows.ignores_end = rows.ignores_end & (
            c[Col.IGNORES_LEFT] > 0
        )  # the thinking tokens are as they were
        return torch.where(rows.owned, rows.budget_token, rows.ignore[:, 0]), rows.owned | replaced

    def write(
        self,
        logits: torch.Tensor,
        edit: TagEdit | None,
        forced: torch.Tensor | None = None,
        forced_mask: torch.Tensor | None = None,
        inplace: bool = False,
    ) -> torch.Tensor:
        """``logits`` with ``edit``'s tag columns and every forced row one-hot (``edit``'s, and ``forced``
        where ``forced_mask``): edited in place, or a new tensor (the input left alone)."""
        token, mask = _merge(edit, forced, forced_mask)
        if inplace:
            if edit is not None:
                logits[:, self.tag_cols] = edit.values
            return logits if mask is None else one_hot_rows(logits, token, mask, inplace=True)
        out = logits.clone() if mask is None else one_hot_rows(logits, token, mask)
        if edit is not None:  # forced rows keep their one-hot tag columns
            kept = (
                edit.values
                if mask is None
                else torch.where(mask[:, None], out[:, self.tag_cols], edit.values)
            )
            out[:, self.tag_cols] = kept
        return out

    def before_sampling(
        self, rows: Rows, logits: torch.Tensor, needs: Needs, sampled: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The whole step, in place, for an engine that samples after its processors (vLLM): tag edits,
        budget forcing (s1's ignore on the most likely token after the tag edits), and an end of
        thinking that would be ignored banned so sampling cannot slip past the ignore. Over the
        vocabulary: one ``topk`` (the switch points, and the most likely token) and one fill."""
        self.begin(rows, needs, sampled)
        top = None
        if needs.switch or needs.ignore:
            k = max(needs.top_k if needs.switch else 1, len(self.codes) + 1 if needs.ignore else 1)
            top = logits.topk(min(k, logits.shape[-1]), dim=-1)
        edit = self.tag_pass(rows, logits, needs, top) if needs.tags else None
        token = mask = None
        if needs.budget:
            token, mask = self.budget_pass(rows, self.chosen(top, edit) if needs.ignore else None)
        if edit is not None:
            logits[:, self.tag_cols] = edit.values
        merged_token, merged_mask = _merge(edit, token, mask)
        if merged_mask is not None:
            one_hot_rows(logits, merged_token, merged_mask, inplace=True)
        if needs.ignore:
            logits[:, self.think_end] = logits[:, self.think_end].masked_fill(rows.ignores_end, -torch.inf)
        return logits

    def chosen(self, top: tuple[torch.Tensor, torch.Tensor], edit: TagEdit | None) -> torch.Tensor:
        """Each row's most likely token after ``edit``, read off ``logits.topk`` taken with more columns
        than there are tags (so the best untagged token is among them): no pass over the vocabulary."""
        values, ids = top
        if edit is None:
            return ids[:, 0]
        untagged = (self._kind_of(ids) < TAG).int().argmax(1, keepdim=True)
        best, best_id = values.gather(1, untagged)[:, 0], ids.gather(1, untagged)[:, 0]
        tag_best, column = edit.values.max(1)
        tag_id = self.tag_cols[column]
        take_tag = (tag_best > best) | ((tag_best == best) & (tag_id < best_id))
        chosen = torch.where(take_tag, tag_id, best_id)
        return chosen if edit.forced_mask is None else torch.where(edit.forced_mask, edit.forced, chosen)

    # -- helpers ---------------------------------------------------------------------------------

    def _kind_of(self, tokens: torch.Tensor) -> torch.Tensor:
        """Each token's kind (`NO_TOKEN` for ``-1``; a tag's is ``TAG`` + its language column)."""
        return self._kinds[(tokens + 1).clamp(max=self._kinds.shape[0] - 1)]

    def _advance_queue(
        self, rows: Rows, tokens: torch.Tensor, thinking: torch.Tensor, klass: torch.Tensor
    ) -> None:
        """``ignore_str``'s queue: its next token emitted moves it on; the end of thinking empties it."""
        c = rows.cols
        position, length = c[Col.QUEUE_POS], c[Col.IGNORE_LEN]
        popped = thinking & (klass != NO_TOKEN) & (position < length) & (tokens == _at(rows.ignore, position))
        c[Col.QUEUE_POS].copy_(torch.where(thinking & (klass == END), length, position + popped))

    def _track_language(
        self, rows: Rows, code: torch.Tensor, thinking: torch.Tensor, counted: torch.Tensor
    ) -> None:
        """A tag emitted while thinking sets the language (a switch when it differs); every counted
        thinking token is counted under the language it is in."""
        c = rows.cols
        tagged = thinking & (code >= 0)
        language = c[Col.LANGUAGE]
        c[Col.SWITCHES].add_(tagged & (language >= 0) & (code != language))
        language = torch.where(tagged, code, language)
        c[Col.LANGUAGE].copy_(language)
        if self.counts:
            rows.langs.scatter_add_(1, language.clamp(min=0)[:, None], (counted * (language >= 0))[:, None])

    def _switch_bias(
        self, rows: Rows, ranked: torch.Tensor, values: torch.Tensor, wants: torch.Tensor, needs: Needs
    ) -> torch.Tensor:
        """The bias each tag column gets at this step's switch points (0 elsewhere); spends draws.

        A tag is among its row's top-``k`` when its logit reaches the row's ``k``-th largest
        (``ranked``: the top values, sorted) and it is not banned (``-inf``)."""
        c = rows.cols
        kth = ranked.gather(1, c[Col.TOP_K].clamp(1, ranked.shape[-1])[:, None] - 1)
        in_top = (values >= kth) & (values > -torch.inf)
        at_switch = wants & in_top.any(1)
        if needs.fractional:
            hit = switch_draw(c[Col.KEY], c[Col.DRAWS_SPENT]) < c[Col.THRESHOLD]
            c[Col.DRAWS_SPENT].add_(at_switch & (c[Col.DRAWS] == 1))
        else:  # every alpha is 0 or 1 (or a sign): the outcome is known, and the count never read
            hit = c[Col.THRESHOLD] > 0
        applies = (at_switch & hit)[:, None]
        if needs.each_tag:
            applies = applies & torch.where(c[Col.EACH_TAG][:, None] == 1, in_top, True)
        return rows.bias * applies

    def _banned(self, c: _Columns, wants: torch.Tensor) -> torch.Tensor:
        """Tag columns banned per row: all but the forced language's, or all but the current language's
        once ``max_switches`` are spent."""
        force, language, limit = c[Col.FORCE], c[Col.LANGUAGE], c[Col.MAX_SWITCHES]
        by_force = force >= 0
        by_limit = ~by_force & (limit >= 0) & (c[Col.SWITCHES] >= limit) & (language >= 0)
        allowed = torch.where(by_force, force, language)
        return (wants & (by_force | by_limit))[:, None] & (self._columns[None, :] != allowed[:, None])


def one_hot_rows(
    logits: torch.Tensor, token: torch.Tensor, mask: torch.Tensor, inplace: bool = False
) -> torch.Tensor:
    """Rows where ``mask`` become one-hot on ``token`` (0 there, ``-inf`` elsewhere): one pass over the
    logits, in place or into a new tensor.

    >>> one_hot_rows(torch.zeros(2, 3), torch.tensor([2, 0]), torch.tensor([True, False])).tolist()
    [[-inf, -inf, 0.0], [0.0, 0.0, 0.0]]
    """
    out = (
        logits.masked_fill_(mask[:, None], -torch.inf)
        if inplace
        else logits.masked_fill(mask[:, None], -torch.inf)
    )
    index = token[:, None]  # a valid id in every row: the rows not forced get their own value back
    return out.scatter_(1, index, torch.where(mask[:, None], 0.0, out.gather(1, index)))


def _merge(
    edit: TagEdit | None, token: torch.Tensor | None, mask: torch.Tensor | None
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """One forced token per row from the tag pass's and the budget pass's (a row has at most one)."""
    if edit is None or edit.forced_mask is None:
        return token, mask
    if mask is None:
        return edit.forced, edit.forced_mask
    return torch.where(mask, token, edit.forced), mask | edit.forced_mask


def _kind_lookup(vocab: ReasoningVocab, device: torch.device) -> torch.Tensor:
    """Token id + 1 → kind (index 0: no token; past the last special id: plain)."""
    special = {i: STOP for i in vocab.stop_ids}
    if vocab.think_end_id is not None:
        special[vocab.think_end_id] = END
    special.update({i: TAG + column for column, i in enumerate(vocab.tag_ids.values())})
    kinds = torch.full((max(special, default=0) + 3,), PLAIN, dtype=torch.long)
    kinds[0] = NO_TOKEN
    for token, kind in special.items():
        kinds[token + 1] = kind
    return kinds.to(device)


def _transition_table(device: torch.device) -> torch.Tensor:
    """(status, token kind) → what observing it adds to (STATUS, THINKING_TOKENS, ANSWER_TOKENS)."""
    table = torch.zeros((len(Status), TAG + 1, 3), dtype=torch.long)
    table[Status.THINKING, PLAIN] = table[Status.THINKING, TAG] = torch.tensor([0, 1, 0])
    table[Status.THINKING, STOP] = torch.tensor([Status.DONE - Status.THINKING, 0, 0])
    table[Status.THINKING, END] = torch.tensor([Status.ANSWERING - Status.THINKING, 0, 1])  # answer's 1st
    for kind in (PLAIN, END, TAG):
        table[Status.ANSWERING, kind] = torch.tensor([0, 0, 1])
    table[Status.ANSWERING, STOP] = torch.tensor([Status.DONE - Status.ANSWERING, 0, 0])
    return table.reshape(-1, 3).to(device)


def _at(matrix: torch.Tensor, column: torch.Tensor) -> torch.Tensor:
    """``matrix[row, column[row]]`` per row, a column past the end read as the last one."""
    return matrix.gather(1, column.clamp(0, matrix.shape[1] - 1)[:, None])[:, 0]


__all__ = ["PolicyCore", "Rows", "TagEdit", "one_hot_rows"]
