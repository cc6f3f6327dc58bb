"""Personal budgeting: a next-month budget from past transactions.

The answer allocates the month's income over spending categories plus savings. Ladder: L1 the
allocation covers every category, is non-negative and sums exactly to the income; L2 each
category gets at least 90% of what was spent on it last month; L3 savings meet the household's
rule (adds `get_budget_rules`) and discretionary categories get at most last month's spend; L4
recurring subscriptions (a merchant charged in each of the last three months) are fully covered.
"""

from __future__ import annotations

import random

from dsv32.envs.categories.base import (
    Category,
    Check,
    Mutation,
    attends,
    check,
    need,
    parse_json_answer,
    rows,
)
from dsv32.envs.tools import I, S, ToolCaller, ToolError, tool

CATEGORIES = {
    "groceries": 0,
    "rent": 0,
    "transport": 0,
    "dining": 1,
    "entertainment": 1,
    "utilities": 0,
    "shopping": 1,
}
MERCHANTS = {
    "groceries": ["FreshMart", "GreenGrocer"],
    "rent": ["Landlord"],
    "transport": ["Metro", "DiDi"],
    "dining": ["Noodle Bar", "Cafe Lu"],
    "entertainment": ["StreamFlix", "CinemaOne", "MusicBox"],
    "utilities": ["PowerGrid", "WaterCo"],
    "shopping": ["ShopNow", "BookNook"],
}


@tool(
    "list_transactions",
    "Transactions of a month (1-3), optionally one category: day, merchant, category, amount.",
    month=I("month 1, 2 or 3"),
    category=S("category", optional=True),
)
def list_transactions(ctx, month, category=None):
    if month not in (1, 2, 3):
        raise ToolError("month must be 1, 2 or 3")
    sql = "SELECT day, merchant, category, amount FROM transactions WHERE month=? AND (? IS NULL OR category=?) ORDER BY day, merchant"  # noqa: E501
    return rows(ctx.db, sql, (month, category, category))


@tool("get_income", "Income expected for next month (month 4).")
def get_income(ctx):
    return rows(ctx.db, "SELECT amount FROM income")[0]


@tool("list_categories", "Spending categories and whether each is discretionary.")
def list_categories(ctx):
    return rows(ctx.db, "SELECT name, discretionary FROM categories ORDER BY name")


@tool("get_budget_rules", "The household's minimum savings rate (fraction of income).")
def get_budget_rules(ctx):
    return rows(ctx.db, "SELECT savings_rate FROM rules")[0]


def spent(db, month: int) -> dict[str, float]:
    return {
        r["category"]: round(r["s"], 2)
        for r in rows(
            db,
            "SELECT category, SUM(amount) AS s FROM transactions WHERE month=? GROUP BY category",
            (month,),
        )
    }


def subscriptions(db) -> dict[str, float]:
    """Category -> total monthly charge of merchants charged in each of months 1-3 (their month-3 amounts)."""
    subs = rows(
        db,
        "SELECT merchant, category FROM transactions WHERE category='entertainment' GROUP BY merchant HAVING COUNT(DISTINCT month) = 3",  # noqa: E501
    )
    out: dict[str, float] = {}
    for s in subs:
        amt = rows(
            db, "SELECT SUM(amount) AS a FROM transactions WHERE merchant=? AND month=3", (s["merchant"],)
        )[0]["a"]
        out[s["category"]] = round(out.get(s["category"], 0) + amt, 2)
    return out


class Budgeting(Category):
    name = "budgeting"
    summary = "personal-finance"
    max_level = 4
    base_tools = ("list_transactions", "get_income", "list_categories")
    answer_format = 'JSON {"allocations": {category: amount, ...}, "savings": amount} in currency units'

    def library(self):
        return [list_transactions, get_income, list_categories, get_budget_rules]

    def build_database(self, db, rng):
        db.executescript("""
            CREATE TABLE transactions(month INT, day INT, merchant TEXT, category TEXT, amount REAL);
            CREATE TABLE income(amount REAL);
            CREATE TABLE categories(name TEXT PRIMARY KEY, discretionary INT);
            CREATE TABLE rules(savings_rate REAL);""")
        db.executemany("INSERT INTO categories VALUES (?,?)", sorted(CATEGORIES.items()))
        rent = rng.randrange(2500, 5000, 100)
        for month in (1, 2, 3):
            db.execute("INSERT INTO transactions VALUES (?,?,?,?,?)", (month, 1, "Landlord", "rent", rent))
            for cat, merchants in MERCHANTS.items():
                if cat == "rent":
                    continue
                for _ in range(rng.randint(1, 5)):
                    db.execute(
                        "INSERT INTO transactions VALUES (?,?,?,?,?)",
                        (
                            month,
                            rng.randint(1, 28),
                            rng.choice(merchants),
                            cat,
                            rng.randrange(1000, 40000) / 100,
                        ),
                    )
            db.execute(
                "INSERT INTO transactions VALUES (?,?,?,?,?)", (month, 5, "StreamFlix", "entertainment", 45.0)
            )
        total = sum(spent(db, 3).values())
        db.execute("INSERT INTO income VALUES (?)", (round(total * rng.uniform(1.35, 1.6), 2),))
        db.execute("INSERT INTO rules VALUES (?)", (rng.choice([0.1, 0.15, 0.2]),))
        return "three months of transactions, next month's income and a savings rule"

    def initial_task(self, db, rng):
        return {"level": 1, "constraints": ["all_categories", "non_negative", "sums_to_income"]}

    def harden(self, db, p, rng):
        add = {1: ["floors"], 2: ["savings", "caps"], 3: ["subscriptions"]}.get(p["level"])
        return dict(p, level=p["level"] + 1, constraints=p["constraints"] + add) if add else None

    def instruction(self, p):
        c = set(p["constraints"])
        text = [
            "Plan next month's budget: split the expected income over every spending category plus savings, with no negative amounts, summing exactly to the income (to the cent)."  # noqa: E501
        ]
        if "floors" in c:
            text.append("Give each category at least 90% of what was spent on it in month 3.")
        if "savings" in c:
            text.append(
                "Save at least the household's minimum savings rate, and give discretionary categories no more than their month-3 spend."  # noqa: E501
            )
        if "subscriptions" in c:
            text.append(
                "Entertainment must fully cover recurring subscriptions (merchants charged in each of months 1-3) plus 90% of its other month-3 spend."  # noqa: E501
            )
        return " ".join(text)

    def _floors(self, last, c, subs):
        floors = {k: round(0.9 * v, 2) if "floors" in c else 0.0 for k, v in last.items()}
        if "subscriptions" in c:
            for k, v in subs.items():
                floors[k] = round(max(floors[k], v + 0.9 * (last[k] - v)), 2)
        return floors

    def solve(self, call: ToolCaller, p):
        c = set(p["constraints"])
        call.note(
            "I sum month-3 spending per category, set each category's floor, then put the remainder into savings."  # noqa: E501
        )
        cats = [r["name"] for r in call("list_categories")]
        tx = call("list_transactions", month=3)
        last = {k: round(sum(t["amount"] for t in tx if t["category"] == k), 2) for k in cats}
        subs = {}
        if "subscriptions" in c:
            months = [call("list_transactions", month=m, category="entertainment") for m in (1, 2, 3)]
            recurring = set.intersection(*({t["merchant"] for t in m} for m in months))
            subs["entertainment"] = round(
                sum(t["amount"] for t in months[2] if t["merchant"] in recurring), 2
            )
        income = call("get_income")["amount"]
        alloc = self._floors(last, c, subs)
        savings = round(income - sum(alloc.values()), 2)
        if "savings" in c and savings < call("get_budget_rules")["savings_rate"] * income:
            return None
        return {"allocations": alloc, "savings": savings} if savings >= 0 else None

    def verify(self, initial, final, p, answer):
        answer = parse_json_answer(answer)
        alloc, savings = need(answer, "allocations", dict), need(answer, "savings", (int, float))
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in alloc.values()):
            return [Check("non_negative", False, "allocations must be numbers")]
        c, checks = set(p["constraints"]), []
        cats = [r["name"] for r in rows(initial, "SELECT name FROM categories")]
        income = rows(initial, "SELECT amount FROM income")[0]["amount"]
        last = spent(initial, 3)
        check(
            checks,
            "all_categories",
            sorted(alloc) == sorted(cats),
            f"allocate exactly the categories {sorted(cats)}",
        )
        check(checks, "non_negative", savings >= 0 and all(v >= 0 for v in alloc.values()), "negative amount")
        check(
            checks,
            "sums_to_income",
            abs(sum(alloc.values()) + savings - income) < 0.01,
            f"total {round(sum(alloc.values()) + savings, 2)} != income {income}",
        )
        floors = self._floors({k: last.get(k, 0.0) for k in cats}, c, subscriptions(initial))
        if "floors" in c:
            low = [k for k in cats if alloc.get(k, 0) < round(0.9 * last.get(k, 0.0), 2) - 0.005]
            check(checks, "floors", not low, f"below 90% of month-3 spend: {low}")
        if "savings" in c:
            rate = rows(initial, "SELECT savings_rate FROM rules")[0]["savings_rate"]
            check(checks, "savings", savings >= rate * income - 0.005, f"savings below {rate:.0%} of income")
            disc = [r["name"] for r in rows(initial, "SELECT name FROM categories WHERE discretionary=1")]
            over = [k for k in disc if alloc.get(k, 0) > last.get(k, 0.0) + 0.005]
            check(checks, "caps", not over, f"discretionary categories above month-3 spend: {over}")
        if "subscriptions" in c:
            check(
                checks,
                "subscriptions",
                alloc.get("entertainment", 0) >= floors["entertainment"] - 0.005,
                "subscriptions not covered",
            )
        return checks

    def mutations(self, initial, p, answer, rng):
        alloc, sav, c = answer["allocations"], answer["savings"], set(p["constraints"])
        last = spent(initial, 3)
        out = []

        def edit(breaks, **changes):
            new = dict(alloc)
            for k, v in changes.items():
                if v is None:
                    new.pop(k)
                else:
                    new[k] = v
            return Mutation(
                breaks,
                {"allocations": new, "savings": round(sav - sum(new.values()) + sum(alloc.values()), 2)},
            )

        out.append(edit("all_categories", shopping=None))
        out.append(edit("all_categories", pets=0.0))
        out.append(Mutation("sums_to_income", {"allocations": alloc, "savings": round(sav + 10, 2)}))
        out.append(Mutation("sums_to_income", {"allocations": alloc, "savings": round(sav - 0.05, 2)}))
        out.append(
            Mutation(
                "non_negative",
                {
                    "allocations": dict(alloc, transport=-5.0),
                    "savings": round(sav + 5 + alloc["transport"], 2),
                },
            )
        )
        if "floors" in c:
            out.append(edit("floors", groceries=round(0.5 * last["groceries"], 2)))
        if "caps" in c:
            out.append(edit("caps", dining=round(last["dining"] + 50, 2)))
        if "savings" in c:
            out.append(
                Mutation(
                    "savings",
                    {"allocations": dict(alloc, rent=round(alloc["rent"] + sav - 1, 2)), "savings": 1.0},
                )
            )
        if "subscriptions" in c:
            subs = subscriptions(initial)["entertainment"]
            out.append(
                edit(
                    "subscriptions",
                    entertainment=round(
                        max(0.9 * last["entertainment"], 0.9 * (last["entertainment"] - subs) + 0.5 * subs), 2
                    ),
                )
            )
        return out

    def baseline(self, call: ToolCaller, p, rng: random.Random):
        att = attends(rng, p) & set(p["constraints"])
        cats = [r["name"] for r in call("list_categories")]
        tx = call("list_transactions", month=3)
        last = {k: round(sum(t["amount"] for t in tx if t["category"] == k), 2) for k in cats}
        # a rough guess: last month's spend (the floors rule) or an even split, rounded to whole units
        income = call("get_income")["amount"]
        if "floors" in att or "caps" in att:
            alloc = {k: float(round(v * rng.choice([0.9, 0.95, 1.0]))) for k, v in last.items()}
        else:
            alloc = {k: round(income * 0.8 / len(cats), 2) for k in cats}
        if "subscriptions" in att:
            alloc["entertainment"] = last["entertainment"]
        savings = (
            round(income - sum(alloc.values()), 2) if "sums_to_income" in att else round(income * 0.2, 2)
        )
        return {"allocations": alloc, "savings": savings}
