"""The trace as one self-contained web page: an explorer of the whole pass.

Every matrix (the inputs, then forward, backward and update, in the derivation's order) is a
grid of coloured cells titled with its symbol, equation and shape. Each cell of the trace
carries ``data-term``, its ``cnntrace explain`` TERM (``dL_dW1[0,1]``, ``Z1[1,0,2,3]``,
``L``); each cell of an input ``data-input`` (``X[0,1]``, ``W1[0,1]`` for the starting W1).
Clicking a cell (or Enter on a focused one) writes its arithmetic into ``#explanation`` and
gives the cells that feed it the class ``source``; the arrow keys walk the stages, the current
one getting the class ``current``.

Each entry's explanation (the text ``cnntrace explain`` prints) and the cells it reads are
made by the page's script when the entry is clicked (ENGINE): from the matrices its stage's
recipe reads (layers.base.Recipe, each kind's in its own file), embedded once as deflated
float64s, or, for a stage without a recipe, from ``explain``'s text of each shown entry,
made here and embedded. The page needs no server and fetches nothing. Large matrices are
summarized as the table view summarizes them (``view.full`` shows everything), and a matrix
of more than DEFERRED cells on the page has its tables drawn by the script from its numbers
as they come near the window; an explanation of thousands of terms shows its largest ones,
as ``cnntrace explain`` does.
"""

from __future__ import annotations

import base64
import html
import json
import math
import zlib

import numpy as np

from cnntrace.errors import one_line
from cnntrace.explain import explain_entry, update_recipe
from cnntrace.naming import plain
from cnntrace.render import View
from cnntrace.render.document import (
    Diagram,
    Entry,
    Given,
    Heading,
    document,
    factor_text,
    legend_text,
    mark_text,
)
from cnntrace.render.explanation import render_text
from cnntrace.render.format import (
    axes_label,
    border_sides,
    number,
    shape,
    shown_indices,
    shown_tables,
    summary_note,
)
from cnntrace.text import symbol

GAP = "…"


def _key(name: str, index) -> str:
    """``dL_dW1``, (0, 1) -> ``dL_dW1[0,1]``; a scalar is its name alone."""
    return name + (f"[{','.join(map(str, index))}]" if len(index) else "")


def _colour(value: float, scale: float) -> str:
    """A diverging colour: blue below zero, red above, white at zero, by |value| / scale."""
    if not np.isfinite(value) or scale == 0 or value == 0:
        return "hsl(0 0% 99%)"
    t = min(abs(value) / scale, 1.0)
    hue = 4 if value > 0 else 214
    return f"hsl({hue} {round(30 + 55 * t)}% {round(97 - 35 * t)}%)"


#: A matrix of more cells on the page than this is drawn by the page's script, a table at a
#: time as it comes near the window (or is printed), from its numbers: a page of hundreds of
#: thousands of cells opens in seconds and stays small. Smaller ones are written out.
DEFERRED = 2048


class _Cells:
    """Which cells a page shows, by key ("t:Z1[0,1]" or "i:X[0,1]"), for the sources; the
    numbers its script reads (float64 blocks, each at an offset); the tables it draws itself."""

    def __init__(self):
        self.keys: set[str] = set()
        self.blocks: list[bytes] = []
        self.size = 0
        self.grids: list[dict] = []

    def add(self, values) -> int:
        """Append ``values`` (flattened) to the numbers; their offset."""
        values = np.ascontiguousarray(values, dtype="<f8").ravel()
        offset = self.size
        self.blocks.append(values.tobytes())
        self.size += values.size
        return offset


def _deferred(rows, wins, row_ids, col_ids, two: bool, attribute: str, name: str, prefix: tuple, precision: int,
              cells: _Cells, scale: float) -> str:
    """A table the page's script draws (SCRIPT's ``grid``, the same markup as ``_grid``): its
    place on the page, sized as the table will be, and what the script draws it from."""
    shown_r, shown_c = [r for r in row_ids if r is not None], [c for c in col_ids if c is not None]
    block = rows[np.ix_(shown_r, shown_c)]
    marks = None
    if wins is not None and wins[np.ix_(shown_r, shown_c)].any():
        marks = wins[np.ix_(shown_r, shown_c)].ravel().tolist()
    head = "t:" if attribute == "data-term" else "i:"
    lead = ",".join(map(str, prefix)) + "," if prefix else ""
    if two:
        cells.keys.update(f"{head}{name}[{lead}{r},{c}]" for r in shown_r for c in shown_c)
    else:
        cells.keys.update(f"{head}{name}[{lead}{c}]" for c in shown_c)
    cells.grids.append({"name": name, "attribute": attribute, "prefix": list(prefix), "two": two, "rows": row_ids,
                        "cols": col_ids, "offset": cells.add(block), "marks": marks, "scale": scale,
                        "precision": precision})  # fmt: skip
    width, height = 1.5 + len(col_ids) * (precision + 4) * 0.55, 1.6 + len(row_ids) * 1.45
    return f'<div class="deferred" data-grid="{len(cells.grids) - 1}" style="width:{width:.1f}em;height:{height:.1f}em"></div>'


def _grid(values: np.ndarray, attribute: str, name: str, prefix: tuple, precision: int,
          marks=None, border=0, full=False, cells: _Cells | None = None, scale: float = 1.0,
          defer: bool = False) -> str:
    """One 1-D or 2-D block as a table of cells with their row and column indices (drawn by
    the page's script where ``defer``)."""
    rows = values.reshape(1, -1) if values.ndim == 1 else values
    wins = None if marks is None else np.asarray(marks).reshape(rows.shape)
    n_rows, n_cols = rows.shape
    top, bottom, left, right = border_sides(border)
    padded = any((top, bottom, left, right))
    row_ids, col_ids = shown_indices(n_rows, full), shown_indices(n_cols, full)
    if defer and attribute and cells is not None and not padded:
        return _deferred(rows, wins, row_ids, col_ids, values.ndim == 2, attribute, name, prefix, precision, cells,
                         scale)  # fmt: skip
    out = ['<table class="grid">']
    header = "".join(f"<th>{GAP if c is None else c - left}</th>" for c in col_ids)
    out.append(f"<thead><tr>{'<th></th>' if values.ndim == 2 else ''}{header}</tr></thead><tbody>")
    for r in row_ids:
        line = ["<tr>"]
        if values.ndim == 2:
            line.append(f"<th>{GAP if r is None else r - top}</th>")
        for c in col_ids:
            if r is None or c is None:
                line.append('<td class="gap">…</td>')
                continue
            v = float(rows[r, c])
            classes = []
            mark = ""
            if wins is not None and wins[r, c]:
                classes.append("won")
                mark = f'<span class="mark">{mark_text(wins[r, c])}</span>'
            if padded and not (top <= r < n_rows - bottom and left <= c < n_cols - right):
                classes.append("pad")
            if v == 0:
                classes.append("zero")
            cls = f' class="{" ".join(classes)}"' if classes else ""
            style = f' style="background:{_colour(v, scale)}"'
            if attribute:
                index = (*prefix, r, c) if values.ndim == 2 else (*prefix, c)
                key = _key(name, index)
                if cells is not None:
                    cells.keys.add(("t:" if attribute == "data-term" else "i:") + key)
                attrs = f' {attribute}="{key}" tabindex="0"'
            else:
                attrs = ""
            line.append(f"<td{attrs}{cls}{style}>{number(v, precision)}{mark}</td>")
        line.append("</tr>")
        out.append("".join(line))
    out.append("</tbody></table>")
    return "".join(out)


def _scale(values: np.ndarray) -> float:
    finite = np.asarray(values, dtype=float)
    return float(np.max(np.abs(finite))) if finite.size else 0.0


def _legend(scale: float, precision: int) -> str:
    """The colour scale of one matrix: −m … 0 … +m."""
    low, high = number(-scale, precision), number(scale, precision)
    stops = ", ".join(_colour(scale * t, scale) for t in (-1, -0.5, 0, 0.5, 1)) if scale else "#fff, #fff"
    return (f'<div class="legend" aria-label="colour scale"><span>{low}</span>'
            f'<span class="bar" style="background:linear-gradient(to right, {stops})"></span>'
            f"<span>{high}</span></div>")


def _matrix(values, axes, attribute, name, precision, marks=None, border=0, full=False, cells=None) -> str:
    """The tables of one matrix: one per image or filter (its leading ``axes``), summarized."""
    values = np.asarray(values, dtype=float)
    scale = _scale(values)
    if values.ndim == 0:
        key = _key(name, ())
        if cells is not None and attribute:
            cells.keys.add(("t:" if attribute == "data-term" else "i:") + key)
        attrs = f' {attribute}="{key}" tabindex="0"' if attribute else ""
        v = float(values)
        return (f'<div class="scalar"><span class="cell"{attrs} style="background:{_colour(v, scale)}">'
                f"{number(v, precision)}</span></div>")
    parts = ['<div class="tables">']
    tables = [index for index in (shown_tables(values.shape[: len(axes)], full) if axes else [()]) if index is not None]
    trailing = values.shape[len(axes):]
    defer = len(trailing) <= 2 and len(tables) * math.prod(
        sum(i is not None for i in shown_indices(n, full)) for n in trailing) > DEFERRED
    for index in shown_tables(values.shape[: len(axes)], full) if axes else [()]:
        if index is None:
            parts.append('<div class="gap-tables">…</div>')
            continue
        block = values[index]
        block_marks = None if marks is None else np.asarray(marks)[index]
        label = f"<figcaption>{html.escape(axes_label(axes, index))}</figcaption>" if axes else ""
        if block.ndim > 2:  # defensive: a matrix of more trailing axes, one table per leading index
            for sub in np.ndindex(block.shape[:-2]):
                sub_label = f"<figcaption>{html.escape(axes_label(axes, index))} {list(sub)}</figcaption>"
                parts.append(f"<figure>{sub_label}" + _grid(
                    block[sub], attribute, name, (*index, *sub), precision,
                    None if block_marks is None else block_marks[sub], border, full, cells, scale) + "</figure>")
            continue
        parts.append(f"<figure>{label}" + _grid(block, attribute, name, tuple(index), precision,
                                                block_marks, border, full, cells, scale, defer) + "</figure>")
    parts.append("</div>")
    return "".join(parts) + _legend(scale, precision)


def _title(symbol: str, equation: str | None, values) -> str:
    dims = np.shape(values)
    eq = f' <span class="equation">= {html.escape(equation)}</span>' if equation else ""
    return (f'<h3><span class="symbol">{html.escape(symbol)}</span>{eq}'
            f' <span class="shape">{html.escape(shape(dims))}</span></h3>')


def _derivation(d, precision: int) -> str:
    """A stage's chain rule (document.Entry.derivation), what it simplifies to and its factors'
    numbers; nothing for a stage without one."""
    if d is None:
        return ""
    lines = []
    if d.left:
        lines.append(f'<div class="chain"><i>{html.escape(d.left)}</i> = {html.escape(d.chain)}</div>')
        lines.append(f'<div class="chain">= {html.escape(d.simplified)}</div>')
    factors = ",  ".join(factor_text(factor, precision) for factor in d.factors)
    lines.append(f'<div class="with">with {html.escape(factors)}</div>')
    if d.note:
        lines.append(f'<div class="note">{html.escape(d.note)}</div>')
    return "".join(lines)


def _sources(trace, explanation, symbols: dict, cells: _Cells, own: str) -> list[str]:
    """The keys of the cells on the page that the explanation's factors read."""
    inputs = trace.problem.inputs
    out = []
    for term in explanation.terms:
        for factor in term.factors:
            read = factor.source or factor.symbol  # exp(Z4 − max) reads Z4
            if read in inputs:
                key = "i:" + _key(read, factor.index)
            elif read in symbols:
                key = "t:" + _key(symbols[read], factor.index)
            else:
                continue  # a constant (lr, 1/M) or a padding zero
            if key != own and key in cells.keys and key not in out:
                out.append(key)
    return out


def _trace_section(trace, view: View, file: str | None, number_from: int, codes: dict[str, str]) -> str:
    """One trace: the inputs, then every selected stage (block by block of the trace's
    document, render.document), then the embedded explanations."""
    precision = view.precision
    cells = _Cells()
    # A file name is the user's: escaped for an attribute (quotes too), as for the text.
    file = one_line(file) if file else file  # an escape sequence in a name, written as its escape
    attribute = f' data-file="{html.escape(file, quote=True)}"' if file else ""
    parts = [f'<section class="trace"{attribute}>']
    if file:
        parts.append(f"<h2 class=file>{html.escape(file)}</h2>")
    shown: list[Entry] = []
    step = number_from
    stages_open = False  # each heading's <div class="stages"> closes at the next one
    blocks = document(trace, view).blocks
    steps = {block.name: number_from + i for i, block in enumerate(b for b in blocks if isinstance(b, Entry))}
    for block in blocks:
        match block:
            case Diagram():
                parts.append(_diagram(block, steps))
            case Heading(title=title, summary=summary):
                if stages_open:
                    parts.append("</div>")
                stages_open = True
                parts.append(f"<h2>{html.escape(title)}</h2>"
                             + (f'<p class="summary">{html.escape(summary)}</p>' if summary else "")
                             + '<div class="stages">')
            case Given(name=name, matrix=matrix):
                parts.append(f'<article class="input-block" data-name="{html.escape(name)}">')
                parts.append(_title(name, None, matrix.values))
                parts.append(_matrix(matrix.values, matrix.axes, "data-input", name, precision,
                                     full=view.full, cells=cells))
                parts.append("</article>")
            case Entry():
                parts.append(_stage(block, step, precision, view.full, cells))
                shown.append(block)
                step += 1
    if stages_open:
        parts.append("</div>")
    data, numbers = _page_data(trace, shown, view, cells, codes)
    parts.append(f'<script type="application/json" class="page-data">{_json(data)}</script>')
    parts.append(f'<script type="application/octet-stream" class="numbers">{numbers}</script>')
    parts.append("</section>")
    return "".join(parts), step


def _page_data(trace, shown: list[Entry], view: View, cells: _Cells, codes: dict[str, str]) -> tuple[dict, str]:
    """What the page's script explains the shown entries from, and the numbers it reads.

    A stage whose layer has a recipe (layers.base.Recipe) is explained in the page when an
    entry is clicked, from the matrices the recipe reads, embedded once at full precision
    (float64, deflated, base64); the other stages (a loss, a kind without a recipe, the
    update of a summarized weight) carry ``explain``'s text of each shown entry and the cells
    it reads, made here."""
    t = trace.general_pass()
    symbols = {entry.symbol: entry.name for entry in shown}
    stages, texts, reads, made = {}, {}, {}, {}
    for entry in shown if view.explain else ():  # a notebook's compact page explains nothing
        stage = trace.stage(entry.name)
        indices = list(_shown_entries(entry.matrix.values.shape, entry.matrix.axes, view.full))
        if stage.owner is not None:
            recipe = stage.owner.recipe(t, plain(entry.name))
        else:  # the update: an entry reads its weight and gradient there alone, so a summarized
            # weight carries its few texts rather than every number of two large matrices
            recipe = update_recipe(t, entry.name) if len(indices) == np.size(entry.matrix.values) else None
        general = np.shape(t.value(entry.name))
        stages[entry.name] = {"symbol": entry.symbol, "of": plain(entry.name), "general": list(general),
                              "user": list(np.shape(trace[entry.name]))}  # fmt: skip
        if recipe is not None:
            stages[entry.name] |= {"recipe": codes.setdefault(recipe.code, f"r{len(codes)}"), "p": recipe.p}
            reads |= dict.fromkeys(recipe.reads)
            made |= {key: (of, make) for key, of, make in recipe.made}
            continue
        for index in indices:
            explanation = explain_entry(trace, entry.name, index)
            key = _key(entry.name, index)
            texts[key] = {"text": render_text(explanation, view.precision),
                          "sources": _sources(trace, explanation, symbols, cells, "t:" + key)}  # fmt: skip
    matrices = {}
    for name in reads:
        values = t.value(name)
        matrices[name] = {"symbol": symbol(name), "general": list(values.shape), "user": list(t.user_shape(name)),
                          "offset": cells.add(values)}  # fmt: skip
    for key, (of, make) in made.items():  # a recipe's own: σ(−Z1) on Z1's shapes
        values = make()
        matrices[key] = {"symbol": key, "general": list(values.shape), "user": list(t.user_shape(of)),
                         "offset": cells.add(values)}  # fmt: skip
    data = {"precision": view.precision, "batched": trace.problem.batched, "inputs": list(trace.problem.inputs),
            "symbols": symbols, "stages": stages, "matrices": matrices, "texts": texts,
            "grids": cells.grids}  # fmt: skip
    # Deflated (a ReLU's zeros, a mask's ones go to almost nothing), inflated by the browser's
    # DecompressionStream; level 1: the bytes are mostly random digits, and a higher level
    # saves little for much more time.
    return data, base64.b64encode(zlib.compress(b"".join(cells.blocks), 1)).decode("ascii")


#: The diagram's look, inside its SVG: a page without a diagram stays as it was.
GRAPH_CSS = """
.node { fill: #eef4fa; stroke: #0f5d8c; }
.node.merge { fill: #fff4e0; stroke: #b45309; }
.name { text-anchor: middle; font-weight: 700; fill: #0f5d8c; }
.kind { text-anchor: middle; font-size: 11px; fill: #555; }
.edge { stroke: #555; stroke-width: 1.4; fill: none; }
.skip { stroke: #b45309; }
.sum { text-anchor: middle; font-size: 11px; fill: #7c2d12; }
a:hover .node { stroke-width: 3; }
"""
#: The figure around it.
GRAPH_STYLE = ("overflow-x: auto; background: #fff; border: 1px solid #d6d6de; border-radius: .4em; "
               "padding: .4em; margin: .4em 0")

#: The diagram's measures, in SVG units: a node's box, the space between nodes, an arc's rise.
NODE_W, NODE_H, NODE_GAP, ARC = 76, 40, 26, 18


def _lift(span: int) -> int:
    """How far above the nodes an arrow over ``span`` − 1 of them arcs: higher for longer
    skips, so that nested ones do not overlap, to three steps at most."""
    return ARC * min(1 + span // 2, 3)


def _diagram(graph: Diagram, steps: dict[str, int]) -> str:
    """The network's graph as an SVG figure: its matrices left to right in the order they
    are made (each a link to its stage), an arrow from each matrix to each layer that reads
    it (a skip arcs over the nodes between), and under each fork the sum of its gradient's
    paths (a link to the sum's stage)."""
    position = {node.name: i for i, node in enumerate(graph.nodes)}
    skips = [(a, b) for a, b in graph.edges if position[b] - position[a] > 1]
    top = 10 + max((_lift(position[b] - position[a]) for a, b in skips), default=0)
    width = len(graph.nodes) * (NODE_W + NODE_GAP)
    height = top + NODE_H + (46 if graph.sums else 12)

    def left(name):
        return 10 + position[name] * (NODE_W + NODE_GAP)

    def link(stage: str, body: str) -> str:
        return f'<a href="#stage-{steps[stage]}">{body}</a>' if stage in steps else body

    parts = [f'<figure class="graph" style="{GRAPH_STYLE}"><svg role="img" aria-label="the network as a graph" '
             f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg" '
             f'style="font: 13px system-ui, sans-serif"><style>{GRAPH_CSS}</style><defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
             'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#555"/></marker></defs>']  # fmt: skip
    middle = top + NODE_H / 2
    for a, b in graph.edges:
        if position[b] - position[a] == 1:
            parts.append(f'<line class="edge" x1="{left(a) + NODE_W}" y1="{middle}" x2="{left(b)}" y2="{middle}" '
                         'marker-end="url(#arrow)"/>')
        else:  # over the nodes between: the higher, the longer the skip
            x1, x2 = left(a) + NODE_W / 2, left(b) + NODE_W / 2 - 8
            lift = top - _lift(position[b] - position[a])
            parts.append(f'<path class="edge skip" d="M{x1},{top} C{x1},{lift} {x2},{lift} {x2},{top}" '
                         'marker-end="url(#arrow)"/>')
    for node in graph.nodes:
        x = left(node.name)
        box = (f'<rect class="node{" merge" * node.merge}" x="{x}" y="{top}" width="{NODE_W}" height="{NODE_H}" rx="6"/>'
               f'<text x="{x + NODE_W / 2}" y="{top + 17}" class="name">{html.escape(node.name)}</text>'
               f'<text x="{x + NODE_W / 2}" y="{top + 32}" class="kind">{html.escape(node.kind)}</text>')
        parts.append(link(node.stage, box))
    for fork in graph.sums:
        x = left(fork.name) + NODE_W / 2
        paths = " + ".join(f"via {path}" for path in fork.paths)
        parts.append(link(fork.stage, f'<text x="{x}" y="{top + NODE_H + 18}" class="sum">{html.escape(fork.symbol)} ='
                                       f'</text><text x="{x}" y="{top + NODE_H + 34}" class="sum">'
                                       f'{html.escape(paths)}</text>'))
    parts.append("</svg><figcaption>The network: each matrix links to its stage; under a matrix that feeds "
                 "several layers, its gradient: the sum of what each path sends back.</figcaption></figure>")
    return "".join(parts)


def _stage(entry: Entry, step: int, precision: int, full: bool, cells: _Cells) -> str:
    """One stage's article: its title, matrix (and a layer's further matrix), chain rule and
    notes."""
    matrix = entry.matrix
    notes = (*entry.before, *entry.after, *([legend_text(entry.legend)] if entry.legend else []))
    summary = summary_note(np.shape(matrix.values), matrix.axes, full)
    parts = [
        f'<article class="stage {entry.section}" id="stage-{step}" data-step="{step}" '
        f'data-name="{html.escape(entry.name)}">',
        _title(entry.symbol, entry.equation, matrix.values),
    ]
    if summary:
        parts.append(f'<p class="summary">{html.escape(summary)}</p>')
    parts.append('<div class="body"><div class="values">')
    parts.append(_matrix(matrix.values, matrix.axes, "data-term", entry.name, precision, matrix.marks,
                         full=full, cells=cells))
    if entry.extra is not None:
        extra = entry.extra
        parts.append(f'<div class="extra"><h4>{html.escape(extra.symbol)}</h4>'
                     f'<div class="note">{html.escape(extra.note)}</div>')
        parts.append(_matrix(extra.matrix.values, extra.matrix.axes, "", extra.symbol, precision,
                             border=extra.matrix.border, full=full))
        parts.append("</div>")
    note_html = "".join(f'<div class="note">{html.escape(line)}</div>' for line in notes)
    parts.append(f'</div><div class="derivation">{_derivation(entry.derivation, precision)}{note_html}</div></div></article>')
    return "".join(parts)


def _shown_entries(dims, axes, full):
    """Every index of a matrix of shape ``dims`` that the page shows."""
    if not dims:
        yield ()
        return
    lead = len(axes)
    trailing = dims[lead:]
    for table in (shown_tables(dims[:lead], full) if lead else [()]):
        if table is None:
            continue
        if len(trailing) > 2:
            middles = list(np.ndindex(trailing[:-2]))
            trailing2 = trailing[-2:]
        else:
            middles, trailing2 = [()], trailing
        for middle in middles:
            ids = [[i for i in shown_indices(n, full) if i is not None] for n in trailing2]
            for inner in np.ndindex(*(len(i) for i in ids)):
                yield tuple(int(i) for i in (*table, *middle, *(ids[k][j] for k, j in enumerate(inner))))


def _json(data) -> str:
    """JSON safe inside a <script> element."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def render(trace, view: View = View()) -> str:
    """The page of one trace."""
    return page([(None, trace)], view)


def page(traces, view: View = View(), title: str = "cnntrace") -> str:
    """The page of several traces, ``[(file or None, trace), …]``, one section each."""
    sections = []
    step = 0
    codes: dict[str, str] = {}  # a recipe's code -> its key in the page's RECIPES
    for file, trace in traces:
        section, step = _trace_section(trace, view, file, step, codes)
        sections.append(section)
    recipes = ",".join(f"{json.dumps(name)}: {code.strip()}" for code, name in codes.items())
    return (
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>"
        '<header><h1>' + html.escape(title) + '</h1><nav class="stepper" aria-label="stages">'
        '<button type="button" id="previous" title="previous stage (←)">← previous</button>'
        '<span id="position" aria-live="polite"></span>'
        '<button type="button" id="next" title="next stage (→)">next →</button></nav></header>'
        '<div class="layout"><main>' + "".join(sections) + "</main>"
        '<aside id="panel"><h2>Stage</h2><div id="stage-info"><p class="hint">← and → walk the stages.</p></div>'
        '<h2>Entry</h2><pre id="explanation" class="empty" aria-live="polite">'
        "Click a cell (or focus it and press Enter) to see its arithmetic.</pre>"
        '<p class="key"><span class="swatch source-swatch"></span> the cells it is computed from'
        ' <span class="swatch won-swatch">*</span> won its pool window</p></aside></div>'
        f'<script class="engine">{ENGINE}var RECIPES = {{{recipes}}};</script><script>{SCRIPT}</script></body></html>\n'
    )


#: The page's explanations, without the page: ``cnntraceNumber(x, p)`` is render/format.py's
#: ``number``, ``cnntraceGeneral(x)`` Python's ``f"{x:g}"``, ``cnntraceRepr(x)`` its ``repr``
#: and ``cnntraceFsum`` math.fsum,
#: digit for digit; ``cnntraceExplainer(data, numbers, recipes, has)`` gives ``explain(term) -> {text, sources}`` for the TERM of a shown entry, from a
#: section's data (``_page_data``), its numbers (a Float64Array), the recipes' functions by
#: their code, and ``has(key)``, whether a cell is on the page. Its ``renderText`` is
#: render/explanation.py's ``render_text`` (its defaults), digit for digit.
ENGINE = """
function fixed(x, p) {  // Python's f"{x:.{p}f}": ties to even, on the exact binary value
  var a = Math.abs(x), text = a.toFixed(p), exact = a.toFixed(100), dot = exact.indexOf(".");
  if (/^50*$/.test(exact.slice(dot + 1 + p))) {
    var down = exact.slice(0, p ? dot + 1 + p : dot);
    if ((down.charCodeAt(down.length - 1) - 48) % 2 === 0) { text = down; }
  }
  return (x < 0 || Object.is(x, -0) ? "-" : "") + text;
}
function exponential(x, p) {  // Python's f"{x:.{p}e}"
  if (!isFinite(x)) { return x > 0 ? "inf" : "-inf"; }
  var a = Math.abs(x), text = a.toExponential(p), exact = a.toExponential(100);
  var e = exact.indexOf("e"), digits = exact.slice(0, e);
  if (/^50*$/.test(digits.slice(2 + p))) {
    var down = digits.slice(0, p ? 2 + p : 1);
    if ((down.charCodeAt(down.length - 1) - 48) % 2 === 0) { text = down + exact.slice(e); }
  }
  var mantissa = text.slice(0, text.indexOf("e")), power = Number(text.slice(text.indexOf("e") + 1));
  var digitsOut = String(Math.abs(power));
  return (x < 0 ? "-" : "") + mantissa + "e" + (power < 0 ? "-" : "+") + (digitsOut.length < 2 ? "0" : "") + digitsOut;
}
function cnntraceNumber(x, p) {
  if (isNaN(x)) { return "nan"; }
  var m = Math.abs(x);
  if (x !== 0 && (m < 0.5 * Number("1e-" + p) || m >= 1e7)) { return exponential(x, p); }
  var text = fixed(x, p);
  return text[0] === "-" && /^[-0.]*$/.test(text) ? text.slice(1) : text;
}
function cnntraceGeneral(x) {  // Python's f"{x:g}": 6 significant digits, trailing zeros cut
  if (isNaN(x)) { return "nan"; }
  if (!isFinite(x)) { return x > 0 ? "inf" : "-inf"; }
  if (x === 0) { return Object.is(x, -0) ? "-0" : "0"; }
  var text = exponential(x, 5), power = Number(text.slice(text.indexOf("e") + 1));
  function cut(digits) { return digits.indexOf(".") < 0 ? digits : digits.replace(/0+$/, "").replace(/\\.$/, ""); }
  if (power >= -4 && power < 6) { return cut(fixed(x, 5 - power)); }
  return cut(text.slice(0, text.indexOf("e"))) + text.slice(text.indexOf("e"));
}
function cnntraceRepr(x) {  // Python's repr of a float: the shortest digits that read back
  if (isNaN(x)) { return "nan"; }
  if (!isFinite(x)) { return x > 0 ? "inf" : "-inf"; }
  var sign = x < 0 || Object.is(x, -0) ? "-" : "", text = Math.abs(x).toExponential();
  var digits = text.slice(0, text.indexOf("e")).replace(".", ""), point = Number(text.slice(text.indexOf("e") + 1)) + 1;
  if (point <= -4 || point > 16) {
    var power = point - 1, exponent = String(Math.abs(power));
    return sign + digits[0] + (digits.length > 1 ? "." + digits.slice(1) : "") + "e" + (power < 0 ? "-" : "+") +
      (exponent.length < 2 ? "0" : "") + exponent;
  }
  if (point <= 0) { return sign + "0." + "0".repeat(-point) + digits; }
  if (point >= digits.length) { return sign + digits + "0".repeat(point - digits.length) + ".0"; }
  return sign + digits.slice(0, point) + "." + digits.slice(point);
}
function cnntraceFsum(values) {  // math.fsum: Shewchuk's partials, rounded half to even at the end
  var partials = [], i, j, x, y, t, hi, lo = 0, yr, plain = 0;
  for (i = 0; i < values.length; i++) {
    x = values[i]; plain += x;
    var n = 0;
    for (j = 0; j < partials.length; j++) {
      y = partials[j];
      if (Math.abs(x) < Math.abs(y)) { t = x; x = y; y = t; }
      hi = x + y; yr = hi - x; lo = y - yr;
      if (lo !== 0) { partials[n++] = lo; }
      x = hi;
    }
    partials.length = n;
    if (x !== 0) { partials.push(x); }
  }
  if (!isFinite(plain)) { return plain; }
  var k = partials.length;
  hi = 0;
  if (k > 0) {
    hi = partials[--k];
    while (k > 0) {
      x = hi; y = partials[--k]; hi = x + y; yr = hi - x; lo = y - yr;
      if (lo !== 0) { break; }
    }
    if (k > 0 && ((lo < 0 && partials[k - 1] < 0) || (lo > 0 && partials[k - 1] > 0))) {
      y = lo * 2; x = hi + y; yr = x - hi;
      if (y === yr) { hi = x; }
    }
  }
  return hi;
}
function cnntraceExplainer(data, numbers, recipes, has) {
  "use strict";
  var number = cnntraceNumber, fsum = cnntraceFsum;
  function sum(values) { return values.reduce(function (a, b) { return a + b; }, 0); }
  var FUNCTIONS = {
    "": function (v) { return fsum(v); },
    "ReLU": function (v) { var s = fsum(v); return s > 0 ? s : 0; },
    "LeakyReLU": function (v, a) { var s = fsum(v); return s > 0 ? s : a * s; },
    "step": function (v) { return fsum(v) > 0 ? 1 : 0; },
    "step at 0": function (v) { return fsum(v) >= 0 ? 1 : 0; },
    "leaky step": function (v, a) { return fsum(v) > 0 ? 1 : a; },
    "max": function (v) { return v.reduce(function (best, x) { return x > best ? x : best; }); },
    "share": function (v, a) { return v[a] / fsum(v); }
  };
  var LARGEST = 64;
  function grouped(n) { return String(n).replace(/\\B(?=(\\d{3})+(?!\\d))/g, ","); }
  function label(f) { return f.symbol + (f.index.length ? "[" + f.index.join(",") + "]" : ""); }
  function value(term) { return term.factors.reduce(function (a, f) { return a * f.value; }, 1); }
  function applied(e, values, p) {
    var texts = values.map(function (v) { return number(v, p); }), total = number(sum(values), p);
    var alpha = e.parameter === null || e.parameter === undefined ? "" : number(e.parameter, p);
    switch (e.fn) {
      case "LeakyReLU": return "LeakyReLU(" + total + ") = " + total + " if " + total + " > 0 else " + alpha + "·" + total;
      case "leaky step": return "1 if " + total + " > 0 else " + alpha;
      case "share": return texts[e.parameter] + " / (" + texts.join(" + ") + ")";
      case "max": return "max(" + texts.join(", ") + ")";
      case "ReLU": return "ReLU(" + total + ") = max(" + total + ", 0)";
      case "step": return "1 if " + total + " > 0 else 0";
      case "step at 0": return "1 if " + total + " ≥ 0 else 0";
      case "tanh": return "tanh(" + total + ")";
      case "σ": return ("σ(" + total + ") = 1 / (1 + e^(−" + total + "))").split("−-").join("");
      default: return null;
    }
  }
  function renderText(e, p) {
    var terms = e.terms, values = terms.map(value), fn = e.fn || "";
    var lines = [e.label + " = " + e.formula];
    var shown = terms.map(function (term, k) { return k; });
    var summed = fn !== "max" && fn !== "share", left = "";
    if (summed && shown.length > LARGEST) {
      var order = shown.slice().sort(function (a, b) { return Math.abs(values[b]) - Math.abs(values[a]); });
      left = "… " + grouped(shown.length - LARGEST) + " smaller terms left out (--all shows every term)";
      shown = order.slice(0, LARGEST).sort(function (a, b) { return a - b; });
    }
    var symbols = {}, products = {}, ws = 0, wn = 0, wp = 0;
    shown.forEach(function (k) {
      var term = terms[k];
      symbols[k] = term.factors.map(label).join("·");
      products[k] = term.factors.map(function (f, i) {
        var text = number(f.value, p);
        return i === 0 || text[0] !== "-" ? text : "(" + text + ")";
      }).join("·");
      ws = Math.max(ws, symbols[k].length); wn = Math.max(wn, products[k].length);
      wp = Math.max(wp, number(values[k], p).length);
    });
    var joiner = fn === "max" ? "  " : "+ ";
    shown.forEach(function (k, position) {
      var term = terms[k], line = "  " + (position === 0 ? "  " : joiner) + symbols[k].padEnd(ws);
      var product = number(values[k], p).padStart(wp);
      line += term.factors.length > 1 ? "  =  " + products[k].padStart(wn) + "  =  " + product : "  =  " + product;
      if (term.note) { line += "   (" + term.note + ")"; }
      lines.push(line.replace(/\\s+$/, ""));
    });
    if (left) { lines.push("    " + left); }
    if (!terms.length) { lines.push("  (no terms)"); }
    if (terms.length > 1 && !fn) { lines.push("  " + terms.length + " terms"); }
    e.notes.forEach(function (note) { lines.push("  " + note); });
    var line = applied(e, values, p);
    if (line) { lines.push(e.label + " = " + line); }
    // A function JavaScript computes otherwise than Python (tanh, σ): its value made by Python
    lines.push(e.label + " = " + number(e.value === undefined ? FUNCTIONS[fn](values, e.parameter) : e.value, p));
    return lines.join("\\n") + "\\n";
  }
  // -- the pass on the general shapes, as the View of layers/base.py reads it
  function ravel(index, shape) {
    var flat = 0;
    for (var k = 0; k < shape.length; k++) { flat = flat * shape[k] + index[k]; }
    return flat;
  }
  function unravel(flat, shape) {
    var out = new Array(shape.length);
    for (var k = shape.length - 1; k >= 0; k--) { out[k] = flat % shape[k]; flat = Math.floor(flat / shape[k]); }
    return out;
  }
  function product(shape) { return shape.reduce(function (a, n) { return a * n; }, 1); }
  function userIndex(m, index) {  // tracer.GeneralPass.user_index
    var general = m.general, user = m.user;
    if (!general.length || !user.length) { return []; }
    var lead = general.length - user.length, tail = lead >= 0;
    for (var k = 0; tail && k < general.length; k++) {
      tail = k < lead ? general[k] === 1 : general[k] === user[k - lead];
    }
    if (tail) { return index.slice(lead); }
    if (product(general) !== product(user)) { return data.batched ? index.slice() : index.slice(1); }
    return unravel(ravel(index, general), user);
  }
  function matrix(name) {
    var m = data.matrices[name];
    if (!m) { throw new Error(name + " is not on the page"); }
    return m;
  }
  var t = {
    shape: function (name) { return matrix(name).general; },
    value: function (name, index) { var m = matrix(name); return numbers[m.offset + ravel(index, m.general)]; },
    factor: function (name, index, symbol) {
      var m = matrix(name);
      return { symbol: symbol || m.symbol, index: userIndex(m, index), value: numbers[m.offset + ravel(index, m.general)], source: "" };
    },
    padded: function (name, m, c, row, col) {
      var shape = matrix(name).general;
      if (row >= 0 && row < shape[2] && col >= 0 && col < shape[3]) { return t.factor(name, [m, c, row, col]); }
      return t.constant("pad(" + name + ")[" + row + "," + col + "]", 0);
    },
    constant: function (symbol, value) { return { symbol: symbol, index: [], value: value, source: "" }; },
    term: function (factors, note) { return { factors: factors, note: note || "" }; },
    label: label
  };
  function key(name, index) { return name + (index.length ? "[" + index.join(",") + "]" : ""); }
  function sources(terms, own) {
    var out = [];
    terms.forEach(function (term) {
      term.factors.forEach(function (f) {
        var read = f.source || f.symbol, k;
        if (data.inputs.indexOf(read) >= 0) { k = "i:" + key(read, f.index); }
        else if (Object.prototype.hasOwnProperty.call(data.symbols, read)) { k = "t:" + key(data.symbols[read], f.index); }
        else { return; }
        if (k !== own && has(k) && out.indexOf(k) < 0) { out.push(k); }
      });
    });
    return out;
  }
  return function explain(term) {
    var given = data.texts[term];
    if (given) { return given; }
    var open = term.indexOf("["), name = open < 0 ? term : term.slice(0, open);
    var index = open < 0 ? [] : term.slice(open + 1, -1).split(",").map(Number);
    var stage = data.stages[name];
    if (!stage || !stage.recipe) { return null; }
    var general = stage.general.length ? unravel(ravel(index, stage.user), stage.general) : [];
    var e = recipes[stage.recipe](t, stage.p, stage.of, general);
    var explanation = { label: stage.symbol + (index.length ? "[" + index.join(",") + "]" : ""), formula: e.formula,
                        terms: e.terms, fn: e.fn || "", notes: e.notes || [], parameter: e.parameter,
                        value: e.value };
    return { text: renderText(explanation, data.precision), sources: sources(e.terms, "t:" + term) };
  };
}
"""


CSS = """
:root { --font: clamp(14px, 0.6vw + 8px, 24px); --mono: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; }
* { box-sizing: border-box; }
html { scroll-padding-top: 3.5em; }  /* a focused or stepped-to cell is never under the header */
body { margin: 0; font: var(--font)/1.4 system-ui, "DejaVu Sans", sans-serif; color: #1b1b1f; background: #fafafa; }
header { position: sticky; top: 0; z-index: 2; display: flex; flex-wrap: wrap; align-items: center; gap: 1em;
  padding: .4em 1em; background: #20242c; color: #fff; }
header h1 { font-size: 1.05em; margin: 0; font-weight: 600; }
.stepper { display: flex; align-items: center; gap: .6em; }
.stepper button { font: inherit; padding: .2em .8em; border-radius: .3em; border: 1px solid #889; background: #343a46; color: #fff; cursor: pointer; }
.stepper button:focus-visible { outline: 3px solid #ffbf47; }
#position { font-family: var(--mono); min-width: 9em; }
.layout { display: grid; grid-template-columns: minmax(0, 1fr) minmax(20em, 38%); gap: 1em; padding: 0 1em; }
main { min-width: 0; }
aside { position: sticky; top: 3em; align-self: start; max-height: calc(100vh - 3.5em); overflow: auto; padding: .5em 0 1em; }
aside h2 { font-size: .95em; margin: .6em 0 .3em; color: #555; text-transform: uppercase; letter-spacing: .05em; }
#explanation { font: .72em/1.35 var(--mono); white-space: pre; overflow-x: auto; background: #fff; border: 1px solid #ccd;
  border-radius: .3em; padding: .6em; margin: 0; min-height: 4em; }
#explanation.empty { font-family: inherit; color: #666; white-space: normal; }
#stage-info { background: #fff; border: 1px solid #ccd; border-radius: .3em; padding: .5em .7em; }
#stage-info h3 { margin: 0 0 .3em; }
h2 { font-size: 1.15em; margin: 1.2em 0 .4em; border-bottom: 1px solid #ccd; }
h2.file { font-family: var(--mono); }
.stages { display: flex; flex-wrap: wrap; gap: .8em; align-items: flex-start; }
article { background: #fff; border: 1px solid #d6d6de; border-radius: .4em; padding: .4em .7em .6em; max-width: 100%; overflow-x: auto; scroll-margin-top: 3.5em; }
article.current { border-color: #d97706; box-shadow: 0 0 0 3px #fbbf24; }
h3 { font-size: 1em; font-weight: normal; margin: 0 0 .3em; }
.symbol { font-weight: 700; color: #0f5d8c; }
.shape { color: #777; font-size: .85em; margin-left: .4em; }
.summary { color: #666; font-size: .85em; margin: 0 0 .3em; }
.body { display: flex; flex-wrap: wrap; gap: .3em 1.2em; align-items: flex-start; }
.derivation { font-size: .85em; color: #333; max-width: 34em; }
.derivation .chain { font-family: var(--mono); }
.derivation .with, .derivation .note, .extra .note { color: #666; }
.tables { display: flex; flex-wrap: wrap; gap: .3em 1em; }
figure { margin: 0; }
figcaption { font-size: .8em; color: #666; }
table.grid { border-collapse: collapse; font: .85em var(--mono); }
.grid th { font-weight: normal; color: #888; padding: 0 .35em; font-size: .85em; }
.grid td, .scalar .cell { padding: .12em .45em; text-align: right; border: 1px solid #e4e4ea; cursor: pointer; white-space: nowrap; }
.scalar .cell { display: inline-block; font: .95em var(--mono); }
.grid td.zero { color: #999; }
.grid td.pad { font-style: italic; color: #888; }
.grid td.gap { cursor: default; color: #888; text-align: center; }
.grid td.won { font-weight: 700; text-decoration: underline; }
.mark { color: #b45309; font-weight: 700; }
[data-term]:focus-visible, [data-input]:focus-visible { outline: 3px solid #2563eb; outline-offset: -2px; }
.selected { outline: 3px solid #111 !important; outline-offset: -2px; }
.source { outline: 3px solid #16a34a !important; outline-offset: -3px; box-shadow: inset 0 0 0 2px #bbf7d0; }
.legend { display: flex; align-items: center; gap: .4em; font: .7em var(--mono); color: #777; margin-top: .3em; }
.legend .bar { display: inline-block; width: 7em; height: .7em; border: 1px solid #ccd; }
.key { font-size: .8em; color: #555; }
.swatch { display: inline-block; min-width: 1.2em; text-align: center; }
.source-swatch { height: .9em; outline: 3px solid #16a34a; outline-offset: -3px; }
.won-swatch { color: #b45309; font-weight: 700; }
.gap-tables { align-self: center; color: #888; }
.deferred { background: #f4f4f7; border: 1px dashed #d6d6de; }  /* a table the script draws when near */
.extra { margin-top: .4em; }
.extra h4 { margin: .2em 0; font-weight: normal; font-style: italic; }
@media (max-width: 900px) {  /* one column: the panel stays in sight at the bottom */
  .layout { grid-template-columns: 1fr; }
  aside { position: sticky; top: auto; bottom: 0; max-height: 42vh; background: #fafafa; border-top: 2px solid #ccd; }
  #stage-info .derivation { display: none; }
}
@media (min-width: 1800px) { .layout { grid-template-columns: minmax(0, 1fr) minmax(24em, 36%); } }
@media print {
  header .stepper, .hint { display: none; }
  header { position: static; background: none; color: #000; border-bottom: 1px solid #000; }
  body { background: #fff; font-size: 10pt; }
  .layout { display: block; padding: 0; }
  aside { position: static; max-height: none; }
  aside > h2:first-child, #stage-info, .key { display: none; }
  body:has(#explanation.empty) aside { display: none; }
  #explanation { white-space: pre-wrap; }
  article { break-inside: avoid; overflow: visible; box-shadow: none !important; border-color: #bbb !important; }
  * { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
}
"""

SCRIPT = """
(function () {
  "use strict";
  var explanation = document.getElementById("explanation");
  var info = document.getElementById("stage-info");
  var position = document.getElementById("position");
  var traces = [];
  document.querySelectorAll("section.trace").forEach(function (section) {
    var cells = new Map();
    section.querySelectorAll("[data-term]").forEach(function (el) { cells.set("t:" + el.dataset.term, el); });
    section.querySelectorAll("[data-input]").forEach(function (el) { cells.set("i:" + el.dataset.input, el); });
    var data = JSON.parse(section.querySelector("script.page-data").textContent);
    traces.push({ section: section, cells: cells, data: data, numbers: null, explain: null });
  });
  function numbers(trace) {  // the section's numbers (deflated float64s, base64), read once: a promise
    if (!trace.numbers) {
      var text = atob(trace.section.querySelector("script.numbers").textContent);
      var bytes = new Uint8Array(text.length);
      for (var k = 0; k < text.length; k++) { bytes[k] = text.charCodeAt(k); }
      var stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
      trace.numbers = new Response(stream).arrayBuffer().then(function (buffer) {
        trace.values = new Float64Array(buffer);
        return trace.values;
      });
    }
    return trace.numbers;
  }
  function keys(trace) {  // every cell of the section, drawn or not
    var out = new Set(trace.cells.keys());
    trace.data.grids.forEach(function (g) {
      var head = g.attribute === "data-term" ? "t:" : "i:";
      g.rows.forEach(function (r) {
        g.cols.forEach(function (c) {
          if (r !== null && c !== null) { out.add(head + g.name + "[" + g.prefix.concat(g.two ? [r, c] : [c]).join(",") + "]"); }
        });
      });
    });
    return out;
  }
  function explainer(trace) {
    if (!trace.explain) {
      var all = keys(trace);
      trace.explain = cnntraceExplainer(trace.data, trace.values, RECIPES, function (key) { return all.has(key); });
    }
    return trace.explain;
  }
  // -- the tables of large matrices, drawn as they come near the window: _grid's markup
  function round(x) { var r = Math.round(x); return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r; }  // Python's round
  function colour(v, scale) {
    if (!isFinite(v) || scale === 0 || v === 0) { return "hsl(0 0% 99%)"; }
    var t = Math.min(Math.abs(v) / scale, 1);
    return "hsl(" + (v > 0 ? 4 : 214) + " " + round(30 + 55 * t) + "% " + round(97 - 35 * t) + "%)";
  }
  function grid(g, values) {
    var out = ['<table class="grid">'], k = 0;
    var header = g.cols.map(function (c) { return "<th>" + (c === null ? "…" : c) + "</th>"; }).join("");
    out.push("<thead><tr>" + (g.two ? "<th></th>" : "") + header + "</tr></thead><tbody>");
    g.rows.forEach(function (r) {
      var line = ["<tr>"];
      if (g.two) { line.push("<th>" + (r === null ? "…" : r) + "</th>"); }
      g.cols.forEach(function (c) {
        if (r === null || c === null) { line.push('<td class="gap">…</td>'); return; }
        var v = values[g.offset + k], mark = g.marks ? g.marks[k] : 0, classes = [], marked = "";
        k++;
        if (mark) { classes.push("won"); marked = '<span class="mark">' + (mark === 1 ? "*" : "*" + mark) + "</span>"; }
        if (v === 0) { classes.push("zero"); }
        var index = g.prefix.concat(g.two ? [r, c] : [c]);
        line.push("<td " + g.attribute + '="' + g.name + "[" + index.join(",") + ']" tabindex="0"' +
                  (classes.length ? ' class="' + classes.join(" ") + '"' : "") + ' style="background:' +
                  colour(v, g.scale) + '">' + cnntraceNumber(v, g.precision) + marked + "</td>");
      });
      line.push("</tr>");
      out.push(line.join(""));
    });
    out.push("</tbody></table>");
    return out.join("");
  }
  var litKeys = new Set();
  function draw(place) {
    var trace = traces.find(function (t) { return t.section.contains(place); });
    if (!trace || !place.isConnected) { return; }
    if (!trace.values) { numbers(trace).then(function () { draw(place); }); return; }
    var holder = document.createElement("div");
    holder.innerHTML = grid(trace.data.grids[Number(place.dataset.grid)], trace.values);
    var table = holder.firstChild;
    place.replaceWith(table);
    table.querySelectorAll("[data-term], [data-input]").forEach(function (el) {
      var key = el.dataset.term !== undefined ? "t:" + el.dataset.term : "i:" + el.dataset.input;
      trace.cells.set(key, el);
      if (litKeys.has(key)) { el.classList.add("source"); lit.push(el); }
    });
  }
  function drawAll() { document.querySelectorAll("div.deferred").forEach(draw); }
  if ("IntersectionObserver" in window) {
    var observer = new IntersectionObserver(function (entries) {
      entries.forEach(function (entry) { if (entry.isIntersecting) { observer.unobserve(entry.target); draw(entry.target); } });
    }, { rootMargin: "800px" });
    document.querySelectorAll("div.deferred").forEach(function (place) { observer.observe(place); });
  } else { drawAll(); }
  window.addEventListener("beforeprint", drawAll);
  // Every section's numbers read as soon as the page is open; <html data-ready> says when.
  Promise.all(traces.map(numbers)).then(function () { document.documentElement.dataset.ready = "true"; });
  var lit = [];
  function clear() { lit.forEach(function (el) { el.classList.remove("source", "selected"); }); lit = []; litKeys.clear(); }
  function show(el) {
    clear();
    explanation.classList.remove("empty");
    var trace = traces.find(function (t) { return t.section.contains(el); });
    el.classList.add("selected"); lit.push(el);
    if (el.dataset.input !== undefined) {
      explanation.textContent = el.dataset.input + " = " + el.textContent.replace(/\\*\\d*$/, "") +
        "\\n  an input, as the pass used it (before the update)";
      return;
    }
    if (!trace.values) {  // a click before the numbers are read: explained when they are
      explanation.textContent = "…";
      numbers(trace).then(function () { if (el.classList.contains("selected")) { show(el); } });
      return;
    }
    var entry = explainer(trace)(el.dataset.term);
    if (!entry) { explanation.textContent = el.dataset.term + ": no explanation on this page"; return; }
    explanation.textContent = entry.text.replace(/\\n$/, "");
    entry.sources.forEach(function (key) {
      litKeys.add(key);
      var source = trace.cells.get(key);
      if (source) { source.classList.add("source"); lit.push(source); }
    });
    var stage = el.closest("article.stage");
    if (stage) { setCurrent(stages.indexOf(stage), false); }
  }
  document.addEventListener("click", function (event) {
    var el = event.target.closest("[data-term], [data-input]");
    if (el) { show(el); }
  });
  var stages = Array.prototype.slice.call(document.querySelectorAll("article.stage"));
  var current = -1;
  function setCurrent(i, scroll) {
    if (!stages.length) { return; }
    i = Math.max(0, Math.min(stages.length - 1, i));
    if (current >= 0) { stages[current].classList.remove("current"); }
    current = i;
    var stage = stages[i];
    stage.classList.add("current");
    position.textContent = (i + 1) + " / " + stages.length + "  " + stage.querySelector(".symbol").textContent;
    info.innerHTML = "";
    info.appendChild(stage.querySelector("h3").cloneNode(true));
    var derivation = stage.querySelector(".derivation");
    if (derivation) { info.appendChild(derivation.cloneNode(true)); }
    if (scroll) { stage.scrollIntoView({ block: "nearest", behavior: "auto" }); }
  }
  function move(by) { setCurrent(current < 0 ? 0 : current + by, true); }
  document.getElementById("previous").addEventListener("click", function () { move(-1); });
  document.getElementById("next").addEventListener("click", function () { move(1); });
  document.addEventListener("keydown", function (event) {
    if (event.altKey || event.ctrlKey || event.metaKey) { return; }
    if (event.key === "ArrowRight") { event.preventDefault(); move(1); }
    else if (event.key === "ArrowLeft") { event.preventDefault(); move(-1); }
    else if (event.key === "Enter" || event.key === " ") {
      var el = document.activeElement && document.activeElement.closest && document.activeElement.closest("[data-term], [data-input]");
      if (el) { event.preventDefault(); show(el); }
    }
  });
  if (stages.length) { setCurrent(0, false); }
})();
"""
