"""Tables from the synthesis records: tasks kept per category and level, and the difficulty
evidence (the reference agent's pass rate per level over all solvable candidates, before the
pass@k filter, and over the kept tasks)."""

from __future__ import annotations

from collections import defaultdict


def _table(header: list[str], body: list[list]) -> str:
    cells = [header] + [[str(x) for x in row] for row in body]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join(
        [line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, cells[1:])]
    )


def category_level_table(records: list[dict]) -> str:
    """Rows: categories; columns: environments, kept tasks per level, total, candidates."""
    levels = sorted({r["level"] for r in records})
    kept: dict = defaultdict(lambda: defaultdict(int))
    envs, cands = defaultdict(set), defaultdict(int)
    for r in records:
        envs[r["category"]].add(r["env_id"])
        cands[r["category"]] += 1
        kept[r["category"]][r["level"]] += int(r["kept"])
    body = []
    for cat in sorted(envs):
        per = [kept[cat][lv] for lv in levels]
        body.append([cat, len(envs[cat]), *per, sum(per), cands[cat]])
    totals = [sum(kept[c][lv] for c in envs) for lv in levels]
    body.append(["total", sum(len(v) for v in envs.values()), *totals, sum(totals), sum(cands.values())])
    return _table(["category", "envs", *[f"L{lv} kept" for lv in levels], "tasks", "candidates"], body)


def difficulty_rows(records: list[dict]) -> list[dict]:
    by_level: dict = defaultdict(
        lambda: {"cands": 0, "solvable": 0, "att": 0, "succ": 0, "kept": 0, "katt": 0, "ksucc": 0}
    )
    for r in records:
        row = by_level[r["level"]]
        row["cands"] += 1
        if r["attempts"]:
            row["solvable"] += 1
            row["att"] += r["attempts"]
            row["succ"] += r["successes"]
        if r["kept"]:
            row["kept"] += 1
            row["katt"] += r["attempts"]
            row["ksucc"] += r["successes"]
    out = []
    for level in sorted(by_level):
        row = by_level[level]
        out.append(
            {
                "level": level,
                "candidates": row["cands"],
                "gated": row["solvable"],
                "kept": row["kept"],
                "pass_rate": row["succ"] / row["att"] if row["att"] else 0.0,
                "pass_rate_kept": row["ksucc"] / row["katt"] if row["katt"] else 0.0,
            }
        )
    return out


def difficulty_table(records: list[dict]) -> str:
    body = [
        [
            r["level"],
            r["candidates"],
            r["gated"],
            r["kept"],
            f"{r['pass_rate']:.3f}",
            f"{r['pass_rate_kept']:.3f}",
        ]
        for r in difficulty_rows(records)
    ]
    header = ["level", "candidates", "reached pass@k gate", "kept", "baseline pass rate", "pass rate (kept)"]
    return _table(header, body)
