"""One entry's arithmetic (a ``cnntrace.explain.Explanation``) as text or as JSON.

    dL/dW1[0,1] = Σ_h,w X[h·s + i − p, w·s + j − p]·dL/dZ1[h,w]  (conv(X, dL/dZ1))
        X[0,1]·dL/dZ1[0,0]  =  0.0000·0.0000  =  0.0000
      + X[0,2]·dL/dZ1[0,1]  =  2.0000·0.0000  =  0.0000
      …
    dL/dW1[0,1] = -0.4301

The last line is the value, rounded as ``cnntrace step`` rounds it at the same precision.
"""

from __future__ import annotations

import json

from cnntrace.render.format import number
from cnntrace.terms import OF_THE_SUM


def _numbers(term, precision: int) -> str:
    """2.0000·(-0.2151): negative factors after the first in parentheses."""
    texts = [number(factor.value, precision) for factor in term.factors]
    return "·".join(t if i == 0 or not t.startswith("-") else f"({t})" for i, t in enumerate(texts))


def _symbols(term) -> str:
    return "·".join(factor.label for factor in term.factors)


def _applied(explanation, precision: int) -> str | None:
    """The function applied to the terms, with numbers: max(…), ReLU(…), σ(…), or None."""
    values = [number(term.value, precision) for term in explanation.terms]
    total = number(sum(term.value for term in explanation.terms), precision)
    alpha = number(explanation.parameter, precision) if explanation.parameter is not None else ""
    share = ""
    if explanation.function == "share":
        share = f"{values[int(explanation.parameter)]} / ({' + '.join(values)})"
    return {
        None: None,
        "tanh": f"tanh({total})",
        "LeakyReLU": f"LeakyReLU({total}) = {total} if {total} > 0 else {alpha}·{total}",
        "leaky step": f"1 if {total} > 0 else {alpha}",
        "share": share,
        "max": f"max({', '.join(values)})",
        "ReLU": f"ReLU({total}) = max({total}, 0)",
        "step": f"1 if {total} > 0 else 0",
        "step at 0": f"1 if {total} ≥ 0 else 0",
        "σ": f"σ({total}) = 1 / (1 + e^(−{total}))".replace("−-", ""),
    }.get(explanation.function)


#: A sum of more terms than this shows its LARGEST terms in size (``every`` shows them all).
LARGEST = 64


def _shown_terms(explanation, most: int | None, nonzero: bool, every: bool):
    """(position, term) of the terms written, None for a line that says what is left out,
    and that line's text."""
    terms = explanation.terms
    shown = list(enumerate(terms))
    summed = explanation.function in OF_THE_SUM
    notes = []
    if nonzero and summed:
        kept = [(position, term) for position, term in shown if term.value != 0]
        if len(kept) < len(shown):
            notes.append(f"{len(shown) - len(kept):,} zero terms left out")
        shown = kept
    if most is not None and len(shown) > most:
        tail = max(most // 4, 1)
        left = len(shown) - most
        return shown[: most - tail] + [(None, f"… {left} more terms …")] + shown[len(shown) - tail:]
    if not every and summed and len(shown) > LARGEST:
        order = sorted(range(len(shown)), key=lambda k: -abs(shown[k][1].value))
        largest = sorted(order[:LARGEST])
        notes.append(f"{len(shown) - LARGEST:,} smaller terms left out (--all shows every term)")
        shown = [shown[k] for k in largest]
    if notes:
        shown.append((None, f"… {'; '.join(notes)}"))
    return shown


def render_text(explanation, precision: int = 4, most: int | None = None, nonzero: bool = False,
                every: bool = False) -> str:
    """The explanation as lines of plain text; the last line is ``LABEL = value``.

    A sum of more than LARGEST terms writes out its LARGEST terms in size, in their order, and
    says how many it left out (``every`` writes them all); ``nonzero`` leaves out the terms
    that are zero and says how many. ``most`` terms at the most are written out (the first
    three quarters of them and the last quarter, a line saying how many are left out
    between): for a page that explains every entry of a large trace. The value is always
    the sum of them all."""
    label = explanation.label
    lines = [f"{label} = {explanation.formula}"]
    terms = explanation.terms
    shown = _shown_terms(explanation, most, nonzero, every)
    written = [(position, term) for position, term in shown if position is not None]
    symbols = {position: _symbols(term) for position, term in written}
    numbers = {position: _numbers(term, precision) for position, term in written}
    width_s = max(map(len, symbols.values()), default=0)
    width_n = max(map(len, numbers.values()), default=0)
    width_p = max((len(number(term.value, precision)) for _, term in written), default=0)
    joiner = "  " if explanation.function == "max" else "+ "
    for position, term in shown:
        if position is None:
            lines.append(f"    {term}")
            continue
        s, n = symbols[position], numbers[position]
        sign = "  " if position == written[0][0] else joiner
        product = f"{number(term.value, precision):>{width_p}}"
        line = f"  {sign}{s:<{width_s}}"
        if len(term.factors) > 1:
            line += f"  =  {n:>{width_n}}  =  {product}"
        else:
            line += f"  =  {product}"
        if term.note:
            line += f"   ({term.note})"
        lines.append(line.rstrip())
    if not terms:
        lines.append("  (no terms)")
    if len(terms) > 1 and explanation.function is None:
        lines.append(f"  {len(terms)} terms")
    for note in explanation.notes:
        lines.append(f"  {note}")
    applied = _applied(explanation, precision)
    if applied:
        lines.append(f"{label} = {applied}")
    lines.append(f"{label} = {number(explanation.value, precision)}")
    return "\n".join(lines) + "\n"


def explanation_dict(explanation) -> dict:
    """The explanation as plain data: every number at full precision."""
    return {
        "term": explanation.label,
        "name": explanation.name,
        "index": list(explanation.index),
        "formula": explanation.formula,
        "function": explanation.function,
        "terms": [
            {
                "factors": [
                    {"symbol": f.symbol, "index": list(f.index), "value": f.value} for f in term.factors
                ],
                "value": term.value,
                **({"note": term.note} if term.note else {}),
            }
            for term in explanation.terms
        ],
        "notes": list(explanation.notes),
        "value": explanation.value,
    }


def render_json(explanation, precision: int = 4, nonzero: bool = False, every: bool = True) -> str:
    """One line of JSON (``precision`` is not used: JSON carries every digit, and every term:
    ``every`` is always so). ``nonzero`` leaves out the terms that are zero from a sum and
    counts them in ``zero_terms_left_out``."""
    data = explanation_dict(explanation)
    if nonzero and explanation.function in OF_THE_SUM:
        kept = [term for term in data["terms"] if term["value"] != 0]
        data["zero_terms_left_out"] = len(data["terms"]) - len(kept)
        data["terms"] = kept
    return json.dumps(data, ensure_ascii=False, allow_nan=False) + "\n"
