# ruff: noqa: E501 - templates and generated source are data; their lines stay whole
"""Small correct Python functions with unit tests, the raw material of the code-agent category.

Each template is (name, source, tests): `source` defines `{f}` (renamed per environment) and may
call a helper `{h}` from another module; `tests` are unittest assertion lines using `{f}`.
`BUG_RULES` are single-token edits that turn a correct line into a plausible bug (the reverse
edit is the fix the solution makes).
"""

from __future__ import annotations

HELPERS = {
    "clamp": (
        "def {h}(x, lo, hi):\n    if x < lo:\n        return lo\n    if x > hi:\n        return hi\n    return x\n"
    ),
    "safe_div": ("def {h}(a, b):\n    if b == 0:\n        return 0\n    return a / b\n"),
    "last_index": ("def {h}(items):\n    return len(items) - 1\n"),
    "total": ("def {h}(values):\n    acc = 0\n    for v in values:\n        acc = acc + v\n    return acc\n"),
}

TEMPLATES = [
    (
        "window_sums",
        "def {f}(xs, k):\n    out = []\n    for i in range(len(xs) - k + 1):\n        out.append({h_total}(xs[i:i + k]))\n    return out\n",
        [
            "self.assertEqual({f}([1, 2, 3, 4], 2), [3, 5, 7])",
            "self.assertEqual({f}([5], 1), [5])",
            "self.assertEqual({f}([1, 1, 1], 3), [3])",
        ],
    ),
    (
        "bounded_scores",
        "def {f}(scores, cap):\n    return [{h_clamp}(s, 0, cap) for s in scores]\n",
        ["self.assertEqual({f}([-3, 5, 12], 10), [0, 5, 10])", "self.assertEqual({f}([10, 0], 10), [10, 0])"],
    ),
    (
        "mean_or_zero",
        "def {f}(values):\n    return {h_safe_div}({h_total}(values), len(values))\n",
        ["self.assertEqual({f}([2, 4, 6]), 4)", "self.assertEqual({f}([]), 0)"],
    ),
    (
        "count_vowels",
        "def {f}(text):\n    n = 0\n    for ch in text.lower():\n        if ch in 'aeiou':\n            n = n + 1\n    return n\n",
        ["self.assertEqual({f}('Environment'), 4)", "self.assertEqual({f}('xyz'), 0)"],
    ),
    (
        "running_max",
        "def {f}(xs):\n    out, best = [], None\n    for x in xs:\n        if best is None or x > best:\n            best = x\n        out.append(best)\n    return out\n",
        ["self.assertEqual({f}([3, 1, 4, 1, 5]), [3, 3, 4, 4, 5])", "self.assertEqual({f}([2, 2]), [2, 2])"],
    ),
    (
        "chunked",
        "def {f}(xs, n):\n    return [xs[i:i + n] for i in range(0, len(xs), n)]\n",
        [
            "self.assertEqual({f}([1, 2, 3, 4, 5], 2), [[1, 2], [3, 4], [5]])",
            "self.assertEqual({f}([], 3), [])",
        ],
    ),
    (
        "dedupe",
        "def {f}(items):\n    seen, out = set(), []\n    for item in items:\n        if item not in seen:\n            seen.add(item)\n            out.append(item)\n    return out\n",
        ["self.assertEqual({f}([3, 1, 3, 2, 1]), [3, 1, 2])", "self.assertEqual({f}([]), [])"],
    ),
    (
        "last_item",
        "def {f}(items):\n    if not items:\n        return None\n    return items[{h_last_index}(items)]\n",
        ["self.assertEqual({f}([4, 5, 6]), 6)", "self.assertIsNone({f}([]))"],
    ),
    (
        "is_palindrome",
        "def {f}(text):\n    s = ''.join(ch for ch in text.lower() if ch.isalnum())\n    return s == s[::-1]\n",
        ["self.assertTrue({f}('Never odd or even'))", "self.assertFalse({f}('abca'))"],
    ),
    (
        "fizz",
        "def {f}(n):\n    if n % 15 == 0:\n        return 'FizzBuzz'\n    if n % 3 == 0:\n        return 'Fizz'\n    if n % 5 == 0:\n        return 'Buzz'\n    return str(n)\n",
        [
            "self.assertEqual({f}(9), 'Fizz')",
            "self.assertEqual({f}(10), 'Buzz')",
            "self.assertEqual({f}(30), 'FizzBuzz')",
            "self.assertEqual({f}(7), '7')",
        ],
    ),
]

# (find, replace): applying one to a line injects a bug; the reverse edit fixes it
BUG_RULES = [
    (" < ", " <= "),
    (" > ", " >= "),
    (" + 1", " + 2"),
    (" - 1", " - 2"),
    (" - k + 1", " - k"),
    ("== 0", "== 1"),
    (" + v", " - v"),
    ("'aeiou'", "'aeio'"),
    ("return lo", "return hi"),
    ("[::-1]", "[::1]"),
    ("% 15", "% 5"),
    ("not in seen", "in seen"),
    ("i + n]", "i + n - 1]"),
    ("x > best", "x < best"),
    ("return 0\n", "return 1\n"),
    ("acc = 0", "acc = 1"),
]

NAME_PARTS = ("calc", "compute", "get", "make", "util", "core", "tools", "ops", "lib", "misc")
