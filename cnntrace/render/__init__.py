"""Renderers: each turns a Trace into a value (a rich renderable or a string); none prints."""
