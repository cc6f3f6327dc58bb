"""OpenAI-compatible serving of dsv32 checkpoints, and the chat interfaces built on it.

Request path: `app.py` (FastAPI routes, body limits, errors) -> `protocol.py` (request models,
OpenAI-style errors) -> `chat_plan.py` (encoding, tool_choice rules, sampling) -> `generation.py`
(engine tokens -> detokenised text -> chat parser -> stop strings) -> `chat_api.py` /
`completions_api.py` (response objects and SSE chunks, `streaming.py`). Engines sit behind
`backend.py`: `engine_backend.py` adapts dsv32's continuous-batching engine, `replay.py` is a
scripted test double. Also: `metrics.py` (Prometheus text), `server.py` (uvicorn runners),
`loading.py` (checkpoint -> state), `terminal.py` + `chat_command.py` (`dsv32 chat`),
`commands.py` (`dsv32 serve`), `page.html` (the chat page at /), `loadtest.py` + `bench.py`
(server load benchmark), `smoke.py` (serving smoke test for the demo), `tiny.py` (a throwaway
servable checkpoint).
"""
