"""Agent runtime: tool registry, tool-use loop, sandboxed code tool, search environment, context strategies.

Runs against any OpenAI-compatible chat endpoint. Modules: `tools` (registry), `loop` (`Agent`),
`context` (strategies and token counting), `code_tool` (sandboxed Python), `search_corpus` and
`search_env` (offline BrowseComp-like environment), `evaluate` (per-strategy evaluation and plot),
`scripted` and `scripted_search` (a deterministic OpenAI-compatible policy server for tests),
`commands` (`dsv32 agent ...`).
"""
