"""A subprocess sandbox for untrusted Python code and test commands.

`run_python(code)` and `run_command(argv)` start a child process that, before running anything,
applies these limits to itself (this file is the child's launcher, run as a script):

- RLIMIT_CPU (soft = limit, hard = limit + 1 s), RLIMIT_AS (address space, i.e. memory) and
  RLIMIT_FSIZE (largest file the child may write);
- a wall-clock deadline enforced by the host, which kills the child's whole process group;
- a fresh temporary working directory (removed afterwards unless the caller supplied one);
- stdout/stderr drained by the host, keeping only the first `max_output_chars` of each;
- no network: a new network namespace via `unshare --net` (only loopback, and it is down) when
  that works (root, or unprivileged user namespaces); else, where Landlock ABI >= 4 exists, TCP
  connect/bind are denied (UDP is then NOT blocked);
- writes outside the working directory fail: Landlock (a Linux LSM; kernel enforced, inherited by
  every descendant, cannot be undone by the child) denies creating, writing, truncating, renaming
  and removing anything outside the working directory (only `/dev/null` stays writable). Where
  Landlock is missing, a Python audit hook refuses write-mode opens and file-system mutations
  outside the directory; that fallback covers `run_python` only and native code (ctypes, C
  extensions, `run_command` executables) can bypass it.

What is NOT isolated: reading files (the child can read anything the host user can), process
visibility (no PID namespace), and a descendant that calls `setsid()` escapes the group kill
(RLIMIT_CPU still bounds its CPU time). `SandboxResult.isolation` says which mechanism was used.
`SandboxLimits.site_packages=False` runs the child with `python -S` (stdlib only; much faster start).
`killed_reason` is "wall-clock", "cpu-time", "memory", "file-size", "signal:<NAME>" or None;
"memory" and "file-size" are read from the child's final traceback line (Python turns a failed
allocation into MemoryError and an over-limit write into EFBIG instead of dying).
"""

from __future__ import annotations

import json
import os
import resource
import sys

# --------------------------------------------------------------------------------------- child side
# Kept first and stdlib-light: the child runs this file as a script (`python -S -B sandbox.py
# --child JOB`) and stops before the host-side imports below, so it starts in tens of ms.

# Landlock (linux/landlock.h); the syscall numbers are the same on x86_64 and aarch64.
_SYS_CREATE_RULESET, _SYS_ADD_RULE, _SYS_RESTRICT_SELF = 444, 445, 446
_PR_SET_NO_NEW_PRIVS = 38
_FS_WRITE_FILE = 1 << 1
_FS_MUTATE = sum(1 << b for b in (1, 4, 5, 6, 7, 8, 9, 10, 11, 12))  # write, remove, make-*
_FS_REFER, _FS_TRUNCATE = 1 << 13, 1 << 14
_NET_BIND_TCP, _NET_CONNECT_TCP = 1 << 0, 1 << 1


def _landlock(workdir: str, abi: int, block_tcp: bool) -> None:
    """Deny every file-system write outside `workdir` (and TCP when asked) for this process tree."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    handled = _FS_MUTATE | (_FS_REFER if abi >= 2 else 0) | (_FS_TRUNCATE if abi >= 3 else 0)
    net = (_NET_BIND_TCP | _NET_CONNECT_TCP) if (block_tcp and abi >= 4) else 0
    attr = (ctypes.c_uint64 * 2)(handled, net)
    size = 16 if abi >= 4 else 8
    ruleset = libc.syscall(_SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset failed")

    class PathBeneath(ctypes.Structure):
        _pack_ = 1
        _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]

    for path, allowed in (
        (workdir, handled),
        ("/dev/null", _FS_WRITE_FILE | (_FS_TRUNCATE if abi >= 3 else 0)),
    ):
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        rule = PathBeneath(allowed, fd)
        if libc.syscall(_SYS_ADD_RULE, ruleset, ctypes.c_int(1), ctypes.byref(rule), ctypes.c_uint32(0)) < 0:
            raise OSError(ctypes.get_errno(), f"landlock_add_rule({path}) failed")
        os.close(fd)
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
    if libc.syscall(_SYS_RESTRICT_SELF, ruleset, ctypes.c_uint32(0)) < 0:
        raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")
    os.close(ruleset)


_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_MUTATING_EVENTS = {
    "os.remove", "os.rename", "os.mkdir", "os.rmdir", "os.symlink", "os.link", "os.chmod",
    "os.chown", "os.truncate", "os.utime", "shutil.rmtree", "shutil.move",
}  # fmt: skip


def _audit_hook(workdir: str):
    """Fallback write confinement: refuse write-mode opens and mutations outside `workdir`."""
    root = os.path.realpath(workdir)

    def inside(path) -> bool:
        if isinstance(path, int):
            return True  # an already-open descriptor
        real = os.path.realpath(os.fsdecode(path))
        return real == "/dev/null" or real == root or real.startswith(root + os.sep)

    def hook(event: str, args: tuple) -> None:
        if event == "open" and args[0] is not None:
            mode, flags = args[1], args[2]
            writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (flags & _WRITE_FLAGS)
            if writes and not inside(args[0]):
                raise PermissionError(f"sandbox: write outside the working directory: {args[0]!r}")
        elif event in _MUTATING_EVENTS:
            paths = [a for a in args[:2] if isinstance(a, (str, bytes, os.PathLike))]
            if not all(inside(p) for p in paths):
                raise PermissionError(f"sandbox: {event} outside the working directory: {paths!r}")

    return hook


def _child_main(job: dict) -> None:
    resource.setrlimit(resource.RLIMIT_CPU, (max(1, int(job["cpu"] + 0.999)), int(job["cpu"]) + 2))
    resource.setrlimit(resource.RLIMIT_FSIZE, (job["fsize"], job["fsize"]))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    workdir = job["workdir"]
    os.chdir(workdir)
    if job["landlock"] >= 1:
        _landlock(workdir, job["landlock"], job["block_tcp"])
    resource.setrlimit(resource.RLIMIT_AS, (job["memory"], job["memory"]))
    if job["mode"] == "exec":
        os.execvp(job["argv"][0], job["argv"])
    with open(job["code_path"], encoding="utf-8") as fh:
        source = fh.read()
    if job["landlock"] < 1:
        sys.addaudithook(_audit_hook(workdir))
    sys.argv, sys.path[0] = ["<sandbox>"], workdir
    namespace = {"__name__": "__main__", "__builtins__": __builtins__}
    try:
        exec(compile(source, "<sandbox>", "exec"), namespace)
    except SystemExit:
        raise
    except BaseException:  # noqa: BLE001 - report like the interpreter would, minus launcher frames
        import traceback

        etype, value, tb = sys.exc_info()
        traceback.print_exception(etype, value, tb.tb_next if tb is not None else None)
        sys.stderr.flush()
        os._exit(1)


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--child":
    _child_main(json.loads(sys.argv[2]))
    sys.exit(0)

# ---------------------------------------------------------------------------------------- host side

import ctypes  # noqa: E402
import functools  # noqa: E402
import logging  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SandboxLimits:
    cpu_seconds: float = 5.0
    wall_seconds: float = 10.0
    memory_mb: int = 512
    file_size_mb: int = 16
    max_output_chars: int = 8000
    network: bool = False
    site_packages: bool = True  # False: stdlib only (`python -S`), a child starts ~4x faster


@dataclass
class SandboxResult:
    stdout: str
    stderr: str
    returncode: int | None
    timed_out: bool
    killed_reason: str | None
    duration_s: float
    truncated: bool
    isolation: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out


def run_python(
    code: str,
    *,
    workdir: str | Path | None = None,
    limits: SandboxLimits = SandboxLimits(),
    files: dict[str, str] | None = None,
    stdin: str | None = None,
) -> SandboxResult:
    """Run Python source in a sandboxed child (this interpreter); `files` are written into the
    working directory first (relative paths only). The code runs as `__main__` with the working
    directory as cwd and first on sys.path."""
    if not isinstance(code, str):
        raise ValueError(f"code must be a str, got {type(code).__name__}")
    with _workdir(workdir) as wd:
        _write_files(wd, files or {})
        code_fd, code_path = tempfile.mkstemp(prefix="dsv32-sandbox-", suffix=".py")
        with os.fdopen(code_fd, "w", encoding="utf-8") as fh:
            fh.write(code)
        try:
            return _run({"mode": "python", "code_path": code_path}, wd, limits, stdin)
        finally:
            Path(code_path).unlink(missing_ok=True)


def run_command(
    argv: list[str], *, workdir: str | Path, limits: SandboxLimits = SandboxLimits()
) -> SandboxResult:
    """Run an executable in a sandboxed child with cwd = `workdir` (which must exist). An argv[0] of
    "python" or "python3" means this interpreter."""
    if not argv or not all(isinstance(a, str) for a in argv):
        raise ValueError(f"argv must be a non-empty list of str, got {argv!r}")
    wd = Path(workdir)
    if not wd.is_dir():
        raise FileNotFoundError(f"sandbox workdir {str(wd)!r} is not a directory")
    if argv[0] in ("python", "python3"):
        argv = [sys.executable, *([] if limits.site_packages else ["-S"]), *argv[1:]]
    return _run({"mode": "exec", "argv": argv}, wd.resolve(), limits, None)


class _workdir:
    """Context manager: the caller's directory (kept) or a fresh temporary one (removed)."""

    def __init__(self, given: str | Path | None):
        self.given = given

    def __enter__(self) -> Path:
        if self.given is not None:
            path = Path(self.given)
            path.mkdir(parents=True, exist_ok=True)
            self.path, self.owned = path.resolve(), False
        else:
            self.path, self.owned = Path(tempfile.mkdtemp(prefix="dsv32-sandbox-wd-")).resolve(), True
        return self.path

    def __exit__(self, *exc) -> None:
        if self.owned:
            shutil.rmtree(self.path, ignore_errors=True)


def _write_files(wd: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        target = (wd / name).resolve()
        if Path(name).is_absolute() or not target.is_relative_to(wd):
            raise ValueError(f"sandbox file name {name!r} must be a relative path inside the workdir")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")


@functools.lru_cache(maxsize=1)
def _netns_available() -> bool:
    unshare = shutil.which("unshare")
    if unshare is None:
        return False
    try:
        probe = subprocess.run([unshare, "--net", "--", "true"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


@functools.lru_cache(maxsize=1)
def landlock_abi() -> int:
    """Landlock ABI version of the running kernel (0 when unavailable)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        version = libc.syscall(_SYS_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    except (OSError, AttributeError):
        return 0
    return max(int(version), 0)


def _plan_isolation(limits: SandboxLimits) -> dict[str, str]:
    abi = landlock_abi()
    if limits.network:
        network = "allowed (network=True)"
    elif _netns_available():
        network = "network namespace (unshare --net)"
    elif abi >= 4:
        network = "landlock: TCP connect/bind denied; UDP NOT blocked"
    else:
        network = "NOT isolated (no network namespace, no landlock)"
    filesystem = f"landlock ABI {abi}: writes only inside workdir" if abi >= 1 else "audit hook (python only)"
    return {"network": network, "filesystem": filesystem, "processes": "process group kill; no pid namespace"}


def _drain(stream, limit: int, out: list[str], truncated: list[bool]) -> None:
    """Read a pipe to EOF (so the child never blocks), keeping the first `limit` characters."""
    budget = limit * 4  # a character is at most 4 UTF-8 bytes
    kept = bytearray()
    for chunk in iter(lambda: stream.read1(65536), b""):
        room = budget - len(kept)
        if len(chunk) > room:
            truncated[0] = True
        kept += chunk[: max(room, 0)]
    text = kept.decode("utf-8", errors="replace")
    if len(text) > limit:
        text, truncated[0] = text[:limit], True
    out.append(text)


def _run(job: dict, wd: Path, limits: SandboxLimits, stdin: str | None) -> SandboxResult:
    isolation = _plan_isolation(limits)
    job = dict(
        job,
        workdir=str(wd),
        cpu=float(limits.cpu_seconds),
        memory=int(limits.memory_mb) * 2**20,
        fsize=int(limits.file_size_mb) * 2**20,
        landlock=landlock_abi(),
        block_tcp=not limits.network and isolation["network"].startswith("landlock"),
    )
    flags = ["-B", "-s"] if limits.site_packages else ["-B", "-S"]
    argv = [sys.executable, *flags, str(Path(__file__).resolve()), "--child", json.dumps(job)]
    if not limits.network and isolation["network"].startswith("network namespace"):
        argv = [shutil.which("unshare") or "unshare", "--net", "--", *argv]
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(wd),
        "LANG": "C.UTF-8",
        "PYTHONIOENCODING": "utf-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    logger.debug("sandbox %s in %s (%s)", job["mode"], wd, isolation)
    start = time.monotonic()
    proc = subprocess.Popen(
        argv,
        cwd=wd,
        env=env,
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group, so the wall-clock kill reaches descendants
    )
    outs: list[list[str]] = [[], []]
    truncs = [[False], [False]]
    readers = [
        threading.Thread(target=_drain, args=(s, limits.max_output_chars, o, t), daemon=True)
        for s, o, t in zip((proc.stdout, proc.stderr), outs, truncs)
    ]
    for reader in readers:
        reader.start()
    if stdin is not None:
        threading.Thread(target=_feed, args=(proc.stdin, stdin), daemon=True).start()
    timed_out = False
    try:
        proc.wait(timeout=limits.wall_seconds)
    except subprocess.TimeoutExpired:
        timed_out = True
    _kill_group(proc.pid)  # also reaps anything the child left running in its group
    proc.wait()
    for reader in readers:
        reader.join(timeout=5)
    stdout, stderr = (o[0] if o else "" for o in outs)
    returncode = None if timed_out else proc.returncode
    return SandboxResult(
        stdout=stdout,
        stderr=stderr,
        returncode=returncode,
        timed_out=timed_out,
        killed_reason=_killed_reason(timed_out, returncode, stderr),
        duration_s=time.monotonic() - start,
        truncated=truncs[0][0] or truncs[1][0],
        isolation=isolation,
    )


def _feed(pipe, text: str) -> None:
    try:
        pipe.write(text.encode("utf-8"))
        pipe.close()
    except OSError:  # the child exited without reading
        pass


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _killed_reason(timed_out: bool, returncode: int | None, stderr: str) -> str | None:
    if timed_out:
        return "wall-clock"
    if returncode is None or returncode == 0:
        return None
    if returncode < 0:
        sig = -returncode
        if sig in (signal.SIGXCPU, signal.SIGKILL):
            return "cpu-time" if sig == signal.SIGXCPU else "signal:SIGKILL"
        if sig == signal.SIGXFSZ:
            return "file-size"
        return (
            f"signal:{signal.Signals(sig).name}"
            if sig in signal.Signals._value2member_map_
            else f"signal:{sig}"
        )
    last = stderr.strip().splitlines()[-1] if stderr.strip() else ""
    if last.startswith("MemoryError") or "Cannot allocate memory" in last:
        return "memory"
    if "File too large" in last:
        return "file-size"
    return None
