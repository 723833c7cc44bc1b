"""What the work after the pass will cost, estimated from the problem before any of it is
done, and refused past the limits with the numbers (see limits.refuse); the pass itself is
problem.check_size's.

An entry's explanation holds a term for each product it adds up; its layer kind says how
many at most (``Layer.terms``, ``Loss.terms``). ``cnntrace explain`` makes one entry's; the
``--html`` page makes one for every entry it shows of a stage whose layer has no recipe for
the page's script, one after the other, and keeps their text (``page_cost``); a worksheet
one for each question, all kept. verify judges every entry answered; step's JSON and CSV
write every number.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from cnntrace import limits
from cnntrace.layers.base import Terms, size_of
from cnntrace.naming import plain
from cnntrace.render.format import shown_indices, shown_tables
from cnntrace.text import number_text

#: The update's entries (W − lr·dL/dW): two terms each.
UPDATE = Terms(2)


class Cost(NamedTuple):
    """(bytes, multiply-adds) of making explanations, as limits.refuse counts them."""

    need: int
    work: int

    @property
    def seconds(self) -> float:
        return self.work / limits.MAX_WORK * limits.MAX_WORK_SECONDS


def entry_terms(problem, name: str) -> Terms:
    """How large the explanation of one entry of stage ``name`` is, at most (its owner's
    ``terms``; a forked gradient's path is explained as its layer sends it back)."""
    owner = problem.stage[name].owner
    if owner is None:
        return UPDATE
    return owner.terms(problem.layouts, problem.weights, plain(name), problem.M)


def explanation_cost(terms: Terms, entries: int = 1) -> int:
    """The multiply-adds that stand for the time of ``entries`` explanations of ``terms``."""
    return entries * (
        terms.kept * limits.TERM_COST + terms.steps * limits.VISIT_COST + limits.ENTRY_COST
    )


def check_explanation(problem, name: str, key: str) -> Cost:
    """Refuse (InputError naming ``key``, the TERM) an explanation of an entry of ``name``
    too large to hold or to make in about a minute; its cost otherwise."""
    terms = entry_terms(problem, name)
    need = problem.size()[0] + terms.kept * limits.TERM_BYTES
    work = explanation_cost(terms)
    what = f"its explanation has up to {number_text(terms.kept)} terms"
    limits.refuse(need, work, what, key, doing="explaining it", in_time=True)
    return Cost(need, work)


def shown_count(dims: tuple[int, ...], lead: int, full: bool) -> int:
    """How many entries of a matrix of shape ``dims`` the page shows (and explains): its
    shown tables (``lead`` leading axes), each table's shown rows and columns."""
    if not dims:
        return 1
    tables = sum(
        1 for table in (shown_tables(dims[:lead], full) if lead else [()]) if table is not None
    )
    trailing = dims[lead:]
    middle = 1
    for n in trailing[:-2]:
        middle *= n
    cells = 1
    for n in trailing[-2:]:
        cells *= sum(1 for i in shown_indices(n, full) if i is not None)
    return tables * middle * cells


def page_cost(problem, only: tuple[str, ...] | None = None, full: bool = False) -> Cost:
    """(bytes, multiply-adds) of one trace's part of the page: every shown entry of every
    stage (those ``only`` names, where given) whose layer has no recipe explained, one at a
    time, its text kept; a stage with one (Layer.has_recipe) is explained in the page, from
    numbers the pass holds, and costs the writing of its cells."""
    largest, work, entries = 0, 0, 0
    for stage in problem.stages:
        if only is not None and stage.name not in only:
            continue
        layout = stage.layout
        dims = layout.user_shape(problem.batched, problem.M)
        count = shown_count(tuple(dims), len(layout.axes(problem.batched)[0]), full)
        if stage.owner is not None and stage.owner.has_recipe(plain(stage.name)):
            # explained in the page, on a click, from numbers the pass already holds
            work += count * limits.NUMBER_TEXT_COST
            continue
        terms = entry_terms(problem, stage.name)
        largest = max(largest, terms.kept)
        work += explanation_cost(terms, count)
        entries += count
    need = problem.size()[0] + largest * limits.TERM_BYTES + entries * limits.PAGE_ENTRY_BYTES
    return Cost(need, work)


def check_sheet(problem, only: tuple[str, ...] | None = None, key: str = "X") -> Cost:
    """Refuse (InputError naming ``key``) a worksheet whose worked entries (one entry's
    arithmetic for each question, every one kept until the sheet is written) would not fit
    or take more than about ten minutes; its cost otherwise."""
    kept, work = 0, 0
    for stage in problem.stages:
        if stage.section == "update" or (only is not None and stage.name not in only):
            continue
        terms = entry_terms(problem, stage.name)
        kept += terms.kept
        work += explanation_cost(terms)
    need = problem.size()[0] + kept * limits.TERM_BYTES
    limits.refuse(need, work, f"its worked entries have up to {number_text(kept)} terms", key,
                  doing="making the sheet", max_work=limits.MAX_COMMAND_WORK, in_time=True)  # fmt: skip
    return Cost(need, work)


def check_answers(problem, answers: dict) -> Cost:
    """Refuse (InputError naming the largest answer) answers too many to judge within the
    limits: verify judges, and may diagnose, every entry given; their cost otherwise."""
    sizes = {name: int(np.size(value)) for name, value in answers.items()}
    entries = sum(sizes.values())
    need = problem.size()[0] + entries * limits.ANSWER_BYTES
    work = entries * limits.ANSWER_COST
    largest = max(sizes, key=sizes.get) if sizes else "answers"
    limits.refuse(need, work, f"{number_text(entries)} entries answered", largest, doing="judging them",
                  max_work=limits.MAX_COMMAND_WORK, in_time=True)  # fmt: skip
    return Cost(need, work)


def output_seconds(problem, only: tuple[str, ...] | None = None) -> float:
    """About how long writing every number of the trace (the stages ``only`` names, where
    given) takes at full precision: for the progress lines of step's JSON and CSV."""
    entries = sum(
        size_of(stage.layout.user_shape(problem.batched, problem.M))
        for stage in problem.stages
        if only is None or stage.name in only
    )
    return Cost(0, entries * limits.NUMBER_TEXT_COST).seconds


class PageBudget:
    """The page's cost over the files it shows, checked as each file's problem is read and
    before its pass: ``add(problem, key)`` refuses the file that takes the page past the
    limits (memory: every trace the page shows is kept until it is written; work: about
    ten minutes)."""

    def __init__(self, only: tuple[str, ...] | None = None, full: bool = False) -> None:
        self.only, self.full = only, full
        self.need, self.work = 0, 0

    def add(self, problem, key: str = "X") -> Cost:
        cost = page_cost(problem, self.only, self.full)
        need, work = self.need + cost.need, self.work + cost.work
        limits.refuse(need, work, "the page explains every entry it shows", key, doing="making the page",
                      max_work=limits.MAX_COMMAND_WORK, in_time=True)  # fmt: skip
        self.need, self.work = need, work
        return cost

    @property
    def seconds(self) -> float:
        return Cost(self.need, self.work).seconds
