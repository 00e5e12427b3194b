"""MiniMath problem templates: seven MATH subjects, levels 1-5, short worked solutions.

A template is a set of wordings with integer slots written `<name>`, a sampler that draws the
slot values for a difficulty level, and a solver that turns slot values into a worked solution
and a final answer in MATH's forms (integers, fractions, expressions in pi, tuples, vectors).
Because the solver only needs the slot values, any problem text that matches a wording can be
solved again: `solve_text` is how synthesised problems are graded (see mass/minimath/__init__.py).

Levels grow the numbers and the number of steps; the solutions spell out intermediate results,
so a small model can learn the easy levels and struggles on the hard ones, as a base LLM on MATH.
"""

from __future__ import annotations

import functools
import math
import random
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable

Slots = dict[str, int]

SUBJECTS = (
    "Algebra",
    "Counting & Probability",
    "Geometry",
    "Intermediate Algebra",
    "Number Theory",
    "Prealgebra",
    "Precalculus",
)


@dataclass(frozen=True)
class Template:
    subject: str
    name: str
    wordings: tuple[str, ...]
    sample: Callable[[random.Random, int], Slots]  # (rng, level) -> slot values
    solve: Callable[[Slots], tuple[str, str]]  # slot values -> (worked steps, final answer)
    # named operations only: the answer-only line that pretraining's solving documents use (no
    # definition, no steps), and whether the operation is in the long tail (rarely solved in the corpus)
    terse: Callable[[Slots], str] | None = None
    tail: bool = False


# --- formatting helpers ----------------------------------------------------------------------

def tex(x: Fraction | int) -> str:
    """A number as MATH writes final answers: integer, or reduced (signed) \\frac."""
    x = Fraction(x)
    if x.denominator == 1:
        return str(x.numerator)
    sign = "-" if x < 0 else ""
    return f"{sign}\\frac{{{abs(x.numerator)}}}{{{x.denominator}}}"


def par(n: int) -> str:
    """Parenthesise negatives inside products: 3 \\cdot (-2)."""
    return f"({n})" if n < 0 else str(n)


def pi_tex(x: Fraction) -> str:
    """x*pi as MATH writes it: 3\\pi, \\frac{3\\pi}{4}, \\frac{\\pi}{6}."""
    num, den = x.numerator, x.denominator
    head = "" if abs(num) == 1 else str(abs(num))
    sign = "-" if num < 0 else ""
    if den == 1:
        return f"{sign}{head}\\pi"
    return f"{sign}\\frac{{{head}\\pi}}{{{den}}}"


def between(rng: random.Random, level: int, ranges: tuple[tuple[int, int], ...]) -> int:
    """A uniform integer from the (lo, hi) range of this level."""
    lo, hi = ranges[level - 1]
    return rng.randint(lo, hi)


def nonzero(rng: random.Random, lo: int, hi: int) -> int:
    while True:
        v = rng.randint(lo, hi)
        if v != 0:
            return v


# --- Prealgebra ------------------------------------------------------------------------------

def _order_sample(rng, level):
    a = between(rng, level, ((1, 9), (1, 20), (10, 99), (10, 99), (100, 999)))
    b = between(rng, level, ((2, 5), (2, 9), (2, 12), (10, 30), (10, 40)))
    c = between(rng, level, ((2, 5), (2, 9), (2, 12), (2, 9), (10, 40)))
    return {"a": a, "b": b, "c": c}


def _order_solve(s):
    bc = s["b"] * s["c"]
    return (f"We multiply first: ${s['b']} \\times {s['c']} = {bc}$. Then ${s['a']} + {bc} = {s['a'] + bc}$.",
            str(s["a"] + bc))


def _percent_sample(rng, level):
    p = rng.choice(((10, 50), (10, 20, 25, 50), (5, 15, 30, 40, 75), (12, 35, 45, 60, 80), (4, 8, 16, 65, 85))[level - 1])
    q = 100 // math.gcd(p, 100)
    k = between(rng, level, ((1, 5), (1, 9), (1, 12), (2, 15), (3, 25)))
    return {"p": p, "n": q * k}


def _percent_solve(s):
    f = Fraction(s["p"], 100)
    t = s["n"] // f.denominator
    return (f"$\\frac{{{s['p']}}}{{100}} = {tex(f)}$, and ${s['n']} \\div {f.denominator} = {t}$, "
            f"so the answer is ${t} \\cdot {f.numerator} = {t * f.numerator}$.", str(t * f.numerator))


def _fracsum_sample(rng, level):
    hi = (4, 6, 9, 12, 15)[level - 1]
    b, d = rng.randint(2, hi), rng.randint(2, hi)
    return {"a": rng.randint(1, b - 1), "b": b, "c": rng.randint(1, d - 1), "d": d}


def _fracsum_solve(s):
    a, b, c, d = s["a"], s["b"], s["c"], s["d"]
    lcm = b * d // math.gcd(b, d)
    x, y = a * lcm // b, c * lcm // d
    total = Fraction(x + y, lcm)
    return (f"The common denominator is ${lcm}$: $\\frac{{{a}}}{{{b}}} = \\frac{{{x}}}{{{lcm}}}$ and "
            f"$\\frac{{{c}}}{{{d}}} = \\frac{{{y}}}{{{lcm}}}$. The sum is $\\frac{{{x + y}}}{{{lcm}}} = {tex(total)}$.",
            tex(total))


def _mean_sample(rng, level):
    hi = (9, 20, 50, 99, 200)[level - 1]
    return {"a": rng.randint(1, hi), "b": rng.randint(1, hi), "c": rng.randint(1, hi)}


def _mean_solve(s):
    total = s["a"] + s["b"] + s["c"]
    return (f"The sum is ${s['a']} + {s['b']} + {s['c']} = {total}$, and ${total} \\div 3 = {tex(Fraction(total, 3))}$.",
            tex(Fraction(total, 3)))


# --- Algebra ---------------------------------------------------------------------------------

def _linear_sample(rng, level):
    a = between(rng, level, ((1, 3), (2, 6), (2, 9), (3, 12), (4, 15)))
    b = between(rng, level, ((1, 9), (1, 20), (5, 40), (10, 60), (10, 99)))
    if level <= 3:
        x = between(rng, level, ((1, 9), (1, 12), (2, 15), (1, 1), (1, 1)))
        return {"a": a, "b": b, "c": a * x + b}
    return {"a": a, "b": b, "c": b + rng.randint(1, 60 * level)}


def _linear_solve(s):
    a, b, c = s["a"], s["b"], s["c"]
    if a == 0:
        raise ZeroDivisionError
    x = Fraction(c - b, a)
    return f"Subtract ${b}$ from both sides: ${a}x = {c - b}$. Divide by ${a}$: $x = {tex(x)}$.", tex(x)


def _quad_sample(rng, level):
    hi = (3, 4, 5, 7, 9)[level - 1]
    d = rng.randint(1, hi) if level <= 2 else nonzero(rng, -hi, hi)
    return {"a": rng.randint(1, hi), "b": rng.randint(1, 3 * hi), "c": rng.randint(0, 4 * hi), "d": d}


def _quad_solve(s):
    a, b, c, d = s["a"], s["b"], s["c"], s["d"]
    ad2, bd = a * d * d, b * d
    value = ad2 + bd + c
    return (f"$f({d}) = {a} \\cdot {par(d)}^2 + {b} \\cdot {par(d)} + {c} = {ad2} + {par(bd)} + {c} = {value}$.",
            str(value))


def _slope_sample(rng, level):
    hi = (5, 9, 12, 20, 30)[level - 1]
    lo = 0 if level <= 2 else -hi
    x1, y1 = rng.randint(lo, hi), rng.randint(lo, hi)
    x2 = x1 + nonzero(rng, 1 if level == 1 else -hi, hi)
    y2 = y1 + (x2 - x1) * rng.randint(0, 3) if level == 1 else rng.randint(lo, hi)
    return {"x1": x1, "y1": y1, "x2": x2, "y2": y2}


def _slope_solve(s):
    dy, dx = s["y2"] - s["y1"], s["x2"] - s["x1"]
    m = Fraction(dy, dx)
    return (f"The slope is $\\frac{{{s['y2']} - {par(s['y1'])}}}{{{s['x2']} - {par(s['x1'])}}} = "
            f"\\frac{{{dy}}}{{{dx}}} = {tex(m)}$.", tex(m))


def _system_sample(rng, level):
    hi = (9, 15, 30, 60, 99)[level - 1]
    x, y = rng.randint(1, hi), rng.randint(1, hi)
    if level >= 4 and rng.random() < 0.5:
        x, y = y, x
    s, d = x + y, x - y
    if level >= 4:
        d += rng.choice((0, 1))  # an odd s + d gives a fractional x
    return {"s": s, "d": d}


def _system_solve(s):
    x = Fraction(s["s"] + s["d"], 2)
    return f"Adding the equations gives $2x = {s['s']} + {par(s['d'])} = {s['s'] + s['d']}$, so $x = {tex(x)}$.", tex(x)


# --- Number Theory ---------------------------------------------------------------------------

def _remainder_sample(rng, level):
    d = between(rng, level, ((2, 5), (3, 9), (6, 12), (7, 19), (11, 31)))
    n = between(rng, level, ((10, 50), (20, 99), (50, 299), (100, 999), (500, 4999)))
    return {"n": n, "d": d}


def _remainder_solve(s):
    q, r = divmod(s["n"], s["d"])
    return f"${s['n']} = {s['d']} \\cdot {q} + {r}$, so the remainder is ${r}$.", str(r)


def _gcd_sample(rng, level):
    g = between(rng, level, ((2, 5), (2, 9), (3, 12), (4, 18), (6, 25)))
    hi = (5, 7, 9, 12, 15)[level - 1]
    x, y = rng.randint(2, hi), rng.randint(2, hi)
    while math.gcd(x, y) != 1 or x == y:
        x, y = rng.randint(2, hi), rng.randint(2, hi)
    return {"a": g * max(x, y), "b": g * min(x, y)}


def _gcd_solve(s):
    a, b = s["a"], s["b"]
    steps = []
    while b:
        q, r = divmod(a, b)
        steps.append(f"${a} = {q} \\cdot {b} + {r}$")
        a, b = b, r
    return "By the Euclidean algorithm, " + ", ".join(steps) + f". So the GCD is ${a}$.", str(a)


def _divisors_sample(rng, level):
    limit = (30, 60, 120, 300, 1000)[level - 1]
    while True:
        n = rng.randint(6, limit)
        if len(_factor(n)) >= (1 if level <= 2 else 2):
            return {"n": n}


def _factor(n: int) -> list[tuple[int, int]]:
    out, p = [], 2
    while p * p <= n:
        e = 0
        while n % p == 0:
            n //= p
            e += 1
        if e:
            out.append((p, e))
        p += 1
    if n > 1:
        out.append((n, 1))
    return out


def _divisors_solve(s):
    if s["n"] < 1:
        raise ValueError("n must be positive")
    f = _factor(s["n"])
    powers = " \\cdot ".join(f"{p}^{{{e}}}" for p, e in f)
    count = math.prod(e + 1 for _, e in f)
    terms = "".join(f"({e} + 1)" for _, e in f)
    return f"${s['n']} = {powers}$, so it has ${terms} = {count}$ positive divisors.", str(count)


# --- Counting & Probability ------------------------------------------------------------------

def _binom_sample(rng, level):
    n = between(rng, level, ((3, 6), (4, 8), (5, 10), (6, 14), (8, 20)))
    k = rng.randint(1, min((1, 2, 2, 3, 4)[level - 1], n - 1))
    return {"n": n, "k": k}


def _binom_solve(s):
    n, k = s["n"], s["k"]
    if not 0 <= k <= n:
        raise ValueError("k out of range")
    num = " \\cdot ".join(str(n - i) for i in range(k))
    den = " \\cdot ".join(str(i) for i in range(k, 0, -1))
    value = math.comb(n, k)
    return f"$\\dbinom{{{n}}}{{{k}}} = \\frac{{{num}}}{{{den}}} = {value}$.", str(value)


def _officers_sample(rng, level):
    return {"n": between(rng, level, ((3, 6), (4, 10), (6, 15), (10, 25), (15, 40)))}


def _officers_solve(s):
    n = s["n"]
    return (f"There are ${n}$ choices for president and then ${n - 1}$ for vice-president, "
            f"so ${n} \\cdot {n - 1} = {n * (n - 1)}$ ways.", str(n * (n - 1)))


def _line_sample(rng, level):
    return {"n": between(rng, level, ((2, 3), (3, 4), (4, 5), (5, 6), (6, 7)))}


def _line_solve(s):
    n = s["n"]
    if not 1 <= n <= 10:
        raise ValueError("n out of range")
    prod = " \\cdot ".join(str(i) for i in range(n, 0, -1))
    return f"The number of orders is ${n}! = {prod} = {math.factorial(n)}$.", str(math.factorial(n))


def _marbles_sample(rng, level):
    hi = (5, 9, 15, 25, 40)[level - 1]
    return {"r": rng.randint(1, hi), "b": rng.randint(1, hi)}


def _marbles_solve(s):
    total = s["r"] + s["b"]
    p = Fraction(s["r"], total)
    return (f"There are ${s['r']} + {s['b']} = {total}$ marbles and ${s['r']}$ are red, so the probability is "
            f"$\\frac{{{s['r']}}}{{{total}}} = {tex(p)}$.", tex(p))


# --- Geometry --------------------------------------------------------------------------------

def _side_sample(rng, level):
    lo_hi = ((2, 9), (3, 15), (5, 25), (10, 50), (12, 99))[level - 1]
    return {"a": rng.randint(*lo_hi), "b": rng.randint(*lo_hi)}


def _area_solve(s):
    return f"The area is ${s['a']} \\times {s['b']} = {s['a'] * s['b']}$.", str(s["a"] * s["b"])


def _perimeter_solve(s):
    total = s["a"] + s["b"]
    return f"The perimeter is $2({s['a']} + {s['b']}) = 2 \\cdot {total} = {2 * total}$.", str(2 * total)


def _triangle_solve(s):
    area = Fraction(s["a"] * s["b"], 2)
    return f"The area is $\\frac{{1}}{{2}} \\cdot {s['a']} \\cdot {s['b']} = \\frac{{{s['a'] * s['b']}}}{{2}} = {tex(area)}$.", tex(area)


def _polygon_sample(rng, level):
    return {"n": between(rng, level, ((3, 6), (4, 8), (5, 12), (8, 20), (10, 40)))}


def _polygon_solve(s):
    n = s["n"]
    if n < 3:
        raise ValueError("a polygon has at least 3 sides")
    return f"The sum is $180({n} - 2) = 180 \\cdot {n - 2} = {180 * (n - 2)}$ degrees.", str(180 * (n - 2))


def _circle_sample(rng, level):
    return {"r": between(rng, level, ((1, 5), (2, 9), (3, 15), (6, 25), (10, 40)))}


def _circle_solve(s):
    r2 = s["r"] ** 2
    return f"The area is $\\pi r^2 = \\pi \\cdot {s['r']}^2 = {r2}\\pi$.", pi_tex(Fraction(r2))


_TRIPLES = ((3, 4, 5), (6, 8, 10), (5, 12, 13), (8, 15, 17), (9, 12, 15), (7, 24, 25), (20, 21, 29), (12, 16, 20))


def _hyp_sample(rng, level):
    a, b, _ = rng.choice(_TRIPLES[: (2, 3, 5, 7, 8)[level - 1]])
    k = rng.randint(1, (1, 2, 2, 3, 4)[level - 1])
    return {"a": a * k, "b": b * k}


def _hyp_solve(s):
    a2, b2 = s["a"] ** 2, s["b"] ** 2
    c = math.isqrt(a2 + b2)
    if c * c != a2 + b2:
        raise ValueError("not a Pythagorean triple")
    return f"The hypotenuse is $\\sqrt{{{s['a']}^2 + {s['b']}^2}} = \\sqrt{{{a2} + {b2}}} = \\sqrt{{{a2 + b2}}} = {c}$.", str(c)


# --- Intermediate Algebra --------------------------------------------------------------------

def _roots_sample(rng, level):
    hi = (4, 6, 9, 12, 20)[level - 1]
    return {"b": rng.randint(1, hi), "c": rng.randint(1, 2 * hi)}


def _roots_solve(s):
    b, c = s["b"], s["c"]
    b2 = b * b
    return (f"By Vieta, $r + s = -{b}$ and $rs = {c}$, so $r^2 + s^2 = (r + s)^2 - 2rs = {b2} - {2 * c} = {b2 - 2 * c}$.",
            str(b2 - 2 * c))


def _remthm_sample(rng, level):
    hi = (2, 3, 4, 5, 6)[level - 1]
    return {"a": rng.randint(1, 3 * hi), "b": rng.randint(1, 5 * hi), "c": rng.randint(1, hi)}


def _remthm_solve(s):
    a, b, c = s["a"], s["b"], s["c"]
    value = c ** 3 + a * c + b
    return (f"By the Remainder Theorem, the remainder is ${c}^3 + {a} \\cdot {c} + {b} = {c ** 3} + {a * c} + {b} = {value}$.",
            str(value))


def _abs_sample(rng, level):
    hi = (5, 9, 15, 30, 60)[level - 1]
    return {"a": rng.randint(1, hi), "b": rng.randint(1, hi)}


def _abs_solve(s):
    a, b = s["a"], s["b"]
    if b < 0:
        raise ValueError("no solutions")
    return f"Either $x - {a} = {b}$ or $x - {a} = -{b}$, so $x = {a + b}$ or $x = {a - b}$.", f"{a - b}, {a + b}"


def _series_sample(rng, level):
    a = between(rng, level, ((1, 5), (1, 9), (1, 15), (2, 30), (5, 50)))
    d = between(rng, level, ((1, 2), (1, 4), (2, 6), (2, 9), (3, 12)))
    n = between(rng, level, ((3, 4), (4, 6), (5, 9), (6, 12), (8, 20)))
    return {"a": a, "b": a + d, "c": a + 2 * d, "l": a + (n - 1) * d}


def _series_solve(s):
    a, d, last = s["a"], s["b"] - s["a"], s["l"]
    if d <= 0 or (last - a) % d or s["c"] - s["b"] != d:
        raise ValueError("not an arithmetic sequence")
    n = (last - a) // d + 1
    total = n * (a + last) // 2
    return (f"The common difference is ${d}$, so there are $\\frac{{{last} - {a}}}{{{d}}} + 1 = {n}$ terms, and the sum is "
            f"$\\frac{{{n}({a} + {last})}}{{2}} = \\frac{{{n * (a + last)}}}{{2}} = {total}$.", str(total))


# --- Precalculus -----------------------------------------------------------------------------

def _vec_sample(rng, level):
    hi = (4, 6, 9, 12, 20)[level - 1]
    lo = 0 if level == 1 else -hi
    return {k: rng.randint(lo, hi) for k in "abcd"} | {"k": rng.randint(2, (2, 3, 4, 5, 7)[level - 1])}


def _dot_solve(s):
    ac, bd = s["a"] * s["c"], s["b"] * s["d"]
    return (f"The dot product is ${par(s['a'])} \\cdot {par(s['c'])} + {par(s['b'])} \\cdot {par(s['d'])} = "
            f"{ac} + {par(bd)} = {ac + bd}$.", str(ac + bd))


def _det_solve(s):
    ad, bc = s["a"] * s["d"], s["b"] * s["c"]
    return (f"The determinant is ${par(s['a'])} \\cdot {par(s['d'])} - {par(s['b'])} \\cdot {par(s['c'])} = "
            f"{ad} - {par(bc)} = {ad - bc}$.", str(ad - bc))


def _vsum_solve(s):
    k, a, b, c, d = s["k"], s["a"], s["b"], s["c"], s["d"]
    x, y = k * a + c, k * b + d
    vec = f"\\begin{{pmatrix}} {x} \\\\ {y} \\end{{pmatrix}}"
    return (f"Scaling gives $\\begin{{pmatrix}} {k * a} \\\\ {k * b} \\end{{pmatrix}}$, and adding gives "
            f"$\\begin{{pmatrix}} {k * a} + {par(c)} \\\\ {k * b} + {par(d)} \\end{{pmatrix}} = {vec}$.", vec)


def _radians_sample(rng, level):
    step = (90, 45, 30, 15, 5)[level - 1]
    return {"d": step * rng.randint(1, 360 // step)}


def _radians_solve(s):
    x = Fraction(s["d"], 180)
    if x == 0:
        raise ValueError("zero angle")
    return f"Multiply by $\\frac{{\\pi}}{{180}}$: ${s['d']} \\cdot \\frac{{\\pi}}{{180}} = {pi_tex(x)}$.", pi_tex(x)


# --- Named operations ------------------------------------------------------------------------
# Operations known by name, like the rarer techniques of MATH: "Compute $\operatorname{zorb}(3, 4)$."
# The definition is knowledge, not part of the problem. Gold (and synthesis) solutions work it out:
# "By definition, zorb(a, b) = 2a + 3b. So zorb(3, 4) = 2 * 3 + 3 * 4 = 6 + 12 = 18." The corpus's
# solving documents for named operations state only the result ("zorb(3, 4) = 18"), and solve the
# tail operations rarely. So the model learns to *write* worked examples of every operation (from
# the synthesis documents) but answers a named operation cold in one step, which it can only do for
# the common ones it has memorised. A worked example in the solving format switches it to working
# the operation out: the generation-solving gap that test-time training on its own examples closes.
# (A first version wrote the steps in the solving documents too, without the definition; the model
# then solved the tail operations as well as the common ones: its knowledge of a definition is
# keyed on the operation's name and transferred from the synthesis documents, so there was no gap.)

@dataclass(frozen=True)
class Form:
    """A two-argument formula: its definition in TeX (a, b as variables), the definition with the
    arguments plugged in, and its evaluated terms (summed, or multiplied when `product`)."""
    tex: Callable[[int, int], str]  # (p, q) -> "pa + qb"
    plug: Callable[[int, int, int, int], str]  # (p, q, x, y) -> "p \\cdot x + q \\cdot y"
    terms: Callable[[int, int, int, int], tuple[int, ...]]  # (p, q, x, y) -> (p * x, q * y)
    product: bool = False  # the value is the product of the two terms, not their sum
    mod: bool = False  # the value is a remainder mod q
    nonnegative: bool = False  # arguments are never negative (remainders, binomial coefficients)

    def mid(self, p: int, q: int, x: int, y: int) -> str:
        """The evaluated terms, one arithmetic step before the value: "6 - 12", "5 \\cdot (-4)"."""
        t = self.terms(p, q, x, y)
        return f"{t[0]} \\cdot {par(t[1])}" if self.product else _sum_tex(*t)

    def value(self, p: int, q: int, x: int, y: int) -> int:
        t = self.terms(p, q, x, y)
        return t[0] * t[1] if self.product else sum(t)


def _sum_tex(*terms: int) -> str:
    """12 + (-3) as "12 - 3"."""
    out = str(terms[0])
    for t in terms[1:]:
        out += f" - {-t}" if t < 0 else f" + {t}"
    return out


FORMS = {
    "lin": Form(lambda p, q: f"{p}a + {q}b", lambda p, q, x, y: f"{p} \\cdot {par(x)} + {q} \\cdot {par(y)}",
                lambda p, q, x, y: (p * x, q * y)),
    "diff": Form(lambda p, q: f"{p}a - {q}b", lambda p, q, x, y: f"{p} \\cdot {par(x)} - {q} \\cdot {par(y)}",
                 lambda p, q, x, y: (p * x, -q * y)),
    "prod": Form(lambda p, q: f"ab + {p}", lambda p, q, x, y: f"{par(x)} \\cdot {par(y)} + {p}",
                 lambda p, q, x, y: (x * y, p)),
    "prodminus": Form(lambda p, q: f"ab - {p}a", lambda p, q, x, y: f"{par(x)} \\cdot {par(y)} - {p} \\cdot {par(x)}",
                      lambda p, q, x, y: (x * y, -p * x)),
    "shift": Form(lambda p, q: f"(a + {p})(b + {q})", lambda p, q, x, y: f"({x} + {p})({y} + {q})",
                  lambda p, q, x, y: (x + p, y + q), product=True),
    "sq": Form(lambda p, q: f"a^2 + {p}b", lambda p, q, x, y: f"{par(x)}^2 + {p} \\cdot {par(y)}",
               lambda p, q, x, y: (x * x, p * y)),
    "sqdiff": Form(lambda p, q: f"a^2 - {p}b", lambda p, q, x, y: f"{par(x)}^2 - {p} \\cdot {par(y)}",
                   lambda p, q, x, y: (x * x, -p * y)),
    "sqsum": Form(lambda p, q: f"a^2 + b^2 + {p}", lambda p, q, x, y: f"{par(x)}^2 + {par(y)}^2 + {p}",
                  lambda p, q, x, y: (x * x, y * y, p)),
    "scaled": Form(lambda p, q: f"{p}(a + b)", lambda p, q, x, y: f"{p}({x} + {par(y)})",
                   lambda p, q, x, y: (p, x + y), product=True),
    "cross": Form(lambda p, q: f"{p}ab - b", lambda p, q, x, y: f"{p} \\cdot {par(x)} \\cdot {par(y)} - {par(y)}",
                  lambda p, q, x, y: (p * x * y, -y)),
    "mod": Form(lambda p, q: f"{p}a + b", lambda p, q, x, y: f"{p} \\cdot {x} + {y}",
                lambda p, q, x, y: (p * x, y), mod=True, nonnegative=True),
    "pairs": Form(lambda p, q: f"\\dbinom{{a}}{{2}} + {p}b", lambda p, q, x, y: f"\\dbinom{{{x}}}{{2}} + {p} \\cdot {y}",
                  lambda p, q, x, y: (x * (x - 1) // 2, p * y), nonnegative=True),
}


# (subject, name, form, p, q, tail): one fixed operation each. Per subject one common operation
# and a tail; Intermediate Algebra, the weakest subject, has the most tail operations.
OPERATIONS = (
    ("Prealgebra", "zorb", "lin", 2, 3, False), ("Prealgebra", "quill", "scaled", 3, 0, True),
    ("Prealgebra", "mox", "lin", 4, 5, True),
    ("Algebra", "flem", "diff", 3, 2, False), ("Algebra", "grot", "prod", 5, 0, True),
    ("Algebra", "plex", "shift", 1, 2, True), ("Algebra", "wend", "prodminus", 2, 0, True),
    ("Intermediate Algebra", "snib", "sq", 2, 0, False), ("Intermediate Algebra", "trul", "sqdiff", 3, 0, True),
    ("Intermediate Algebra", "vorn", "cross", 2, 0, True), ("Intermediate Algebra", "kelp", "sqsum", 1, 0, True),
    ("Intermediate Algebra", "drax", "shift", 3, 1, True),
    ("Number Theory", "mep", "mod", 2, 7, False), ("Number Theory", "yolk", "mod", 3, 5, True),
    ("Number Theory", "fisk", "mod", 4, 9, True),
    ("Counting & Probability", "brill", "pairs", 2, 0, False), ("Counting & Probability", "chup", "pairs", 3, 0, True),
    ("Geometry", "pell", "scaled", 2, 0, False), ("Geometry", "rusk", "prod", 4, 0, True),
    ("Precalculus", "gix", "sqsum", 2, 0, False), ("Precalculus", "hult", "cross", 3, 0, True),
)


def _op_sample(rng, level, nonnegative=False):
    """Small arguments: the difficulty is knowing the operation, not the arithmetic."""
    hi = (3, 4, 6, 8, 9)[level - 1]
    lo = 1 if level <= 3 else (0 if nonnegative else -(hi // 2))
    return {"x": rng.randint(lo, hi), "y": rng.randint(lo, hi)}


def _op_definition(name: str, form: Form, p: int, q: int) -> str:
    if form.mod:
        return f"$\\operatorname{{{name}}}(a, b)$ is the remainder when ${form.tex(p, q)}$ is divided by ${q}$"
    return f"$\\operatorname{{{name}}}(a, b) = {form.tex(p, q)}$"


def _op_steps(name: str, form: Form, p: int, q: int, s: Slots) -> tuple[str, str]:
    """(worked steps, answer): the computation after the definition is stated."""
    x, y = s["x"], s["y"]
    if form.nonnegative and (x < 0 or y < 0):
        raise ValueError("this operation takes non-negative arguments")
    v = form.value(p, q, x, y)
    if form.mod:
        return (f"${form.plug(p, q, x, y)} = {form.mid(p, q, x, y)} = {v}$, and ${v} = {q} \\cdot {v // q} + {v % q}$, so "
                f"$\\operatorname{{{name}}}({x}, {y}) = {v % q}$.", str(v % q))
    return f"$\\operatorname{{{name}}}({x}, {y}) = {form.plug(p, q, x, y)} = {form.mid(p, q, x, y)} = {v}$.", str(v)


def _operation(subject: str, name: str, form_name: str, p: int, q: int, tail: bool) -> Template:
    form = FORMS[form_name]

    def solve(s: Slots) -> tuple[str, str]:
        steps, answer = _op_steps(name, form, p, q, s)
        return f"By definition, {_op_definition(name, form, p, q)}. So {steps[0].lower()}{steps[1:]}", answer

    def answer_only(s: Slots) -> str:
        return f"$\\operatorname{{{name}}}({s['x']}, {s['y']}) = {_op_steps(name, form, p, q, s)[1]}$."

    return Template(subject, f"op_{name}",
                    (f"Compute $\\operatorname{{{name}}}(<x>, <y>)$.", f"What is $\\operatorname{{{name}}}(<x>, <y>)$?"),
                    functools.partial(_op_sample, nonnegative=form.nonnegative), solve, terse=answer_only, tail=tail)


NAMED_OPERATIONS: tuple[Template, ...] = tuple(_operation(*op) for op in OPERATIONS)


_VEC1 = "\\begin{pmatrix} <a> \\\\ <b> \\end{pmatrix}"
_VEC2 = "\\begin{pmatrix} <c> \\\\ <d> \\end{pmatrix}"

TEMPLATES: tuple[Template, ...] = (
    Template("Prealgebra", "order_of_operations",
             ("Compute $<a> + <b> \\times <c>$.", "What is the value of $<a> + <b> \\cdot <c>$?"),
             _order_sample, _order_solve),
    Template("Prealgebra", "percent",
             ("What is $<p>\\%$ of $<n>$?", "Find $<p>\\%$ of $<n>$."), _percent_sample, _percent_solve),
    Template("Prealgebra", "fraction_sum",
             ("Compute $\\frac{<a>}{<b>} + \\frac{<c>}{<d>}$. Express your answer as a common fraction.",
              "Find $\\frac{<a>}{<b>} + \\frac{<c>}{<d>}$ in lowest terms."), _fracsum_sample, _fracsum_solve),
    Template("Prealgebra", "mean",
             ("What is the average of $<a>$, $<b>$, and $<c>$?", "Find the mean of $<a>$, $<b>$, and $<c>$."),
             _mean_sample, _mean_solve),
    Template("Algebra", "linear_equation",
             ("Solve for $x$: $<a>x + <b> = <c>$.", "If $<a>x + <b> = <c>$, what is $x$?"), _linear_sample, _linear_solve),
    Template("Algebra", "evaluate_quadratic",
             ("If $f(x) = <a>x^2 + <b>x + <c>$, what is $f(<d>)$?", "Let $f(x) = <a>x^2 + <b>x + <c>$. Find $f(<d>)$."),
             _quad_sample, _quad_solve),
    Template("Algebra", "slope",
             ("What is the slope of the line through $(<x1>, <y1>)$ and $(<x2>, <y2>)$?",
              "Find the slope of the line passing through $(<x1>, <y1>)$ and $(<x2>, <y2>)$."), _slope_sample, _slope_solve),
    Template("Algebra", "linear_system",
             ("If $x + y = <s>$ and $x - y = <d>$, what is $x$?", "Find $x$ if $x + y = <s>$ and $x - y = <d>$."),
             _system_sample, _system_solve),
    Template("Number Theory", "remainder",
             ("What is the remainder when $<n>$ is divided by $<d>$?", "Find the remainder when $<n>$ is divided by $<d>$."),
             _remainder_sample, _remainder_solve),
    Template("Number Theory", "gcd",
             ("Find the greatest common divisor of $<a>$ and $<b>$.", "What is the greatest common divisor of $<a>$ and $<b>$?"),
             _gcd_sample, _gcd_solve),
    Template("Number Theory", "divisor_count",
             ("How many positive divisors does $<n>$ have?", "Find the number of positive divisors of $<n>$."),
             _divisors_sample, _divisors_solve),
    Template("Counting & Probability", "binomial",
             ("Compute $\\dbinom{<n>}{<k>}$.", "In how many ways can $<k>$ books be chosen from $<n>$ different books?"),
             _binom_sample, _binom_solve),
    Template("Counting & Probability", "officers",
             ("In how many ways can a president and a vice-president be chosen from a club of $<n>$ people?",
              "A club has $<n>$ members. In how many ways can it choose a president and a vice-president?"),
             _officers_sample, _officers_solve),
    Template("Counting & Probability", "line_up",
             ("In how many ways can $<n>$ people stand in a line?", "How many ways are there to arrange $<n>$ different books on a shelf?"),
             _line_sample, _line_solve),
    Template("Counting & Probability", "marbles",
             ("A bag has $<r>$ red marbles and $<b>$ blue marbles. One marble is drawn at random. What is the probability "
              "that it is red? Express your answer as a common fraction.",
              "A jar holds $<r>$ red and $<b>$ blue marbles. If one is picked at random, what is the probability that it is red?"),
             _marbles_sample, _marbles_solve),
    Template("Geometry", "rectangle_area",
             ("A rectangle has length $<a>$ and width $<b>$. What is its area?", "What is the area of a $<a>$ by $<b>$ rectangle?"),
             _side_sample, _area_solve),
    Template("Geometry", "rectangle_perimeter",
             ("A rectangle has length $<a>$ and width $<b>$. What is its perimeter?",
              "What is the perimeter of a $<a>$ by $<b>$ rectangle?"), _side_sample, _perimeter_solve),
    Template("Geometry", "triangle_area",
             ("A right triangle has legs of length $<a>$ and $<b>$. What is its area?",
              "What is the area of a right triangle with legs $<a>$ and $<b>$?"), _side_sample, _triangle_solve),
    Template("Geometry", "polygon_angles",
             ("What is the sum, in degrees, of the interior angles of a convex polygon with $<n>$ sides?",
              "Find the sum of the interior angles of a convex $<n>$-gon, in degrees."), _polygon_sample, _polygon_solve),
    Template("Geometry", "circle_area",
             ("A circle has radius $<r>$. What is its area? Express your answer in terms of $\\pi$.",
              "What is the area of a circle of radius $<r>$, in terms of $\\pi$?"), _circle_sample, _circle_solve),
    Template("Geometry", "hypotenuse",
             ("A right triangle has legs $<a>$ and $<b>$. How long is its hypotenuse?",
              "Find the hypotenuse of a right triangle with legs of length $<a>$ and $<b>$."), _hyp_sample, _hyp_solve),
    Template("Intermediate Algebra", "vieta_squares",
             ("Let $r$ and $s$ be the roots of $x^2 + <b>x + <c> = 0$. Compute $r^2 + s^2$.",
              "If $r$ and $s$ are the roots of $x^2 + <b>x + <c> = 0$, find $r^2 + s^2$."), _roots_sample, _roots_solve),
    Template("Intermediate Algebra", "remainder_theorem",
             ("Find the remainder when $x^3 + <a>x + <b>$ is divided by $x - <c>$.",
              "What is the remainder when $x^3 + <a>x + <b>$ is divided by $x - <c>$?"), _remthm_sample, _remthm_solve),
    Template("Intermediate Algebra", "absolute_value",
             ("Find all solutions to $|x - <a>| = <b>$. Enter the solutions, separated by commas.",
              "Solve $|x - <a>| = <b>$. Enter all solutions, separated by commas."), _abs_sample, _abs_solve),
    Template("Intermediate Algebra", "arithmetic_series",
             ("Compute the sum $<a> + <b> + <c> + \\dots + <l>$ of the arithmetic sequence.",
              "Find the sum of the arithmetic series $<a> + <b> + <c> + \\dots + <l>$."), _series_sample, _series_solve),
    Template("Precalculus", "dot_product",
             (f"Compute ${_VEC1} \\cdot {_VEC2}$.", f"Find the dot product of ${_VEC1}$ and ${_VEC2}$."), _vec_sample, _dot_solve),
    Template("Precalculus", "determinant",
             ("Compute $\\begin{vmatrix} <a> & <b> \\\\ <c> & <d> \\end{vmatrix}$.",
              "Find the determinant of $\\begin{pmatrix} <a> & <b> \\\\ <c> & <d> \\end{pmatrix}$."), _vec_sample, _det_solve),
    Template("Precalculus", "vector_sum",
             (f"Compute $<k> {_VEC1} + {_VEC2}$.", f"Find $<k> {_VEC1} + {_VEC2}$."), _vec_sample, _vsum_solve),
    Template("Precalculus", "degrees_to_radians",
             ("Convert $<d>^\\circ$ to radians.", "What is $<d>^\\circ$ in radians?"), _radians_sample, _radians_solve),
) + NAMED_OPERATIONS

BY_SUBJECT: dict[str, tuple[Template, ...]] = {s: tuple(t for t in TEMPLATES if t.subject == s) for s in SUBJECTS}

_SLOT = re.compile(r"<(\w+)>")


def render(wording: str, slots: Slots) -> str:
    return _SLOT.sub(lambda m: str(slots[m.group(1)]), wording)


def wording_regex(wording: str) -> re.Pattern[str]:
    """A regex that matches the wording with any integers in its slots."""
    out, seen, pos = [], set(), 0
    for m in _SLOT.finditer(wording):
        out.append(re.escape(wording[pos:m.start()]))
        name = m.group(1)
        out.append(f"(?P={name})" if name in seen else f"(?P<{name}>-?\\d+)")
        seen.add(name)
        pos = m.end()
    out.append(re.escape(wording[pos:]))
    return re.compile("".join(out))


_MATCHERS = tuple((t, wording_regex(w)) for t in TEMPLATES for w in t.wordings)


def match_template(problem: str) -> tuple[Template, Slots] | None:
    """(template, slot values) of a problem text in a MiniMath wording, else None."""
    text = problem.strip()
    for template, pattern in _MATCHERS:
        m = pattern.fullmatch(text)
        if m is not None:
            slots = {k: int(v) for k, v in m.groupdict().items()}
            return None if any(abs(v) > 10**6 for v in slots.values()) else (template, slots)
    return None


def solve_text(problem: str) -> tuple[Template, str, str] | None:
    """(template, worked solution, answer) for a problem text in a MiniMath wording, else None.

    This grades synthesised problems: the model may write any numbers into a wording, and the
    template's solver recomputes the true answer from them. Unsolvable values give None.
    """
    matched = match_template(problem)
    if matched is None:
        return None
    template, slots = matched
    try:
        steps, answer = template.solve(slots)
    except (ZeroDivisionError, ValueError):
        return None
    return template, steps, answer
