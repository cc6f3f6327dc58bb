"""Code interpreter: questions over generated CSV files, answered by running Python in the sandbox.

The database holds the data files; the `python` tool writes them into a fresh sandbox directory
and runs the agent's code there (stdlib only, no network, CPU/memory limits). Answers are exact
numbers; the verifier recomputes the value on the host with its own code,
independently of the solution's program, and compares (absolute tolerance 0.005, so rounding to
cents is accepted). Rows with missing units must be skipped at every level. Ladder: L1 a filtered
sum; L2 a computed column and a month filter; L3 a join with the product table (profit by
category); L4 the change of that profit between two months.
"""

from __future__ import annotations

import csv
import io
import json
import random

from dsv32.envs.categories.base import Category, Mutation, attends, check, need, parse_json_answer, rows
from dsv32.envs.tools import S, ToolCaller, ToolError, tool

REGIONS = ("north", "south", "east", "west", "central")
PRODUCTS = ("kettle", "lamp", "chair", "desk", "mug", "fan", "rug", "shelf", "clock", "vase")
CATEGORIES = ("kitchen", "furniture", "decor")


def _files(db) -> dict[str, str]:
    return {r["path"]: r["content"] for r in rows(db, "SELECT path, content FROM files ORDER BY path")}


@tool("list_files", "Data files available to the python tool, with their first lines.")
def list_files(ctx):
    return [{"path": p, "head": c.splitlines()[:3]} for p, c in _files(ctx.db).items()]


@tool(
    "python",
    "Run Python 3 code (stdlib only) in a sandbox whose working directory holds the data files; "
    "returns stdout and stderr.",
    code=S("the program"),
)
def python(ctx, code):
    result = ctx.sandbox.python(code, _files(ctx.db))
    if result.timed_out:
        raise ToolError("the program ran past the time limit")
    return {"stdout": result.stdout, "stderr": result.stderr[-2000:], "returncode": result.returncode}


def _sales(files: dict[str, str]) -> list[dict]:
    return list(csv.DictReader(io.StringIO(files["sales.csv"])))


def expected(files: dict[str, str], p: dict):
    """The exact answer, computed on the host (independently of `program`)."""
    cost = {
        r["product"]: (r["category"], float(r["cost"]))
        for r in csv.DictReader(io.StringIO(files["products.csv"]))
    }
    good = [r for r in _sales(files) if r["units"].strip()]
    units = lambda r: int(r["units"])  # noqa: E731
    if p["level"] == 1:
        return sum(units(r) for r in good if r["region"] == p["region"])
    if p["level"] == 2:
        return round(
            sum(
                units(r) * float(r["price"])
                for r in good
                if r["product"] == p["product"] and r["date"][:7] == p["month"]
            ),
            2,
        )
    profit = lambda r: units(r) * (float(r["price"]) - cost[r["product"]][1])  # noqa: E731
    if p["level"] == 3:
        return round(
            sum(
                profit(r)
                for r in good
                if r["region"] == p["region"] and cost[r["product"]][0] == p["category"]
            ),
            2,
        )

    def total(m):
        mine = (r for r in good if r["region"] == p["region"] and cost[r["product"]][0] == p["category"])
        return sum(profit(r) for r in mine if r["date"][:7] == m)

    return round(total(p["m2"]) - total(p["m1"]), 2)


def program(p: dict, att: set[str]) -> str:
    """Python source that answers the question, honouring only the constraints in `att`
    (a forgotten constraint gives a wrong answer or, for missing values, a crash)."""
    lines = [
        "import csv",
        "rows = list(csv.DictReader(open('sales.csv')))",
        "cost = {r['product']: (r['category'], float(r['cost'])) for r in csv.DictReader(open('products.csv'))}",  # noqa: E501
    ]
    if "skip_missing" in att:
        lines.append("rows = [r for r in rows if r['units'].strip()]")
    revenue = "int(r['units']) * float(r['price'])"
    profit = "int(r['units']) * (float(r['price']) - cost[r['product']][1])" if "profit" in att else revenue
    region = f"r['region'] == {p.get('region')!r}" if "filter" in att else "True"
    category = f"cost[r['product']][0] == {p.get('category')!r}" if "join" in att else "True"
    if p["level"] == 1:
        lines.append(f"print(sum(int(r['units']) for r in rows if {region}))")
    elif p["level"] == 2:
        month = f"r['date'][:7] == {p['month']!r}" if "month" in att else "True"
        value = revenue if "revenue" in att else "int(r['units'])"
        lines.append(
            f"print(round(sum({value} for r in rows if r['product'] == {p['product']!r} and {month}), 2))"
        )
    elif p["level"] == 3:
        lines.append(f"print(round(sum({profit} for r in rows if {region} and {category}), 2))")
    else:
        lines.append(
            f"def total(m):\n    return sum({profit} for r in rows if {region} and r['date'][:7] == m and {category})"  # noqa: E501
        )
        value = f"total({p['m2']!r}) - total({p['m1']!r})" if "growth" in att else f"total({p['m2']!r})"
        lines.append(f"print(round({value}, 2))")
    return "\n".join(lines) + "\n"


class CodeInterpreter(Category):
    name = "code_interpreter"
    summary = "data-analysis (Python tool)"
    max_level = 4
    uses_sandbox = True
    base_tools = ("list_files", "python")
    answer_format = 'JSON {"answer": number or string} with the exact value (money rounded to 2 decimals)'

    def __init__(self):
        from dsv32.envs.tools import SandboxRunner

        self.runner = SandboxRunner()

    def library(self):
        return [list_files, python]

    def build_database(self, db, rng):
        db.execute("CREATE TABLE files(path TEXT PRIMARY KEY, content TEXT)")
        products = rng.sample(PRODUCTS, rng.randint(5, 8))
        prod = io.StringIO()
        w = csv.writer(prod, lineterminator="\n")
        w.writerow(["product", "category", "cost"])
        prices = {}
        for name in products:
            prices[name] = rng.randrange(800, 9000) / 100
            w.writerow([name, rng.choice(CATEGORIES), f"{prices[name] * rng.uniform(0.4, 0.8):.2f}"])
        sales = io.StringIO()
        w = csv.writer(sales, lineterminator="\n")
        w.writerow(["date", "region", "product", "units", "price"])
        regions = rng.sample(REGIONS, rng.randint(3, 5))
        for _ in range(rng.randint(60, 120)):
            month, name = rng.choice(["2024-01", "2024-02", "2024-03"]), rng.choice(products)
            units = "" if rng.random() < 0.06 else str(rng.randint(1, 20))
            w.writerow(
                [
                    f"{month}-{rng.randint(1, 28):02d}",
                    rng.choice(regions),
                    name,
                    units,
                    f"{prices[name] * rng.uniform(0.9, 1.1):.2f}",
                ]
            )
        db.executemany(
            "INSERT INTO files VALUES (?,?)",
            [("products.csv", prod.getvalue()), ("sales.csv", sales.getvalue())],
        )
        return f"sales.csv and products.csv: {len(products)} products in {len(regions)} regions"

    def initial_task(self, db, rng):
        files = _files(db)
        region = rng.choice(sorted({r["region"] for r in _sales(files)}))
        return {"level": 1, "region": region, "constraints": ["answer_value", "skip_missing", "filter"]}

    def harden(self, db, p, rng):
        files, level = _files(db), p["level"] + 1
        sales = _sales(files)
        if level == 2:
            return dict(
                p,
                level=2,
                product=rng.choice(sorted({r["product"] for r in sales})),
                month=rng.choice(["2024-01", "2024-02", "2024-03"]),
                constraints=p["constraints"] + ["month", "revenue"],
            )
        if level == 3:
            return dict(
                p,
                level=3,
                category=rng.choice(
                    sorted({r["category"] for r in csv.DictReader(io.StringIO(files["products.csv"]))})
                ),
                constraints=p["constraints"] + ["join", "profit"],
            )
        if level == 4:
            return dict(
                p,
                level=4,
                m1="2024-01",
                m2=rng.choice(["2024-02", "2024-03"]),
                constraints=p["constraints"] + ["growth"],
            )
        return None

    def instruction(self, p):
        q = {
            1: f"How many units were sold in the {p.get('region')} region in total?",
            2: f"What was the revenue (units x price, summed over sales) of {p.get('product')} in {p.get('month')}?",  # noqa: E501
            3: f"What was the total profit ((price - product cost) x units) of {p.get('category')} products in the {p.get('region')} region? Product categories and costs are in products.csv.",  # noqa: E501
            4: f"By how much did the profit of {p.get('category')} products in the {p.get('region')} region change from {p.get('m1')} to {p.get('m2')} (later minus earlier)?",  # noqa: E501
        }[p["level"]]
        return f"Use the python tool on the data files (sales.csv, products.csv). {q} Skip rows with missing units."  # noqa: E501

    def solve(self, call: ToolCaller, p):
        call.note("I look at the available files and their columns first.")
        call("list_files")
        code = program(p, set(p["constraints"]))
        call.note("I compute the answer exactly with a short program over the CSV rows.")
        out = call("python", code=code)
        if out["returncode"] != 0:
            return None
        text = out["stdout"].strip()
        return {"answer": json.loads(text)}

    def verify(self, initial, final, p, answer):
        value = need(parse_json_answer(answer), "answer", (int, float))
        want, checks = expected(_files(initial), p), []
        check(checks, "answer_value", abs(value - want) <= 0.005, f"{value!r} is not the correct value")
        return checks

    def mutations(self, initial, p, answer, rng):
        want = expected(_files(initial), p)
        wrong = [want + 1, want - 1, want + 0.02, want - 0.02, want + 100]
        out = [Mutation("answer_value", {"answer": w}) for w in wrong]
        return out + [
            Mutation("answer_format", {"answer": str(want) + "?"}),
            Mutation("answer_format", {"value": want}),
        ]

    def baseline(self, call: ToolCaller, p, rng: random.Random):
        att = attends(rng, p)
        out = call("python", code=program(p, att))
        text = out["stdout"].strip()
        if out["returncode"] != 0 or not text:
            return None
        try:
            return {"answer": json.loads(text)}
        except json.JSONDecodeError:
            return None
