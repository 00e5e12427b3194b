"""Answer extraction and equivalence checking, the same for every math task.

Extraction (`extract_final_answer`), in this order, the way lighteval and open-r1 grade MATH-500
with Math-Verify (boxed answers first):
  1. A text that uses `\\boxed` (or `\\fbox`) is graded on its boxed answers only. The answer is
     the argument of the last one: braces matched (escaped `\\{`, `\\}` do not count), whitespace
     allowed before the brace (`\\boxed {5}`), and TeX's brace-less `\\boxed 5.` read as `5`
     (trailing punctuation dropped). Several boxed answers that end the text joined only by
     whitespace, commas, "and" or math delimiters (`\\boxed{(2,2)}$ and $\\boxed{(6,2)}`)
     are one answer list, `(2,2), (6,2)`. A last box cut off before its closing brace, or only
     empty boxes, means no answer (None): the generation ended inside its answer.
  2. Otherwise a GSM8K `#### 42` line (`extract_hashes`).
  3. Otherwise what Math-Verify's own extraction finds in the whole text, as lighteval's MATH-500
     metric configures it (LaTeX with boxed first, then plain expressions): "the answer is 5",
     a final `$...$` expression, the last number; a sentence's final `.,;:` dropped ("is 2/3."
     gives `2/3`). None if it finds nothing.
Steps 1 and 2 are plain string work in the caller's process; step 3 runs in a worker (below).

Equivalence (`is_equivalent`) is decided by Math-Verify, `verify(gold, prediction)` with gold
first, never by a hand-written normaliser, with one correction: Math-Verify calls two exact
numbers equal when they differ by less than ~1e-15 (`(a - b).evalf(chop=True) == 0`), so
`\\frac{1}{2004!}` "equalled" `\\frac{1}{2006!}`. Exact expressions (no decimal float in them)
are compared exactly here: two constants by their difference to 30 accurate digits (zero to
every digit sympy can compute counts as zero), anything with symbols by `simplify(a - b) == 0`.
Primes count (Math-Verify drops them, so `E'` "equalled" `E`). A decimal side keeps Math-Verify's tolerance
(6 decimal places: `0.333333` equals `\\frac13`, and `0.0000001` equals `0.0000002`). The only
shortcut before the worker is string equality up to surrounding whitespace (`\\dfrac` = `\\frac`).

Time limits. Math-Verify's own limits use SIGALRM, which only works on a process's main thread,
and sympy can run for hours on adversarial LaTeX (`9999999999!`). So every check runs in one of
up to `MAX_WORKERS` worker processes, started on first use: a worker arms its own alarm for the
budget left (and answers "too slow" itself), and a worker that has not answered by the deadline
is killed and replaced in the background. `timeout` is counted from the call, including time
spent waiting for a busy worker, but not a worker's start-up (importing sympy and Math-Verify,
~1 s), which has its own limit of `STARTUP_TIMEOUT`; a worker that cannot start, twice, is a
`MassError`. A check that runs over counts as not equivalent. Everything works from any thread.

    from mass.checker import is_equivalent, extract_final_answer
    is_equivalent("\\frac{1}{2}", extract_final_answer("... so $\\boxed{0.5}$."))  # True
"""

from __future__ import annotations

import atexit
import multiprocessing as mp
import os
import re
import signal
import threading
import time
from typing import Any, Callable

from mass.errors import MassError

DEFAULT_TIMEOUT = 10.0  # seconds one check may take
STARTUP_TIMEOUT = 60.0  # seconds a worker may take to import sympy and Math-Verify (slow under load)
MAX_WORKERS = 4  # worker processes, started as concurrent checks need them
WORKER_MEMORY = 4 << 30  # bytes of address space per worker: a runaway power must not starve training


# --- extraction ------------------------------------------------------------------------------

_COMMAND = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_SPACES = re.compile(r"\s*")
_BRACE_TOKENS = re.compile(r"\\.|[{}]", re.S)  # an escaped character is one token: `\}` is no brace
_BARE_ARGUMENT = re.compile(r"[ \t]*([^\s${}\\]+)")  # "\boxed 5."
# Between boxes of one answer list. Not "or": MATH's solutions write "$\\boxed{-b+2}$, or
# $\\boxed{2-b}$" for two forms of one answer.
_JOINERS = re.compile(r"(?:\s|[,;$]|\\[()\[\]]|\\q?quad\b|\band\b|\\text\{\s*and\s*\})*")


def extract_boxed(text: str) -> str | None:
    """The final boxed answer of `text` (rule 1 of the module docstring), else None.

    `a \\boxed{1} then \\boxed{2}` -> "2";  `\\boxed{2} and \\boxed{3}` -> "2, 3";
    `\\boxed 5.` -> "5";  `\\boxed{\\}}` -> "\\}";  `cut off \\boxed{12` -> None.
    """
    starts = list(_COMMAND.finditer(text))
    k = len(starts) - 1
    while k >= 0:  # the last box with an argument; empty ones (`\boxed{}` in an echoed prompt) are skipped
        answer, _ = _box_argument(text, starts[k].end(), len(text))
        if answer is None:
            return None  # the last box is cut off: the generation ended inside its answer
        if answer:
            break
        k -= 1
    if k < 0:
        return None
    answers, left = [answer], starts[k].start()
    for j in range(k - 1, -1, -1):  # earlier boxes joined to it only by "and", commas, spaces, `$`
        earlier, end = _box_argument(text, starts[j].end(), left)
        if not earlier or not _JOINERS.fullmatch(text, end, left):
            break
        answers.insert(0, earlier)
        left = starts[j].start()
    return ", ".join(answers)


def _box_argument(text: str, pos: int, limit: int) -> tuple[str | None, int]:
    """(argument, end) of a box command that ends at `pos`, read no further than `limit`.

    The argument is stripped; "" when there is none; None when its brace does not close before
    `limit` (so an outer box never counts as a box that follows its own inner one).
    """
    i = _SPACES.match(text, pos, limit).end()  # "\boxed {5}", "\boxed\n{5}"
    if i < limit and text[i] == "{":
        close = _closing_brace(text, i, limit)
        return (None, limit) if close is None else (text[i + 1 : close].strip(), close + 1)
    m = _BARE_ARGUMENT.match(text, pos, limit)  # TeX's brace-less form; "5." ends a sentence
    return (m.group(1).rstrip(".,;:"), m.end()) if m else ("", pos)


def _closing_brace(text: str, start: int, limit: int) -> int | None:
    """Index of the `}` that closes the `{` at `text[start]`, or None if it does not close before `limit`."""
    depth = 0
    for m in _BRACE_TOKENS.finditer(text, start, limit):
        depth += {"{": 1, "}": -1}.get(m.group(), 0)
        if depth == 0:
            return m.start()
    return None


def extract_hashes(text: str) -> str | None:
    """GSM8K's final answer: what follows the last '####', commas, dollar signs and a full stop removed."""
    if "####" not in text:
        return None
    tail = text.rsplit("####", 1)[1].strip().splitlines()
    return (tail[0].replace(",", "").replace("$", "").strip().rstrip(".").strip() or None) if tail else None


def extract_final_answer(text: str, timeout: float = DEFAULT_TIMEOUT) -> str | None:
    """The model's final answer (the module docstring's rules 1-3), else None.

    Rules 1 and 2 are instant; rule 3 (no box, no '####') asks Math-Verify in a worker process
    and gives None if that takes longer than `timeout` seconds.
    """
    if _COMMAND.search(text):
        return extract_boxed(text)
    hashes = extract_hashes(text)
    if hashes is not None or not text.strip():
        return hashes
    return _pool().run("extract", (text,), timeout)


# --- equivalence -----------------------------------------------------------------------------

def is_equivalent(gold: str, prediction: str | None, timeout: float = DEFAULT_TIMEOUT) -> bool:
    """Whether `prediction` is mathematically equal to `gold` (Math-Verify, gold first).

    Returns within about `timeout` seconds from any thread whatever the input (plus a worker's
    start-up when none is running); a check that runs over is False.
    """
    if prediction is None or not prediction.strip():
        return False
    if _same_text(gold, prediction):
        return True
    if _primes(gold) != _primes(prediction):  # Math-Verify drops primes: E' would equal E
        return False
    return _pool().run("equal", (gold, prediction), timeout) is True


def _primes(answer: str) -> int:
    """How many primes an answer has (`'`, `\\prime`): f'(x) and f(x), E' and E differ."""
    return len(re.findall(r"'|\\prime(?![A-Za-z])", answer))


def _same_text(a: str, b: str) -> bool:
    """Equal as strings up to surrounding whitespace and \\dfrac/\\tfrac. Inner whitespace counts:
    squashing it would join tokens ("1 2" is not "12")."""
    def norm(s: str) -> str:
        return re.sub(r"\\[dt]frac(?![A-Za-z])", r"\\frac", s.strip())

    return norm(a) == norm(b)


# --- inside a worker process -------------------------------------------------------------------

class _Timeout(BaseException):
    """Raised by a worker's alarm. A BaseException, so that the `except Exception` clauses in
    Math-Verify and sympy cannot swallow it."""


_alarm_armed = False  # a late alarm arriving after a check has finished must not raise


def _on_alarm(signum: int, frame: Any) -> None:
    if _alarm_armed:
        raise _Timeout


def _within(seconds: float, fn: Callable[..., Any], *args: Any) -> tuple[str, Any]:
    """("ok", fn(*args)), or ("timeout", None) once `seconds` have passed (SIGALRM, main thread)."""
    global _alarm_armed
    try:
        try:
            _alarm_armed = True
            signal.setitimer(signal.ITIMER_REAL, max(seconds, 1e-3))
            return "ok", fn(*args)
        finally:
            _alarm_armed = False
            signal.setitimer(signal.ITIMER_REAL, 0)
    except _Timeout:
        return "timeout", None


def _equal(gold: str, prediction: str) -> bool:
    """Math-Verify's verdict on two answers, each parsed as the content of a \\boxed{}."""
    from math_verify import parse, verify

    # Math-Verify's own time limits are off (None): `_within` bounds the whole check instead.
    g = parse(f"\\boxed{{{gold}}}", parsing_timeout=None)
    p = parse(f"\\boxed{{{prediction}}}", parsing_timeout=None)
    return bool(g) and bool(p) and bool(verify(g, p, timeout_seconds=None))


def _extract(text: str) -> str | None:
    """The answer Math-Verify's `parse` would pick from `text`, as text (rule 3).

    lighteval's MATH-500 targets, and `parse`'s own selection ("any_match": the best-priority
    pattern, rightmost match first, the first match that parses), keeping the matched string
    rather than the sympy value so that `is_equivalent` can read it again.
    """
    from itertools import groupby

    from math_verify import ExprExtractionConfig, LatexExtractionConfig
    from math_verify.parser import extract_match, get_extraction_regexes

    targets = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]
    patterns = sorted(((p, target, priority) for regexes, target in get_extraction_regexes(targets)
                       for p, priority in regexes), key=lambda x: x[2])
    for _, group in groupby(patterns, key=lambda x: x[2]):
        matches = sorted(((m, target) for p, target, _ in group for m in p.finditer(text)),
                         key=lambda x: (x[0].end(), -x[0].start()), reverse=True)
        for m, target in matches:
            value, string = extract_match(m, target)
            string = string.strip().rstrip(".,;:").rstrip()  # "... is 2/3." ends a sentence, not the answer
            if value is not None and string:
                return string
    return None


_TASKS: dict[str, Callable[..., Any]] = {"equal": _equal, "extract": _extract}


def _setup_worker() -> None:
    """Imports and settings of a worker process: quiet, bounded, exact (see `_exact_comparison`)."""
    import logging
    import resource
    import warnings

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the parent, which ends its workers
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY or soft > WORKER_MEMORY:
        resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY, hard))  # MemoryError = not equivalent
    for name in ("math_verify", "latex2sympy2_extended"):  # their timeout warnings print the whole input
        logging.getLogger(name).setLevel(logging.ERROR)
    from math_verify import grader

    warnings.filterwarnings("ignore")  # after the import: sympy's own import shows its deprecations "once"
    _exact_comparison(grader)
    signal.signal(signal.SIGALRM, _on_alarm)


def _serve(conn: Any) -> None:
    """A worker's main loop: set up, say ("ready", None), then answer (task, args, seconds)
    requests with ("ok", result) / ("timeout", None) / ("error", message) until the pipe closes."""
    try:
        _setup_worker()
    except BaseException as e:  # reported to the parent, which retries once and then raises
        conn.send(("failed", f"{type(e).__name__}: {e}"))
        return
    conn.send(("ready", None))
    while True:
        try:
            task, args, seconds = conn.recv()
        except EOFError:
            return
        try:
            reply = _within(seconds, _TASKS[task], *args)
        except Exception as e:  # a Math-Verify bug on odd input means "no answer", never a dead worker
            reply = ("error", f"{type(e).__name__}: {e}"[:500])
        conn.send(reply)


# --- exact numbers (patched into Math-Verify inside the workers only) -----------------------

def _exact_comparison(grader: Any) -> None:
    """Make Math-Verify's `grader` compare exact expressions exactly.

    `verify` tries `sympy_numeric_eq` and then `sympy_symbolic_eq` on every pair it compares
    (also inside tuples, sets, intervals, matrices and equations; both are looked up by name on
    each call, so replacing them here covers all of those). For two exact, non-atomic expressions
    the numeric step is `(a - b).evalf(chop=True) == 0`, an absolute tolerance of ~1e-15, which
    grades 1/2^99 equal to 1/2^98. Here that step says "not shown equal" for them and the
    symbolic step decides; its branches for matrices (entry by entry, back through this
    function) and for plain numbers (exact unless a side is a float) are left as they are.
    """
    from math_verify.grader import is_atomic_or_pct_atomic
    from sympy import MatrixBase, Number
    from sympy.matrices.expressions import MatrixExpr

    numeric_eq = grader.sympy_numeric_eq

    def exact_aware_numeric_eq(a: Any, b: Any, float_rounding: int, numeric_precision: int) -> bool:
        keep = (isinstance(a, (MatrixBase, MatrixExpr)) or isinstance(b, (MatrixBase, MatrixExpr))
                or is_atomic_or_pct_atomic(a, Number) or is_atomic_or_pct_atomic(b, Number)
                or not (_is_exact(a) and _is_exact(b)))
        return numeric_eq(a, b, float_rounding, numeric_precision) if keep else False

    grader.sympy_numeric_eq = exact_aware_numeric_eq
    grader.sympy_symbolic_eq = _symbolic_eq


def _is_exact(x: Any) -> bool:
    """A sympy expression without a decimal float in it (integers, fractions, pi, sqrt(2), x)."""
    from sympy import Basic, Float

    return isinstance(x, Basic) and not x.has(Float)


def _symbolic_eq(a: Any, b: Any) -> bool:
    """Math-Verify's symbolic step, `simplify(a - b) == 0`; for two exact constants, their
    difference evaluated to 30 accurate digits (zero, or zero to every digit evalf can compute:
    PrecisionExhausted), which is exact enough for 1/2004! against 1/2006! and fast where
    simplify is not."""
    from sympy import Basic, MatrixBase, simplify
    from sympy.core.evalf import PrecisionExhausted

    try:
        diff = a - b
        if isinstance(diff, Basic) and diff.is_number and _is_exact(a) and _is_exact(b):
            # two exact constants: 30 accurate digits of the difference decide, fast even where
            # simplify takes minutes (nested radicals); PrecisionExhausted: zero to every digit
            return bool(diff.evalf(30, strict=True) == 0)
        diff = simplify(diff)
        if isinstance(diff, MatrixBase):
            return bool(diff.is_zero_matrix)
        if not isinstance(diff, Basic) or diff.is_zero is False:
            return False
        if diff.is_zero:
            return True
        if diff.free_symbols or not (_is_exact(a) and _is_exact(b)):
            return False
        return diff.evalf(30, strict=True) == 0
    except PrecisionExhausted:
        return True
    except Exception:
        return False


# --- the worker processes, seen from the caller ----------------------------------------------

class _Worker:
    """One worker process and our end of its pipe."""

    def __init__(self, serve: Callable[[Any], None]) -> None:
        ctx = mp.get_context("spawn")  # no fork of a process holding torch threads
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=serve, args=(child,), daemon=True, name="mass-checker")
        self.proc.start()
        child.close()

    def wait_ready(self, seconds: float) -> str | None:
        """None once the worker has said "ready", else why it did not within `seconds`."""
        try:
            if not self.conn.poll(seconds):
                return f"it did not finish importing Math-Verify within {seconds:.0f} s"
            status, detail = self.conn.recv()
            return None if status == "ready" else str(detail)
        except (EOFError, OSError):
            self.proc.join(1)
            return f"it exited during start-up (exit code {self.proc.exitcode})"

    def ask(self, request: tuple, deadline: float) -> tuple[str, Any] | None:
        """The worker's reply to `request`, or None if it died or did not answer by `deadline`."""
        try:
            self.conn.send(request)
            if self.conn.poll(max(0.0, deadline - time.monotonic())):
                return self.conn.recv()
        except (EOFError, OSError):  # died: BrokenPipeError, ConnectionResetError, EOF
            pass
        return None

    def kill(self) -> None:
        self.proc.kill()

    def reap(self) -> None:
        self.proc.kill()
        self.proc.join(5)
        self.conn.close()


class _Pool:
    """Up to `size` workers, started as concurrent calls need them; `run` is the only entry."""

    def __init__(self, size: int = MAX_WORKERS, serve: Callable[[Any], None] = _serve,
                 startup_timeout: float = STARTUP_TIMEOUT) -> None:
        self.size, self.serve, self.startup_timeout = size, serve, startup_timeout
        self.cv = threading.Condition()
        self.idle: list[_Worker] = []  # started and free
        self.live = 0  # workers started or starting (at most `size`)
        self.starting = 0
        self.waiting = 0  # calls waiting for a free worker
        self.failures = 0  # start-ups that failed twice; a waiting call raises on a new one
        self.failure = ""
        self.workers: set[_Worker] = set()  # for `close`
        self.pid = os.getpid()  # the workers are this process's children

    def run(self, task: str, args: tuple, timeout: float) -> Any:
        """`task`'s result from a worker, or None if it took longer than `timeout` seconds from
        now (not counting worker start-up) or the worker failed on it."""
        worker, deadline = self._acquire(time.monotonic() + timeout)
        if worker is None:
            return None
        # The worker's own alarm goes off a little before our deadline so that it can answer
        # "timeout" and stay alive; only a worker stuck where signals cannot reach it is killed.
        left = deadline - time.monotonic()
        alarm = left - min(0.1, left / 10)
        reply = worker.ask((task, args, alarm), deadline) if left > 0 else ("timeout", None)
        if reply is None:
            self._replace(worker)
            return None
        with self.cv:
            self.idle.append(worker)
            self.cv.notify()
        status, result = reply
        return result if status == "ok" else None

    def _acquire(self, deadline: float) -> tuple[_Worker | None, float]:
        """A free, running worker and the deadline moved back by any time spent waiting for
        start-ups; (None, deadline) if the deadline passed while all workers were busy."""
        with self.cv:
            self.waiting += 1
            seen_failures = self.failures
            try:
                while True:
                    while self.idle:
                        worker = self.idle.pop()
                        if worker.proc.is_alive():
                            return worker, deadline
                        worker.reap()  # died while idle (OOM killer, a signal): start another
                        self._forget(worker)
                    if self.live == 0 and self.failures > seen_failures:
                        raise MassError(f"the answer checker's worker process could not start (tried "
                                        f"twice): {self.failure}. The checker runs Math-Verify in a process "
                                        f"started with 'spawn': `import math_verify` must work, and a script "
                                        f"must keep its top-level code under `if __name__ == '__main__':`")
                    while self.live < self.size and self.starting < self.waiting:
                        self._start_one()
                    now = time.monotonic()
                    if self.starting >= self.waiting:  # a worker is starting for each waiting call
                        self.cv.wait(self.startup_timeout)
                        deadline += time.monotonic() - now  # start-up does not count against the check
                    elif now >= deadline:
                        return None, deadline
                    else:
                        self.cv.wait(deadline - now)
            finally:
                self.waiting -= 1

    def _start_one(self) -> None:
        """Start a worker in the background (under `cv`); it joins `idle` once it is ready."""
        self.live += 1
        self.starting += 1
        threading.Thread(target=self._boot, daemon=True, name="mass-checker-start").start()

    def _boot(self, tries: int = 2) -> None:
        reason = ""
        for _ in range(tries):  # one retry: a single failed start can be a passing memory squeeze
            try:
                worker = _Worker(self.serve)
            except Exception as e:
                reason = f"{type(e).__name__}: {e}"
                continue
            with self.cv:
                self.workers.add(worker)
            problem = worker.wait_ready(self.startup_timeout)
            with self.cv:
                if problem is None:
                    self.idle.append(worker)
                    self.starting -= 1
                    self.cv.notify_all()
                    return
                self.workers.discard(worker)
            reason = problem
            worker.reap()
        with self.cv:
            self.starting -= 1
            self.live -= 1
            self.failures += 1
            self.failure = reason
            self.cv.notify_all()

    def _replace(self, worker: _Worker) -> None:
        """Kill a worker that overran or died and start a replacement at once, in the background."""
        worker.kill()
        threading.Thread(target=worker.reap, daemon=True).start()
        with self.cv:
            self._forget(worker)
            if self.live < self.size:
                self._start_one()

    def _forget(self, worker: _Worker) -> None:
        self.workers.discard(worker)
        self.live -= 1

    def close(self) -> None:
        if os.getpid() != self.pid:
            return
        with self.cv:
            for worker in list(self.workers):
                worker.kill()


_POOL: _Pool | None = None
_POOL_LOCK = threading.Lock()


def _pool() -> _Pool:
    """This process's pool; a forked child (a DataLoader worker) starts its own, never sharing pipes."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL.pid != os.getpid():
            _POOL = _Pool()
            atexit.register(_POOL.close)
        return _POOL
