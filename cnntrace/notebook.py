"""How a trace shows itself in a notebook: the compact interactive page and the Markdown view,
registered as the trace's display (tracer.DISPLAY). Loaded with the public API (see
cnntrace/__init__.py), so that the tracer itself imports no renderer."""

from __future__ import annotations

import html

from cnntrace.render import View
from cnntrace.render.html import render as render_page
from cnntrace.render.markdown import render as render_markdown
from cnntrace.tracer import DISPLAY

#: The largest page a notebook cell embeds (its output is saved in the notebook's file).
MAX_PAGE_BYTES = 300_000


def page_in_frame(trace) -> str:
    """The interactive page, compact (matrices without their derivations, nor the
    explanations a click shows: those are ``cnntrace explain``'s), in an iframe so that its
    style and script stay its own; past MAX_PAGE_BYTES, the trace's one-line summary and how
    to see the whole page."""
    page = render_page(trace, View(brief=True, explain=False))
    if len(page.encode()) > MAX_PAGE_BYTES:
        return (f"<p><code>{html.escape(repr(trace))}</code><br>The page would take {len(page.encode()) // 1000} kB, "
                f"more than a notebook cell keeps ({MAX_PAGE_BYTES // 1000} kB): write it with "
                "<code>cnntrace step</code> and its html option.</p>")  # fmt: skip
    return (f'<iframe srcdoc="{html.escape(page, quote=True)}" title="cnntrace trace" '
            'style="width: 100%; height: 32em; border: 1px solid #ccc"></iframe>')  # fmt: skip


def markdown(trace) -> str:
    """The Markdown view, matrices without their derivations."""
    return render_markdown(trace, View(brief=True))


DISPLAY.update(html=page_in_frame, markdown=markdown)
