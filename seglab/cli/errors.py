"""One line for any failure of a command: what went wrong and how to fix it.

``error_message(error, args)`` turns an exception into the text after ``error: `` (``main`` prints it and
exits with 2). It is always a single line; out-of-memory errors (``MemoryError``, torch's
``DefaultCPUAllocator: can't allocate memory``, CUDA/MPS/XPU "out of memory") get a hint naming the flags
of the failed command that lower the memory; torch's advice to load an untrusted file with
``weights_only=False`` is removed (``seglab.files.without_load_advice``).
"""

from __future__ import annotations

import argparse
import re

__all__ = ["error_message", "out_of_memory_message", "MEMORY_FLAGS"]

#: What to lower when memory runs out, per command (the inference flags are added where they apply)
MEMORY_FLAGS = {"train": ["--batch-size", "--crop-size", "--max-size"], "evaluate": ["--batch-size"],
                "predict": ["--batch-size", "--max-size"], "export": ["--input-size"]}


def out_of_memory_message(error: BaseException, text: str, args: argparse.Namespace | None) -> str | None:
    """One line for an out-of-memory error: what ran out, how much was asked, what to lower; else None."""
    cpu = isinstance(error, MemoryError) or re.search(r"can't allocate memory|DefaultCPUAllocator", text)
    gpu = re.search(r"(CUDA|MPS|XPU|HIP)\b.{0,20}out of memory", text)
    if not (cpu or (gpu and isinstance(error, RuntimeError))):
        return None
    asked = ""
    if found := re.search(r"(?i)tried to allocate (\d+) bytes", text):
        asked = f" (one allocation of {int(found.group(1)) / 1e9:.2f} GB)"
    elif found := re.search(r"(?i)tried to allocate ([\d.]+ ?[KMGT]i?B)", text):
        asked = f" (one allocation of {found.group(1)})"
    command = getattr(args, "command", None)
    tips = [f"a smaller {flag}" for flag in MEMORY_FLAGS.get(command, [])]
    if getattr(args, "crf", False):
        tips.append("--crf-max-size 500 (the CRF on a smaller image)" if getattr(args, "crf_max_size", None) is None
                    else "a smaller --crf-max-size")  # fmt: skip
    if "," in str(getattr(args, "tta_scales", "")):
        tips.append("fewer or smaller --tta-scales")
    if command in ("evaluate", "predict") and getattr(args, "window", None) is None:
        tips.append("--window 512 (sliding windows)")
    where = "the GPU" if gpu else "the CPU (RAM)"
    advice = f"try {', '.join(tips[:-1])} or {tips[-1]}" if len(tips) > 1 else f"try {tips[0]}" if tips else \
        "free memory, or use a machine with more"
    return f"out of memory on {where}{asked}: {advice}"


def _one_line(text: str) -> str:
    """``text`` on one line: its non-empty lines joined with `` | ``."""
    return " | ".join(line.strip() for line in text.splitlines() if line.strip())


def error_message(error: BaseException, args: argparse.Namespace | None = None) -> str:
    """One line for a failed command: what went wrong and how to fix it (``args``: the command's flags)."""
    return _one_line(_message(error, args)) or type(error).__name__


def _message(error: BaseException, args: argparse.Namespace | None) -> str:
    from PIL import Image

    from seglab.files import without_load_advice

    text = str(error).strip() or type(error).__name__
    if isinstance(error, KeyError):
        key = error.args[0] if error.args else "?"
        return (f"a required entry {key!r} is missing (KeyError); a checkpoint or file from another program or "
                "version? Use a last.pt / best.pt written by `python -m seglab train`")
    if "Original Traceback" in text:  # re-raised from a DataLoader worker: its last line is the error
        text = text.splitlines()[-1].strip()
    if isinstance(error, FloatingPointError):
        return text if "--lr" in text else f"{text}: training diverged; lower --lr (e.g. by 10x)"
    if isinstance(error, Image.DecompressionBombError):
        return f"{text}. Downscale the image, or raise PIL.Image.MAX_IMAGE_PIXELS if you trust it"
    memory = out_of_memory_message(error, text, args)
    if memory is not None:
        return memory
    if isinstance(error, OSError) and error.errno is not None:  # raw from the OS: add what to do
        hints = {IsADirectoryError: "a folder is in the way of a file; give a file path instead",
                 NotADirectoryError: "a file is in the way of a folder; give a folder path (or move the file)",
                 FileExistsError: "remove it or choose another path",
                 PermissionError: "no permission; choose a path you can write to"}
        hint = next((h for kind, h in hints.items() if isinstance(error, kind)), None)
        return f"{text}: {hint}" if hint else text
    if isinstance(error, (ValueError, RuntimeError, OSError)):
        return without_load_advice(text) if "weights_only" in text or "safe_globals" in text else text
    return f"{type(error).__name__}: {text} (unexpected: rerun with --debug for the traceback and report it)"
