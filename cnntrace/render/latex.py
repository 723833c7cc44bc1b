"""The trace as a LaTeX fragment: each matrix as a ``bmatrix`` with its equation, and each
backward stage's chain rule, for lecture notes and homework.

The fragment goes inside the body of a standard ``article`` that loads ``amsmath``:

    \\documentclass{article}
    \\usepackage{amsmath}
    \\begin{document}
    \\input{trace.tex}
    \\end{document}

It uses only ASCII, so it compiles with pdflatex as well as with xelatex or lualatex. The
formulas of network.py and derivation.py are translated by ``math`` and ``prose``.
"""

from __future__ import annotations

import re

import numpy as np

from cnntrace.errors import one_line
from cnntrace.layers import KINDS
from cnntrace.losses import LOSSES
from cnntrace.render import View
from cnntrace.render.document import Entry, Given, Heading, document, legend_text, mark_text
from cnntrace.render.format import (
    axes_label,
    number,
    shape,
    shown_indices,
    shown_tables,
    summary_note,
)

# -- the formula notation, translated ------------------------------------------------------

#: The Greek and accented names of batch norm's stages: μ2, σ²2, x̂2 (x and a combining circumflex).
_GREEK = r"(?:μ|σ²|[a-z]\u0302)"
_TOKEN = re.compile(
    rf"(?P<partial>∂(?P<num>[A-Za-z]\w*)?/∂(?P<den>{_GREEK}\d*|[A-Za-z]\w*))"
    rf"|(?P<dname>(?<![A-Za-z0-9])d(?P<dnum>[A-Z][A-Za-z0-9]*)/d(?P<dden>{_GREEK}\d*|[A-Z][A-Za-z0-9]*))"
    rf"|(?P<ident>{_GREEK}\d*|[A-Za-z][A-Za-z_]*\d*(?:-[a-z]{{2,}})*)"  # a hyphenated word (row-major) stays a word
    r"|(?P<number>\d+(?:\.\d+)?)"
    r"|(?P<space>\s+)"
    r"|(?P<other>.)"
)
#: The functions the equations write by name, typeset as operators: each layer kind's and loss's.
FUNCTIONS = {name for kind in (*KINDS.values(), *LOSSES.values()) for name in kind.FUNCTIONS}
SYMBOLS = {
    "·": r"\cdot ", "⊙": r"\odot ", "ᵀ": r"^{\top}", "−": "-", "←": r"\leftarrow ",
    "σ": r"\sigma ", "α": r"\alpha ", "Φ": r"\Phi ", "φ": r"\varphi ", "π": r"\pi ", "³": "^{3}",
    "≥": r"\ge ", "→": r"\rightarrow ", "²": "^{2}", "δ": r"\delta ", "∂": r"\partial ", "Σ": r"\sum ", "≤": r"\le ", "×": r"\times ", "′": "'", "…": r"\ldots ",
    "{": r"\{", "}": r"\}", "%": r"\%", "#": r"\#", "&": r"\&", "$": r"\$", "_": r"\_",
    "*": r"{*}",
    "μ": r"\mu ", "ε": r"\varepsilon ", "γ": r"\gamma ", "β": r"\beta ", "√": r"\surd ", "½": r"\tfrac{1}{2}",
}  # fmt: skip


def _symbol(name: str) -> str:
    """W1 -> W_{1}; σ²2 -> \\sigma^{2}_{2}; x̂2 -> \\hat{x}_{2}; lr -> \\mathrm{lr}."""
    match = re.fullmatch(rf"([A-Z]|{_GREEK})(\d*)", name)
    if match:
        letter = {"μ": r"\mu", "σ²": r"\sigma^{2}"}.get(match[1], match[1])
        if letter.endswith("\u0302"):
            letter = rf"\hat{{{letter[0]}}}"
        return letter + (f"_{{{match[2]}}}" if match[2] else "")
    return rf"\mathrm{{{name}}}"


def _partial(num: str | None, den: str) -> str:
    top = rf"\partial {_symbol(num)}" if num else r"\partial"
    return rf"\frac{{{top}}}{{\partial {_symbol(den)}}}"


def _pieces(text: str):
    """Yield ("math", latex) or ("word", text) pieces of a formula or a note."""
    for match in _TOKEN.finditer(text):
        kind = match.lastgroup
        if kind == "partial":
            yield "math", _partial(match["num"], match["den"])
        elif kind == "dname":
            yield "math", _partial(match["dnum"], match["dden"])
        elif kind == "ident":
            word = match[0]
            if word in FUNCTIONS:
                yield "math", r"\operatorname{" + word.replace("_", r"\_") + "}"
            elif word == "log":
                yield "math", r"\log "
            elif re.fullmatch(rf"[A-Z]\d*|lr|{_GREEK}\d*", word):
                yield "math", _symbol(word) if word != "lr" else r"\mathrm{lr}"
            else:
                yield "word", word.replace("_", r"\_")  # cross_entropy in a summary
        elif kind == "space":
            yield "space", " "
        elif kind == "number":
            yield "math", match[0]
        elif match[0] != "`":
            char = match[0]
            yield ("punct" if char in ",;:.'()" else "math"), SYMBOLS.get(char, char)


def math(text: str) -> str:
    """A formula in math mode: symbols and functions typeset, English words as \\text{}."""
    out, words = [], []
    for kind, latex in _pieces(text):
        if kind == "word" or (words and kind in ("space", "punct") and latex != "("):
            if not words and out and out[-1] == " ":  # math mode drops spaces: keep this one
                out.pop()
                words.append(" ")
            words.append(latex)
            continue
        if words:
            out.append(r"\text{" + "".join(words) + "}")
            words = []
        out.append(latex if kind != "space" else " ")
    if words:
        out.append(r"\text{" + "".join(words) + "}")
    return "".join(out).strip()


def plain(text: str) -> str:
    """Any text (a file name, say) as LaTeX text on one line (a line break written as its
    escape, which must not end a comment or a paragraph), its special characters escaped."""
    text = one_line(text)
    special = {"\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "_": r"\_", "%": r"\%",
               "&": r"\&", "#": r"\#", "$": r"\$", "^": r"\^{}", "~": r"\~{}"}  # fmt: skip
    return "".join(special.get(char, char) for char in text)


def file_heading(file: str) -> str:
    """The heading of one file's trace when several are traced at once."""
    return f"\\section*{{\\texttt{{{plain(file)}}}}}\n\n"


def prose(text: str) -> str:
    """A note in text mode: the words as they are, symbols and formulas in $…$.

    A parenthesis joins the formula it opens or closes; other punctuation stays text.
    """
    pieces = list(_pieces(text))
    out, formula, depth = [], [], 0

    def flush():
        if formula:
            out.append("$" + "".join(formula).strip() + "$")
            formula.clear()

    for position, (kind, latex) in enumerate(pieces):
        following = next((k for k, _ in pieces[position + 1 :] if k != "space"), None)
        if kind == "punct" and latex == "(" and following == "math":
            depth += 1
            formula.append(latex)
        elif kind == "punct" and latex == ")" and depth:
            depth -= 1
            formula.append(latex)
        elif kind == "math" or (formula and kind == "space" and following == "math"):
            formula.append(latex)
        else:
            flush()
            out.append(latex)
    flush()
    return "".join(out)


# -- the fragment --------------------------------------------------------------------------


def bmatrix(values: np.ndarray, precision: int, marks: np.ndarray | None = None, full: bool = False) -> str:
    """A 1-D (as one row) or 2-D array as a bmatrix; a won pool cell gets a superscript *.
    A large one is summarized with dots unless ``full`` (see render.format)."""
    rows = values.reshape(1, -1) if values.ndim == 1 else values
    wins = np.zeros(rows.shape, dtype=int) if marks is None else marks.reshape(rows.shape)
    row_ids, col_ids = shown_indices(rows.shape[0], full), shown_indices(rows.shape[1], full)

    def cell(r, c) -> str:
        if r is None:
            return "\\ddots" if c is None else "\\vdots"
        if c is None:
            return "\\cdots"
        return number(float(rows[r, c]), precision) + mark(int(wins[r, c]))

    body = " \\\\\n".join(" & ".join(cell(r, c) for c in col_ids) for r in row_ids)
    return "\\begin{bmatrix}\n" + body + "\n\\end{bmatrix}"


def mark(count: int) -> str:
    """A cell's mark (document.mark_text) as a superscript: ^{*}, ^{*2} …; none for 0."""
    return f"^{{{mark_text(count)}}}" if count else ""


def _equation(symbol: str, equation: str | None) -> str:
    return math(symbol) + (" = " + math(equation) if equation else "")


def _block(symbol, equation, matrix, precision, prose, full=False) -> list[str]:
    values, axes, marks = matrix.values, matrix.axes, matrix.marks
    lines = []
    head = _equation(symbol, equation)
    if values.ndim == 0:
        lines.append(f"\\[ {head} = {number(float(values), precision)} \\]")
        return lines + prose
    note = summary_note(values.shape, axes, full).replace("--full", "\\texttt{-{}-full}")
    lines.append(f"\\noindent ${head}$ \\quad (${math(shape(values.shape))}${'; ' + note if note else ''})")
    lines += prose
    columns = len(shown_indices(values.shape[-1], full))
    if columns > 10:  # amsmath's matrices take 10 columns unless told otherwise
        lines.append(f"\\setcounter{{MaxMatrixCols}}{{{columns}}}")
    if not axes:
        lines.append(f"\\[ {math(symbol)} = {bmatrix(values, precision, marks, full)} \\]")
        return lines
    for index in shown_tables(values.shape[: len(axes)], full):
        if index is None:
            lines.append("\\[ \\vdots \\]")
            continue
        label = axes_label(axes, index)
        entry_marks = None if marks is None else marks[index]
        matrix = bmatrix(values[index], precision, entry_marks, full)
        lines.append(f"\\[ {math(symbol)}\\ (\\text{{{label}}}) = {matrix} \\]")
    return lines


def derivation_lines(d, precision: int) -> list[str]:
    """A stage's chain rule (document.Entry.derivation) as an align*, then the values that go
    into it and its note; nothing for a stage without one."""
    if d is None:
        return []
    lines = []
    if d.left:
        lines += [
            "\\begin{align*}",
            f"{math(d.left)} &= {math(d.chain)} \\\\",
            f"&= {math(d.simplified)}",
            "\\end{align*}",
        ]
    factors = [
        f"${math(symbol)} = {number(float(value), precision)}$" if value.ndim == 0
        else f"${math(symbol)}$ (${math(shape(value.shape))}$)"
        for symbol, value in d.factors
    ]  # fmt: skip
    note = f"; {prose(d.note)}." if d.note else "."
    return lines + ["with " + ", ".join(factors) + note, ""]


#: The sections' titles, the learning rate in math.
TITLES = {"input": "Input", "forward": "Forward pass", "backward": "Backward pass",
          "update": "Update: one step of gradient descent, $\\mathrm{{lr}} = {lr:g}$"}  # fmt: skip


def render(trace, view: View = View()) -> str:
    """The selected matrices as a LaTeX fragment (see the module's docstring), block by
    block of the trace's document (render.document)."""
    doc = document(trace, view)
    out = [
        "% cnntrace step: a fragment for the body of an article that loads amsmath",
        "% (\\usepackage{amsmath}); numbers rounded to "
        f"{view.precision} decimals.",
    ]
    for block in doc.blocks:
        match block:
            case Heading(section=section, summary=summary):
                out.append(f"\\subsection*{{{TITLES[section].format(lr=doc.lr)}}}")
                if summary:
                    out += [prose(summary.replace("lr ", "learning rate ")) + ".", ""]
            case Given(name=name, matrix=matrix):
                out += _block(name, None, matrix, view.precision, [], view.full)
                out.append("")
            case Entry():
                lines = derivation_lines(block.derivation, view.precision)
                if block.legend:
                    drawn = legend_text(block.legend, lambda n: f"${mark(n)}$", every_count=True, words=prose)
                    lines.append(drawn + ".")
                out += _block(block.symbol, block.equation, block.matrix, view.precision, lines, view.full)
                out.append("")
    return "\n".join(out) + "\n"
