"""Small helpers of the frontend: media encoding, free ports, process-tree shutdown."""

from __future__ import annotations

import base64
import io
import os
import signal
import socket
import sys
import time
from typing import Any, List, Optional


def encode_image_base64(image: Any) -> str:
    """Base64 of an image given as a file path, raw bytes, a `data:` URL or a PIL image."""
    if isinstance(image, (bytes, bytearray)):
        return base64.b64encode(bytes(image)).decode()
    if isinstance(image, str):
        if image.startswith("data:") and "base64," in image:
            return image.split("base64,", 1)[1]
        if not os.path.isfile(image):
            raise ValueError(f"image must be an existing file, bytes, a data URL or a PIL image; no file {image!r}")
        with open(image, "rb") as f:
            return base64.b64encode(f.read()).decode()
    if hasattr(image, "save"):  # PIL.Image.Image, without importing PIL here
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return base64.b64encode(buffer.getvalue()).decode()
    raise ValueError(f"image must be a path, bytes, a data URL or a PIL image, got {type(image).__name__}")


def sample_frame_indices(total_frames: int, num_frames: int) -> List[int]:
    """`num_frames` indices spread evenly over a video of `total_frames` frames."""
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if total_frames < 1:
        raise ValueError("the video has no frames")
    count = min(num_frames, total_frames)
    step = total_frames / count
    return [int(i * step) for i in range(count)]


def encode_video_base64(path: str, num_frames: int = 16) -> str:
    """"video:" + comma-separated base64 JPEG frames sampled evenly (needs opencv-python)."""
    try:
        import cv2
    except ImportError:
        raise ImportError("sgl.video needs OpenCV: pip install opencv-python") from None
    if not os.path.isfile(path):
        raise ValueError(f"video must be an existing file, no file {path!r}")
    capture = cv2.VideoCapture(path)
    try:
        indices = sample_frame_indices(int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), num_frames)
        frames = [_read_frame_jpeg(cv2, capture, i) for i in indices]
    finally:
        capture.release()
    return "video:" + ",".join(frames)


def _read_frame_jpeg(cv2: Any, capture: Any, index: int) -> str:
    capture.set(cv2.CAP_PROP_POS_FRAMES, index)
    ok, frame = capture.read()
    if not ok:
        raise ValueError(f"could not read frame {index} of the video")
    ok, buffer = cv2.imencode(".jpg", frame)
    return base64.b64encode(buffer.tobytes()).decode()


def python_module_command(module: str, *args: str) -> List[str]:
    """The command line `python -m module args`, in safe-path mode where Python has it (3.11+):
    `-m` would otherwise put the current directory first on sys.path, and a folder there named
    like an installed package (a source checkout's `runtime/`, say) would shadow that package."""
    safe_path = ["-P"] if sys.version_info >= (3, 11) else []
    return [sys.executable, *safe_path, "-m", module, *args]


def is_port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def find_free_port(host: str = "127.0.0.1", start: int = 30000, end: int = 65536) -> int:
    """The first free port in [start, end)."""
    for port in range(start, end):
        if is_port_free(host, port):
            return port
    raise RuntimeError(f"no free port in [{start}, {end}) on {host}")


def kill_process_tree(pid: Optional[int] = None, grace_s: float = 5.0, process: Any = None,
                      include_parent: bool = True) -> None:
    """Stop process `pid` (default: this process) and every process it spawned, leaving no orphans.

    SIGTERM goes to the whole tree, then whatever is still alive after `grace_s` seconds gets
    SIGKILL. `include_parent=False` stops only the descendants (this is how a process cleans up
    after itself: it never signals itself here). When `pid` started its own process group
    (`start_new_session=True`), the group is signalled too: that reaches descendants re-parented
    away from the tree, even after `pid` itself has exited. Pass the `subprocess.Popen` as
    `process` when there is one, so its exit is reaped through it and its return code kept.
    """
    import psutil  # here, not at the top: `import sgl` stays light

    pid = os.getpid() if pid is None else pid
    include_parent = include_parent and pid != os.getpid()
    pgid = pid if include_parent and _own_group_exists(pid) else None
    # A reaped root's pid may already belong to an unrelated process: walk no tree from it.
    reaped = process is not None and process.poll() is not None
    procs = [] if reaped else _tree(psutil, pid, include_parent)
    _signal_all(procs, pgid, signal.SIGTERM)
    alive = _wait(psutil, procs, grace_s, process, pid)
    # Children spawned during the grace period are in the tree now, not in the first listing.
    if not reaped:
        alive += [p for p in _tree(psutil, pid, include_parent) if p not in alive]
    if alive or pgid is not None:
        _signal_all(alive, pgid, signal.SIGKILL)
        _wait(psutil, alive, 5.0, process, pid)


def _tree(psutil: Any, pid: int, include_parent: bool) -> list:
    """The live processes of the tree, children first."""
    try:
        root = psutil.Process(pid)
        procs = root.children(recursive=True)[::-1]
    except psutil.Error:
        return []
    return procs + [root] if include_parent else procs


def _own_group_exists(pid: int) -> bool:
    """Whether a process group with id `pid` exists (one `pid` started; the kernel does not reuse
    a pid still in use as a group id) and is not the caller's own."""
    if pid == os.getpgrp():
        return False
    try:
        os.killpg(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _signal_all(procs: list, pgid: Optional[int], sig: int) -> None:
    if pgid is not None:
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass
    for proc in procs:
        try:
            proc.send_signal(sig)
        except Exception:  # psutil.NoSuchProcess / AccessDenied: gone, or not ours to signal
            pass


def _wait(psutil: Any, procs: list, timeout: float, process: Any, pid: int) -> list:
    """Wait up to `timeout` s for `procs` to exit; return those still alive. The root is waited
    for through its Popen when given, so Popen keeps its return code."""
    deadline = time.monotonic() + timeout
    others = [p for p in procs if process is None or p.pid != pid]
    _, alive = psutil.wait_procs(others, timeout=timeout)
    if process is not None and any(p.pid == pid for p in procs):
        try:
            process.wait(timeout=max(deadline - time.monotonic(), 0.0))
        except Exception:  # subprocess.TimeoutExpired: still running
            alive.append(next(p for p in procs if p.pid == pid))
    return alive
