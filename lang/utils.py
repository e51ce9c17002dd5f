"""Small helpers of the frontend: media encoding, free ports, process-tree shutdown."""

from __future__ import annotations

import base64
import io
import os
import signal
import socket
import sys
import time
from typing import Any, List


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


def kill_process_tree(pid: int, grace_s: float = 5.0, process: Any = None) -> None:
    """Terminate a process started with `start_new_session=True` and everything it spawned.

    The whole process group gets SIGTERM, then SIGKILL after `grace_s`. Descendants that moved
    to another session are found through psutil when it is installed. Pass the `subprocess.Popen`
    as `process` when there is one, so the exit is observed (and reaped) through it.
    """
    descendants = _descendants(pid)
    _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and _alive(pid, process):
        time.sleep(0.05)
    _signal_group(pid, signal.SIGKILL)
    for child in descendants:
        _signal(child, signal.SIGKILL)


def _descendants(pid: int) -> List[int]:
    try:
        import psutil
    except ImportError:
        return []
    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        _signal(pid, sig)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _alive(pid: int, process: Any) -> bool:
    if process is not None:
        return process.poll() is None
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True
