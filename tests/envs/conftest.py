"""A small synthesis run shared by the environment tests (a few environments per category)."""

from __future__ import annotations

import pytest

from dsv32.envs.categories import category_names
from dsv32.envs.pipeline import synthesize_many


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("envs")
    summary = synthesize_many(out, n_envs=2 * len(category_names()), seed=7, workers=2, k=3, progress=False)
    return out, summary
