"""How a trace shows itself in a notebook: the compact interactive page and the Markdown view,
registered as the trace's display (tracer.DISPLAY). Loaded with the public API (see
cnntrace/__init__.py), so that the tracer itself imports no renderer."""

from __future__ import annotations

import html

from cnntrace.render import View
from cnntrace.render.html import render as render_page
from cnntrace.render.markdown import render as render_markdown
from cnntrace.tracer import DISPLAY


def page_in_frame(trace) -> str:
    """The interactive page, compact (matrices without their derivations), in an iframe so
    that its style and script stay its own."""
    page = render_page(trace, View(brief=True))
    return (f'<iframe srcdoc="{html.escape(page, quote=True)}" title="cnntrace trace" '
            'style="width: 100%; height: 32em; border: 1px solid #ccc"></iframe>')  # fmt: skip


def markdown(trace) -> str:
    """The Markdown view, matrices without their derivations."""
    return render_markdown(trace, View(brief=True))


DISPLAY.update(html=page_in_frame, markdown=markdown)
