import json
import re
import shutil
import subprocess

import pytest

from dsv32.report import write_report

STAGES = {
    "pretrain": {"order": 1, "seconds": 3.2, "headline": "val loss 2.1", "loss_curve": [[0, 6.0], [10, 3.0]]},
    "dsa_warmup": {
        "order": 2,
        "seconds": 1.0,
        "recall_curve": [[0, 0.2], [5, 0.7]],
        "loss_curve": [[0, 1.0], [5, 0.4]],
    },
    "long_context_eval": {
        "order": 3,
        "accuracy": {
            "dense": {"passkey": {"64": 1.0, "128": 0.5}},
            "sparse": {"passkey": {"64": 1.0, "128": 0.4}},
        },
    },
    "attention_cost": {
        "order": 4,
        "rows": [
            {"phase": "decode", "context": 1024, "dense_ms": 1.0, "dsa_ms": 0.5},
            {"phase": "decode", "context": 4096, "dense_ms": 4.0, "dsa_ms": 0.7},
        ],
    },
    "grpo": {"order": 5, "reward_curves": {"arithmetic": [[0, 0.1], [1, 0.3]]}},
    "agent_eval": {"order": 6, "accuracy": {"search": {"none": 0.2, "summary": 0.4}}},
    "env_synthesis": {"order": 7, "tasks_per_category": {"travel": 12, "flights": 9}},
}


@pytest.fixture
def run_dir(tmp_path):
    (tmp_path / "stages").mkdir()
    for name, data in STAGES.items():
        (tmp_path / "stages" / f"{name}.json").write_text(json.dumps(data))
    return tmp_path


def test_report_has_every_plot_and_the_summary(run_dir):
    paths = write_report(run_dir)
    md = paths["md"].read_text()
    assert "| pretrain | 3.2 | val loss 2.1 |" in md
    assert md.count("![") == 7 and "no data" not in md
    html = paths["html"].read_text()
    assert html.count('src="data:image/png;base64,') == 7  # self-contained
    assert len(list((run_dir / "plots").glob("*.png"))) == 7


def test_missing_data_is_said_not_drawn(tmp_path):
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / "pretrain.json").write_text(json.dumps(STAGES["pretrain"]))
    md = write_report(tmp_path)["md"].read_text()
    assert md.count("![") == 1 and md.count("_no data for this plot in this run_") == 6


def test_corrupt_stage_file_is_a_clear_error(tmp_path):
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / "pretrain.json").write_text("{oops")
    with pytest.raises(ValueError, match="pretrain.json is not valid JSON"):
        write_report(tmp_path)


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="headless Chromium is not installed (.ci/run installs it)")
def test_every_image_renders_in_headless_chromium(run_dir):
    page = write_report(run_dir)["html"].read_text()
    # A probe script appended to a copy: after load it writes each image's natural size into the DOM.
    probe = (
        "<script>window.addEventListener('load',()=>{const p=document.createElement('pre');p.id='probe';"
        "p.textContent=JSON.stringify([...document.images].map(i=>[i.complete,i.naturalWidth,i.naturalHeight]));"
        "document.body.appendChild(p);});</script>"
    )
    probed = run_dir / "probe.html"
    probed.write_text(page.replace("</body>", probe + "</body>"))
    out = subprocess.run(
        [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={run_dir / 'chrome-profile'}", "--virtual-time-budget=5000", "--dump-dom",
         probed.as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    match = re.search(r'<pre id="probe">(.*?)</pre>', out.stdout)
    assert match, out.stderr[-2000:]
    images = json.loads(match.group(1))
    assert len(images) == 7
    assert all(complete and width > 100 and height > 100 for complete, width, height in images)
