"""Serve an environment's tools over the Model Context Protocol (stdio, the `mcp` SDK).

One server process holds one episode: a private in-memory copy of the environment's database
(with the chosen task's starting state), so write tools change only that copy. `tools/list`
returns the task's toolset (default: the first task, or `--task`) with the JSON schemas from the
manifest; `tools/call` validates arguments and returns the result as JSON text, or an error
result (`isError`) with the message for unknown tools and bad arguments.
"""

from __future__ import annotations

import json
import logging

from dsv32.envs.episode import Episode
from dsv32.envs.format import load_environment
from dsv32.envs.tools import ToolError

logger = logging.getLogger(__name__)


def build_server(env_dir: str, task_id: str | None = None):
    import mcp.types as types
    from mcp.server.lowlevel import Server

    env = load_environment(env_dir)
    episode = Episode.from_env(env, task_id)
    specs = {name: episode.caller.library[name].spec for name in episode.task.tools}

    async def list_tools(ctx, params) -> types.ListToolsResult:
        tools = [
            types.Tool(name=s.name, description=s.description, input_schema=s.parameters)
            for s in specs.values()
        ]
        return types.ListToolsResult(tools=tools)

    async def call_tool(ctx, params) -> types.CallToolResult:
        try:
            result = episode.call(params.name, params.arguments or {})
        except ToolError as err:
            return types.CallToolResult(
                content=[types.TextContent(type="text", text=str(err))], is_error=True
            )
        text = json.dumps(result, ensure_ascii=False, default=str)
        return types.CallToolResult(content=[types.TextContent(type="text", text=text)])

    server = Server(
        f"dsv32-env-{env.env_id}",
        version="1",
        instructions=episode.task.instruction,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )
    return server, episode


def serve_stdio(env_dir: str, task_id: str | None = None) -> None:
    import anyio
    from mcp.server.stdio import stdio_server

    server, episode = build_server(env_dir, task_id)

    async def main() -> None:
        async with stdio_server() as (read_stream, write_stream):
            await server.run(read_stream, write_stream, server.create_initialization_options())

    try:
        anyio.run(main)
    finally:
        episode.close()
