"""The environment format (round trip, validated load) and tool-call validation."""

from __future__ import annotations

import json
import shutil

import pytest

from dsv32.envs.categories.travel import Travel
from dsv32.envs.episode import Episode
from dsv32.envs.format import EnvFormatError, list_environments, load_environment
from dsv32.envs.tools import MissingTool, ToolCaller, ToolContext, ToolError, validate_arguments


def _one_env(synth_dir):
    out, _ = synth_dir
    return list_environments(out)[0]


def test_round_trip_keeps_tasks_and_tools(synth_dir):
    path = _one_env(synth_dir)
    env = load_environment(path)
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["format_version"] == 1 and env.env_id == path.name
    assert len(env.tasks) == manifest["n_tasks"] > 0
    lines = (path / "tasks.jsonl").read_text().splitlines()
    assert [json.loads(x)["task_id"] for x in lines] == [t.task_id for t in env.tasks]
    assert {s.name for s in env.tools} >= set(env.tasks[-1].tools)


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda p: (p / "tasks.jsonl").unlink(), "missing tasks.jsonl"),
        (lambda p: (p / "manifest.json").write_text("{not json"), "not valid JSON"),
        (lambda p: _edit_manifest(p, format_version=99), "format_version 99"),
        (lambda p: _edit_manifest(p, seed="seven"), "field 'seed' must be int"),
        (lambda p: (p / "db.sqlite").write_bytes(b"garbage"), "digest does not match"),
        (lambda p: (p / "tasks.jsonl").write_text("{}\n"), "missing field"),
        (lambda p: _edit_manifest(p, n_tasks=999), "n_tasks is 999"),
    ],
)
def test_corrupt_environment_gives_clear_error(synth_dir, tmp_path, corrupt, message):
    path = shutil.copytree(_one_env(synth_dir), tmp_path / "env")
    corrupt(path)
    with pytest.raises(EnvFormatError, match=message):
        load_environment(path)


def _edit_manifest(path, **changes):
    data = json.loads((path / "manifest.json").read_text())
    data.update(changes)
    (path / "manifest.json").write_text(json.dumps(data))


def test_missing_directory_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_environment(tmp_path / "nope")


def test_tool_argument_validation_messages():
    schema = Travel().library()[2].spec.parameters  # search_hotels(city, min_rating?)
    validate_arguments({"city": "Hangzhou", "min_rating": 4}, schema, "t")
    for args, msg in [
        ({}, "missing required argument"),
        ({"city": 3}, "must be of type string"),
        ({"city": "x", "stars": 5}, "unknown argument"),
        ({"city": "x", "min_rating": True}, "type number"),
    ]:
        with pytest.raises(ToolError, match=msg):
            validate_arguments(args, schema, "t")


def test_tool_caller_unknown_missing_and_json_string_arguments(synth_dir):
    out, _ = synth_dir
    env = load_environment(next(p for p in list_environments(out) if p.name.startswith("travel")))
    episode = Episode.from_env(env, env.tasks[0].task_id)
    assert episode.call("get_routes", '{"city": "nowhere"}') == []
    with pytest.raises(ToolError, match="not valid JSON"):
        episode.call("get_routes", "{city:")
    with pytest.raises(ToolError, match="unknown tool 'fly'"):
        episode.call("fly", {})
    library = {t.spec.name: t for t in Travel().library()}
    caller = ToolCaller(library, ["list_cities"], ToolContext(episode.db))
    with pytest.raises(MissingTool):
        caller.call("get_budget_policy", {"tier": 1})
    reply = episode.step({"id": "c1", "function": {"name": "get_routes", "arguments": {"city": 1}}})
    assert reply["ok"] is False and "must be of type string" in json.loads(reply["content"])["error"]
