"""Task categories, one module each; `get_category(name)` returns an instance."""

from __future__ import annotations

import importlib

from dsv32.envs.categories.base import Category

# name -> "module:Class"; imported on demand so a worker loads only what it uses
REGISTRY: dict[str, str] = {
    "travel": "dsv32.envs.categories.travel:Travel",
    "flights": "dsv32.envs.categories.flights:Flights",
    "restaurants": "dsv32.envs.categories.restaurants:Restaurants",
    "ecommerce": "dsv32.envs.categories.ecommerce:Ecommerce",
    "timetabling": "dsv32.envs.categories.timetabling:Timetabling",
    "budgeting": "dsv32.envs.categories.budgeting:Budgeting",
    "inventory": "dsv32.envs.categories.inventory:Inventory",
    "meetings": "dsv32.envs.categories.meetings:Meetings",
    "code_agent": "dsv32.envs.categories.code_agent:CodeAgent",
    "code_interpreter": "dsv32.envs.categories.code_interpreter:CodeInterpreter",
}


def category_names() -> list[str]:
    return list(REGISTRY)


def get_category(name: str, env=None) -> Category:
    """The category `name`; model-made environments (source "model") carry their own code."""
    if env is not None and getattr(env, "source", "builtin") == "model":
        from dsv32.envs.model_synthesis import SandboxedCategory

        return SandboxedCategory.from_env(env)
    if name not in REGISTRY:
        raise ValueError(f"unknown category {name!r}; known: {sorted(REGISTRY)}")
    module, cls = REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), cls)()
