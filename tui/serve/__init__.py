"""`zootui serve`: the library behind an OpenAI-compatible HTTP API (no Textual here).

The web stack (Starlette, uvicorn, sse-starlette) comes with the ``serve`` extra; only ``tui.serve.app``
imports it, so the rest of zootui runs without it.
"""
