"""Answer extraction and equivalence checking, the same for every math task.

Extraction takes the last `\\boxed{...}` (or `\\fbox{...}`) of a text, braces matched; GSM8K's
gold answers use `#### 42`, which `extract_final_answer` also reads. Equivalence is decided by
Math-Verify (`verify(gold, prediction)`, gold first), never by a hand-written normaliser.

Math-Verify's own time limits use SIGALRM, which only works on a process's main thread, and
sympy can hang on adversarial LaTeX. So every check runs in a small worker process that this
module starts on first use: the caller waits at most `timeout` seconds, and a worker that runs
over is killed and replaced (the answer then counts as wrong). This works from any thread.

    from mass.checker import is_equivalent, extract_boxed
    is_equivalent("\\frac{1}{2}", extract_boxed("... \\boxed{0.5}"))  # True
"""

from __future__ import annotations

import atexit
import multiprocessing as mp
import re
import threading
from typing import Any

DEFAULT_TIMEOUT = 10.0


def extract_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} / \\fbox{...} in `text` (braces matched), else None."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    while start >= 0:
        i = text.find("{", start)
        head = text[start:i] if i >= 0 else ""
        if i >= 0 and head in ("\\boxed", "\\fbox", "\\boxed "):
            depth = 0
            for j in range(i, len(text)):
                depth += {"{": 1, "}": -1}.get(text[j], 0)
                if depth == 0:
                    return text[i + 1 : j].strip()
            return None  # unclosed brace: the generation was cut off
        m = re.match(r"\\boxed ([^\s$]+)", text[start:])  # "\boxed 5"
        if m:
            return m.group(1)
        start = max(text.rfind("\\boxed", 0, start), text.rfind("\\fbox", 0, start))
    return None


def extract_hashes(text: str) -> str | None:
    """GSM8K's final answer: what follows the last '####', commas and dollar signs removed."""
    if "####" not in text:
        return None
    tail = text.rsplit("####", 1)[1].strip().splitlines()
    return tail[0].replace(",", "").replace("$", "").strip() if tail else None


def extract_final_answer(text: str) -> str | None:
    """The model's final answer: the last \\boxed{}, else a '#### answer' line, else None."""
    boxed = extract_boxed(text)
    return boxed if boxed is not None else extract_hashes(text)


def is_equivalent(gold: str, prediction: str | None, timeout: float = DEFAULT_TIMEOUT) -> bool:
    """Whether `prediction` is mathematically equal to `gold` (Math-Verify, gold first).

    Returns within about `timeout` seconds whatever the input; a check that runs over is False.
    """
    if prediction is None or not prediction.strip():
        return False
    if _squash(gold) == _squash(prediction):
        return True
    return _worker().check(gold, prediction, timeout)


def _squash(s: str) -> str:
    return re.sub(r"\s+", "", s).replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")


# --- the worker process ----------------------------------------------------------------------

def _serve(conn: Any) -> None:
    """Worker loop: receive (gold, prediction), answer with a bool. Runs on its main thread."""
    from math_verify import parse, verify

    while True:
        try:
            gold, pred = conn.recv()
        except EOFError:
            return
        try:
            g = parse(f"\\boxed{{{gold}}}", parsing_timeout=5)
            p = parse(f"\\boxed{{{pred}}}", parsing_timeout=5)
            ok = bool(g) and bool(p) and bool(verify(g, p, timeout_seconds=5))
        except Exception:  # Math-Verify raising on odd input means "not equal", never a crash
            ok = False
        conn.send(ok)


class _Worker:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: Any = None
        self._conn: Any = None

    def _start(self) -> None:
        ctx = mp.get_context("spawn")  # no fork of a process holding torch threads
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child,), daemon=True, name="mass-checker")
        self._proc.start()
        child.close()

    def _stop(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.join(timeout=5)
            self._conn.close()
        self._proc = self._conn = None

    def check(self, gold: str, pred: str, timeout: float) -> bool:
        with self._lock:
            if self._proc is None or not self._proc.is_alive():
                self._stop()
                self._start()
            self._conn.send((gold, pred))
            # The first call also waits for the worker to import sympy and Math-Verify.
            if self._conn.poll(timeout + (30.0 if not getattr(self, "_warm", False) else 0.0)):
                try:
                    self._warm = True
                    return bool(self._conn.recv())
                except EOFError:
                    pass
            self._stop()  # hung or died: replace it so the next check starts clean
            return False


_WORKER: _Worker | None = None
_WORKER_LOCK = threading.Lock()


def _worker() -> _Worker:
    global _WORKER
    with _WORKER_LOCK:
        if _WORKER is None:
            _WORKER = _Worker()
            atexit.register(_WORKER._stop)
        return _WORKER
