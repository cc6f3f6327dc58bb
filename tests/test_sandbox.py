"""The subprocess sandbox: every limit is hit by a hostile snippet and the host carries on."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from dsv32 import sandbox
from dsv32.sandbox import SandboxLimits, run_command, run_python

FAST = SandboxLimits(cpu_seconds=1.0, wall_seconds=5.0)


def _assert_host_alive() -> None:
    result = run_python("print(6 * 7)")
    assert result.ok and result.stdout == "42\n"


def test_runs_code_with_files_and_stdin():
    result = run_python(
        "import data, sys; print(data.VALUE + int(sys.stdin.read()))",
        files={"data.py": "VALUE = 40\n"},
        stdin="2",
    )
    assert result.ok and result.stdout == "42\n" and result.killed_reason is None


def test_infinite_loop_is_killed_by_cpu_limit():
    result = run_python("while True:\n    pass\n", limits=FAST)
    assert result.killed_reason == "cpu-time" and not result.ok
    assert result.duration_s < 4.0
    _assert_host_alive()


def test_sleeping_child_and_its_children_are_killed_at_the_wall_clock(tmp_path):
    code = (
        "import subprocess, sys, time\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)'])\n"
        "time.sleep(30)\n"
    )
    result = run_python(code, limits=SandboxLimits(wall_seconds=1.0))
    assert result.timed_out and result.killed_reason == "wall-clock" and result.returncode is None
    assert result.duration_s < 5.0
    _assert_host_alive()


def test_memory_bomb_is_stopped():
    result = run_python("x = bytearray(4 * 1024**3)\nprint('allocated')", limits=FAST)
    assert result.killed_reason == "memory" and "allocated" not in result.stdout
    result = run_python(
        "chunks = []\nwhile True:\n    chunks.append(bytearray(50 * 2**20))",
        limits=SandboxLimits(memory_mb=256),
    )
    assert result.killed_reason == "memory"
    _assert_host_alive()


def test_huge_file_write_is_stopped(tmp_path):
    code = "with open('big.bin', 'wb') as fh:\n    for _ in range(100):\n        fh.write(b'x' * 2**20)\n"
    result = run_python(code, workdir=tmp_path, limits=SandboxLimits(file_size_mb=4))
    assert result.killed_reason == "file-size"
    assert (tmp_path / "big.bin").stat().st_size <= 4 * 2**20


def test_writes_outside_the_working_directory_fail(tmp_path):
    outside = tmp_path / "outside.txt"
    inside = tmp_path / "work"
    result = run_python(f"open({str(outside)!r}, 'w').write('escaped')", workdir=inside)
    assert not result.ok and "Permission" in result.stderr
    assert not outside.exists()
    # writing inside works, and the caller's directory is kept
    result = run_python("open('ok.txt', 'w').write('fine')", workdir=inside)
    assert result.ok and (inside / "ok.txt").read_text() == "fine"


def test_audit_hook_fallback_confines_writes_when_landlock_is_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(sandbox, "landlock_abi", lambda: 0)
    outside = tmp_path / "outside.txt"
    result = run_python(f"open({str(outside)!r}, 'w').write('escaped')", workdir=tmp_path / "w")
    assert "PermissionError" in result.stderr and not outside.exists()
    assert result.isolation["filesystem"].startswith("audit hook")
    result = run_python(f"import os\nos.remove({str(tmp_path / 'w' / 'x')!r})", workdir=tmp_path / "w")
    assert "FileNotFoundError" in result.stderr  # inside: allowed (and the file is simply absent)


def _listener(timeout: float = 5.0):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(timeout)
    accepted = []
    thread = threading.Thread(target=lambda: accepted.append(_accept(server)), daemon=True)
    thread.start()
    return server, thread, accepted


def _accept(server):
    try:
        return server.accept()[0].close() or True
    except OSError:
        return False


def test_network_access_fails_but_can_be_allowed():
    server, thread, accepted = _listener()
    port = server.getsockname()[1]
    code = (
        f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\nprint('connected')"
    )
    denied = run_python(code, limits=FAST)
    assert "connected" not in denied.stdout and denied.returncode == 1
    assert not denied.isolation["network"].startswith("NOT")
    allowed = run_python(code, limits=SandboxLimits(network=True))
    assert allowed.stdout == "connected\n"
    thread.join(5)
    server.close()
    assert accepted == [True]


def test_output_is_truncated():
    result = run_python(
        "print('y' * 100000)\nimport sys\nprint('e' * 50, file=sys.stderr)",
        limits=SandboxLimits(max_output_chars=1000),
    )
    assert result.truncated and result.stdout == "y" * 1000 and result.stderr == "e" * 50 + "\n"
    assert run_python("print('short')").truncated is False


def test_run_command_runs_tests_in_workdir(tmp_path):
    (tmp_path / "test_x.py").write_text(
        "import unittest\nclass T(unittest.TestCase):\n"
        "    def test_a(self):\n        self.assertEqual(1 + 1, 3)\n"
    )
    result = run_command(["python", "-m", "unittest", "-q", "test_x"], workdir=tmp_path, limits=FAST)
    assert result.returncode == 1 and "AssertionError" in result.stderr
    with pytest.raises(FileNotFoundError):
        run_command(["python", "-c", "1"], workdir=tmp_path / "missing")
    with pytest.raises(ValueError):
        run_command([], workdir=tmp_path)


def test_temporary_workdir_is_removed_and_bad_file_names_are_refused():
    result = run_python("import os\nprint(os.getcwd())")
    assert result.ok and not Path(result.stdout.strip()).exists()
    with pytest.raises(ValueError, match="relative path"):
        run_python("pass", files={"../escape.py": "x"})


@pytest.mark.skipif(sandbox.landlock_abi() < 4, reason="needs Landlock ABI >= 4 for TCP rules")
def test_landlock_blocks_tcp_when_no_network_namespace(monkeypatch):
    monkeypatch.setattr(sandbox, "_netns_available", lambda: False)
    server, thread, accepted = _listener(timeout=1.0)
    port = server.getsockname()[1]
    result = run_python(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)")
    assert "PermissionError" in result.stderr and result.isolation["network"].startswith("landlock")
    server.close()
    thread.join(6)
    assert accepted == [False]


def test_stdlib_only_mode_hides_site_packages(tmp_path):
    code = "import sys\nprint(any('site-packages' in p for p in sys.path))"
    assert run_python(code, limits=SandboxLimits(site_packages=False)).stdout == "False\n"
    assert run_python(code).stdout == "True\n"
