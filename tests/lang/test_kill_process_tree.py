"""`sgl.utils.kill_process_tree` on real process trees: SIGTERM, grace period, SIGKILL, no orphans."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from sgl.utils import kill_process_tree

# A process that starts `depth` levels of descendants below itself, prints every pid of the tree
# (its own first) on one line, then sleeps. With `stubborn`, every process ignores SIGTERM.
# The process at depth `exit_at` (if any) exits once its descendants run, so they are re-parented
# out of the tree (they stay in the process group).
TREE = textwrap.dedent("""
    import os, signal, subprocess, sys, time
    depth, stubborn, exit_at = int(sys.argv[1]), sys.argv[2] == "1", int(sys.argv[3])
    if stubborn:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    pids = [os.getpid()]
    if depth > 0:
        child = subprocess.Popen([sys.executable, __file__, str(depth - 1), *sys.argv[2:]], stdout=subprocess.PIPE)
        pids += child.stdout.readline().decode().split()
    print(*pids, flush=True)
    if depth == exit_at:
        os._exit(0)
    time.sleep(600)
""")


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE  # exited, not yet reaped
    except psutil.NoSuchProcess:
        return True


def _start_tree(tmp_path, depth: int, stubborn: bool = False, exit_at: int = -1):
    script = tmp_path / "tree.py"
    script.write_text(TREE)
    proc = subprocess.Popen([sys.executable, str(script), str(depth), str(int(stubborn)), str(exit_at)],
                            stdout=subprocess.PIPE, start_new_session=True)
    pids = [int(p) for p in proc.stdout.readline().split()]
    assert len(pids) == depth + 1
    return proc, pids


def test_sigterm_stops_the_tree_without_waiting_out_the_grace(tmp_path):
    proc, pids = _start_tree(tmp_path, depth=3)
    start = time.monotonic()
    kill_process_tree(proc.pid, grace_s=20, process=proc)
    assert time.monotonic() - start < 10
    assert proc.returncode == -15  # reaped through the Popen, which kept the SIGTERM status
    assert all(_gone(pid) for pid in pids)


def test_processes_ignoring_sigterm_get_sigkill_after_the_grace(tmp_path):
    proc, pids = _start_tree(tmp_path, depth=2, stubborn=True)
    start = time.monotonic()
    kill_process_tree(proc.pid, grace_s=1.0, process=proc)
    assert time.monotonic() - start >= 1.0
    assert proc.returncode == -9
    assert all(_gone(pid) for pid in pids)


def test_reparented_descendant_is_reached_through_the_process_group(tmp_path):
    proc, pids = _start_tree(tmp_path, depth=2, exit_at=1)
    middle, grandchild = pids[1], pids[2]
    deadline = time.monotonic() + 10
    while not _gone(middle) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(middle) and not _gone(grandchild)
    assert grandchild not in [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
    kill_process_tree(proc.pid, grace_s=5, process=proc)
    deadline = time.monotonic() + 5
    while not _gone(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(grandchild)


def test_descendants_of_a_root_that_already_exited_are_stopped(tmp_path):
    proc, pids = _start_tree(tmp_path, depth=2, exit_at=2)
    proc.wait(timeout=30)  # the root is gone and reaped; its child and grandchild live on
    assert not any(_gone(pid) for pid in pids[1:])
    kill_process_tree(proc.pid, grace_s=5, process=proc)
    deadline = time.monotonic() + 5
    while not all(_gone(pid) for pid in pids[1:]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(_gone(pid) for pid in pids[1:])


def test_include_parent_false_stops_only_the_descendants(tmp_path):
    # A process cleans up after itself: its children go, it stays (and can report so).
    code = textwrap.dedent(f"""
        import subprocess, sys
        from sgl.utils import kill_process_tree
        child = subprocess.Popen([sys.executable, {str(tmp_path / 'tree.py')!r}, "1", "0", "-1"], stdout=subprocess.PIPE)
        print(*child.stdout.readline().decode().split(), flush=True)
        kill_process_tree(grace_s=5, include_parent=False)
        print("still here", flush=True)
    """)
    (tmp_path / "tree.py").write_text(TREE)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    first, last = done.stdout.splitlines()
    assert last == "still here"
    assert all(_gone(int(pid)) for pid in first.split())


def test_a_process_that_is_already_gone_is_fine(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
    proc.wait(timeout=30)
    kill_process_tree(proc.pid, grace_s=1, process=proc)
    assert proc.returncode == 0


@pytest.fixture(autouse=True)
def _no_strays():
    """Whatever a failing test left in this process's tree is killed, so nothing outlives the run."""
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    yield
    strays = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
    for p in strays:
        p.kill()
    psutil.wait_procs(strays, timeout=5)
