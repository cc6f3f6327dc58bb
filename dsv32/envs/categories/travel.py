"""Travel planning (SPEC §6): a multi-day trip from a start city, one city per day, with a hotel,
restaurants and attractions in that city; no city, hotel, restaurant or attraction repeated;
consecutive cities joined by a direct route; per-day meal and attraction budgets set by the
hotel's price tier; attractions open on the day they are visited; hotel rating and total budget.

Ladder: L1 two days, one meal and one attraction a day; L2 three days, no repeats, routes;
L3 two meals a day and tier budgets (adds `get_budget_policy`); L4 four days, opening days
(adds `get_attraction_schedule`) and a minimum hotel rating; L5 five days, two attractions a day,
a total hotel budget and no cuisine twice in a day. The solution is a depth-first search over
cities and hotels that picks the cheapest feasible restaurants and attractions per day.
"""

from __future__ import annotations

import random
import sqlite3

from dsv32.envs.categories.base import (
    Category,
    Mutation,
    attends,
    check,
    need,
    parse_json_answer,
    rows,
    str_list,
)
from dsv32.envs.tools import I, N, S, Tool, ToolCaller, ToolError, tool

CITIES = (
    "Hangzhou Suzhou Nanjing Shanghai Ningbo Wuxi Shaoxing Huangshan Xiamen Fuzhou Qingdao Jinan "
    "Xian Chengdu Chongqing Guilin Kunming Lijiang Dali Changsha Wuhan Nanchang Hefei Tianjin "
    "Beijing Datong Luoyang Kaifeng Zhengzhou Harbin Dalian Shenyang Guangzhou Shenzhen Zhuhai"
).split()
CUISINES = ("Zhejiang", "Sichuan", "Cantonese", "Hunan", "noodles", "dumplings", "seafood", "vegetarian")
KINDS = ("museum", "temple", "garden", "park", "old town", "tower", "lake", "gallery")
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
WORDS = ("Jade", "Lotus", "Golden", "Willow", "Pearl", "Bamboo", "Crane", "Cloud", "Plum", "Silk", "Orchid")


@tool("list_cities", "List all cities with their region.")
def list_cities(ctx):
    return rows(ctx.db, "SELECT name, region FROM cities ORDER BY name")


@tool("get_routes", "Cities reachable by a direct train from a city, with travel hours.", city=S("city name"))
def get_routes(ctx, city):
    return rows(ctx.db, "SELECT city_b AS city, hours FROM routes WHERE city_a=? ORDER BY city_b", (city,))


@tool(
    "search_hotels",
    "Hotels in a city: name, price tier (1 budget, 2 mid-range, 3 luxury), nightly price, rating.",
    city=S("city name"),
    min_rating=N("only hotels rated at least this", optional=True),
)
def search_hotels(ctx, city, min_rating=0.0):
    sql = "SELECT name, tier, price, rating FROM hotels WHERE city=? AND rating>=? ORDER BY price"
    return rows(ctx.db, sql, (city, min_rating))


@tool(
    "search_restaurants",
    "Restaurants in a city: name, cuisine, cost per meal, rating.",
    city=S("city name"),
    cuisine=S("only this cuisine", optional=True),
)
def search_restaurants(ctx, city, cuisine=None):
    sql = "SELECT name, cuisine, cost, rating FROM restaurants WHERE city=? AND (? IS NULL OR cuisine=?)"
    return rows(ctx.db, sql + " ORDER BY cost, name", (city, cuisine, cuisine))


@tool("search_attractions", "Attractions in a city: name, kind, ticket price.", city=S("city name"))
def search_attractions(ctx, city):
    return rows(
        ctx.db, "SELECT name, kind, ticket FROM attractions WHERE city=? ORDER BY ticket, name", (city,)
    )


@tool("get_budget_policy", "Daily meal and attraction budgets for a hotel price tier.", tier=I("1, 2 or 3"))
def get_budget_policy(ctx, tier):
    found = rows(
        ctx.db, "SELECT tier, meal_budget, attraction_budget FROM budget_policy WHERE tier=?", (tier,)
    )
    if not found:
        raise ToolError(f"no budget policy for tier {tier}; tiers are 1, 2, 3")
    return found[0]


@tool("get_attraction_schedule", "The weekday an attraction is closed (or 'never').", name=S("attraction"))
def get_attraction_schedule(ctx, name):
    found = rows(ctx.db, "SELECT closed_weekday FROM attractions WHERE name=?", (name,))
    if not found:
        raise ToolError(f"no attraction named {name!r}")
    day = found[0]["closed_weekday"]
    return {"name": name, "closed_on": WEEKDAYS[day] if day >= 0 else "never"}


LADDER = (
    {
        "n_days": 2,
        "meals": 1,
        "sights": 1,
        "add": ["day_count", "start_city", "hotel", "restaurants", "attractions"],
    },
    {"n_days": 3, "add": ["no_repeat", "routes"]},
    {"meals": 2, "add": ["meal_budget", "attraction_budget"]},
    {"n_days": 4, "add": ["open_days", "min_rating"]},
    {"n_days": 5, "sights": 2, "add": ["hotel_total", "cuisine_variety"]},
)


class Travel(Category):
    name = "travel"
    summary = "travel-planning"
    max_level = 5
    base_tools = ("list_cities", "get_routes", "search_hotels", "search_restaurants", "search_attractions")
    answer_format = (
        'JSON {"days": [{"city": str, "hotel": str, "restaurants": [str], "attractions": [str]}, ...]} '
        "with one entry per day, in order"
    )

    def library(self) -> list[Tool]:
        return [
            list_cities,
            get_routes,
            search_hotels,
            search_restaurants,
            search_attractions,
            get_budget_policy,
            get_attraction_schedule,
        ]

    def build_database(self, db: sqlite3.Connection, rng: random.Random) -> str:
        db.executescript("""
            CREATE TABLE cities(name TEXT PRIMARY KEY, region TEXT);
            CREATE TABLE routes(city_a TEXT, city_b TEXT, hours REAL, PRIMARY KEY(city_a, city_b));
            CREATE TABLE hotels(name TEXT PRIMARY KEY, city TEXT, tier INT, price INT, rating REAL);
            CREATE TABLE restaurants(name TEXT PRIMARY KEY, city TEXT, cuisine TEXT, cost INT, rating REAL);
            CREATE TABLE attractions(name TEXT PRIMARY KEY, city TEXT, kind TEXT, ticket INT,
                                     closed_weekday INT);
            CREATE TABLE budget_policy(tier INT PRIMARY KEY, meal_budget INT, attraction_budget INT);
        """)
        cities = rng.sample(CITIES, rng.randint(8, 11))
        db.executemany(
            "INSERT INTO cities VALUES (?,?)",
            [(c, rng.choice(["east", "south", "north", "west"])) for c in cities],
        )
        edges = {tuple(sorted((cities[i], cities[(i + 1) % len(cities)]))) for i in range(len(cities))}
        while len(edges) < int(len(cities) * 1.8):
            edges.add(tuple(sorted(rng.sample(cities, 2))))
        for a, b in sorted(edges):
            hours = round(rng.uniform(0.5, 6), 1)
            db.executemany("INSERT INTO routes VALUES (?,?,?)", [(a, b, hours), (b, a, hours)])
        scale = rng.uniform(0.85, 1.15)
        budgets = [
            (1, int(60 * scale), int(40 * scale)),
            (2, int(95 * scale), int(75 * scale)),
            (3, int(150 * scale), int(130 * scale)),
        ]
        db.executemany("INSERT INTO budget_policy VALUES (?,?,?)", budgets)
        for city in cities:
            words = rng.sample(WORDS, 8)
            for i, tier in enumerate(sorted(rng.choices([1, 2, 3], k=rng.randint(3, 4)))):
                price = rng.randint(150, 320) * tier
                db.execute(
                    "INSERT INTO hotels VALUES (?,?,?,?,?)",
                    (f"{words[i]} {city} Hotel", city, tier, price, round(rng.uniform(3.0, 5.0), 1)),
                )
            for i in range(rng.randint(5, 7)):
                cuisine = rng.choice(CUISINES)
                name = (
                    f"{words[i]} {cuisine.title()} House of {city}"
                    if i % 2
                    else f"{city} {words[i]} {cuisine.title()} Kitchen"
                )
                db.execute(
                    "INSERT OR IGNORE INTO restaurants VALUES (?,?,?,?,?)",
                    (name, city, cuisine, rng.randint(12, 75), round(rng.uniform(3.0, 5.0), 1)),
                )
            for kind in rng.sample(KINDS, rng.randint(4, 6)):
                closed = rng.choice([-1, -1, 0, 1, 2, 3, 4, 5, 6])
                db.execute(
                    "INSERT INTO attractions VALUES (?,?,?,?,?)",
                    (
                        f"{city} {rng.choice(WORDS)} {kind.title()}",
                        city,
                        kind,
                        rng.choice([0, 10, 20, 30, 45, 60, 80]),
                        closed,
                    ),
                )
        return f"{len(cities)} cities with hotels, restaurants, attractions and train routes"

    def initial_task(self, db, rng):
        start = rng.choice([r["name"] for r in rows(db, "SELECT name FROM cities ORDER BY name")])
        step = LADDER[0]
        return {
            "level": 1,
            "start": start,
            "n_days": step["n_days"],
            "meals": step["meals"],
            "sights": step["sights"],
            "start_weekday": rng.randrange(7),
            "min_rating": 0.0,
            "hotel_total": None,
            "constraints": list(step["add"]),
        }

    def harden(self, db, params, rng):
        level = params["level"] + 1
        if level > self.max_level:
            return None
        step = LADDER[level - 1]
        new = dict(params, level=level, constraints=params["constraints"] + step["add"])
        for key in ("n_days", "meals", "sights"):
            new[key] = step.get(key, params[key])
        if "min_rating" in step["add"]:
            new["min_rating"] = rng.choice([3.3, 3.5, 3.7])
        if "hotel_total" in step["add"]:
            median = rows(
                db, "SELECT price FROM hotels ORDER BY price LIMIT 1 OFFSET (SELECT COUNT(*)/2 FROM hotels)"
            )
            new["hotel_total"] = int(median[0]["price"] * new["n_days"] * rng.uniform(0.9, 1.2))
        return new

    def instruction(self, p):
        c = set(p["constraints"])
        parts = [
            f"Plan a {p['n_days']}-day trip starting in {p['start']} on a {WEEKDAYS[p['start_weekday']]}.",
            f"Each day stay in one city and pick a hotel there, {p['meals']} restaurant(s) and {p['sights']} attraction(s) in that city.",  # noqa: E501
        ]
        if "no_repeat" in c:
            parts.append("Do not repeat any city, hotel, restaurant or attraction.")
        if "routes" in c:
            parts.append("Each next city must be reachable from the previous one by a direct train.")
        if "meal_budget" in c:
            parts.append(
                "Each day's meals and attraction tickets must stay within the daily budgets set for the price tier of that night's hotel."  # noqa: E501
            )
        if "open_days" in c:
            parts.append("Only visit attractions that are open on the weekday of the visit.")
        if "min_rating" in c:
            parts.append(f"Every hotel must be rated at least {p['min_rating']}.")
        if "hotel_total" in c:
            parts.append(f"Total hotel cost must not exceed {p['hotel_total']}.")
        if "cuisine_variety" in c:
            parts.append("Never eat the same cuisine twice on one day.")
        return " ".join(parts)

    # ------------------------------------------------------------------ solution: depth-first search
    def solve(self, call: ToolCaller, p):
        c, memo = set(p["constraints"]), {}

        def get(tool_name, /, **args):
            key = (tool_name, tuple(sorted(args.items())))
            if key not in memo:
                memo[key] = call(tool_name, **args)
            return memo[key]

        call.note(
            f"I start in {p['start']} and need {p['n_days']} days; I will search city by city, backtracking if a day cannot meet the constraints."  # noqa: E501
        )
        n_cities = len(get("list_cities"))

        def day_plan(city, day, hotel):
            budget = get("get_budget_policy", tier=hotel["tier"]) if "meal_budget" in c else None
            weekday = (p["start_weekday"] + day) % 7
            food = get("search_restaurants", city=city)
            picks = _cheapest(food, p["meals"], distinct_cuisine="cuisine_variety" in c)
            if picks is None or (budget and sum(r["cost"] for r in picks) > budget["meal_budget"]):
                return None
            sights = get("search_attractions", city=city)
            if "open_days" in c:
                sights = [
                    s
                    for s in sights
                    if get("get_attraction_schedule", name=s["name"])["closed_on"] != WEEKDAYS[weekday]
                ]
            if len(sights) < p["sights"] or (
                budget and sum(s["ticket"] for s in sights[: p["sights"]]) > budget["attraction_budget"]
            ):
                return None
            return {
                "city": city,
                "hotel": hotel["name"],
                "restaurants": [r["name"] for r in picks],
                "attractions": [s["name"] for s in sights[: p["sights"]]],
            }

        def search(plan, spent):
            if len(plan) == p["n_days"]:
                return plan
            day = len(plan)
            if day == 0:
                options = [p["start"]]
            else:
                options = (
                    [r["city"] for r in get("get_routes", city=plan[-1]["city"])]
                    if "routes" in c
                    else [r["name"] for r in get("list_cities")]
                )
            used = {d["city"] for d in plan}
            for city in options:
                if city in used and ("no_repeat" in c or len(used) < n_cities):
                    continue
                for hotel in get("search_hotels", city=city, min_rating=p["min_rating"]):
                    if (
                        p["hotel_total"] is not None
                        and "hotel_total" in c
                        and spent + hotel["price"] > p["hotel_total"]
                    ):
                        continue
                    entry = day_plan(city, day, hotel)
                    if entry is not None:
                        found = search(plan + [entry], spent + hotel["price"])
                        if found:
                            return found
            return None

        plan = search([], 0)
        return None if plan is None else {"days": plan}

    # ------------------------------------------------------------------------------------ verifier
    def verify(self, initial, final, p, answer):
        answer = parse_json_answer(answer)
        days = need(answer, "days", list)
        c, checks = set(p["constraints"]), []
        for i, d in enumerate(days):
            need(d, "city", str, f"days[{i}]"), need(d, "hotel", str, f"days[{i}]")
            str_list(d, "restaurants", f"days[{i}]"), str_list(d, "attractions", f"days[{i}]")
        look = _Lookup(initial)
        check(
            checks, "day_count", len(days) == p["n_days"], f"{len(days)} days planned, {p['n_days']} required"
        )
        check(
            checks,
            "start_city",
            bool(days) and days[0]["city"] == p["start"],
            f"the trip must start in {p['start']}",
        )
        bad_h = [d["hotel"] for d in days if look.hotel(d["hotel"]).get("city") != d["city"]]
        check(checks, "hotel", not bad_h, f"hotels not found in that day's city: {bad_h}")
        bad_r = [n for d in days for n in d["restaurants"] if look.restaurant(n).get("city") != d["city"]]
        counts = all(len(d["restaurants"]) == p["meals"] for d in days)
        check(
            checks,
            "restaurants",
            not bad_r and counts,
            f"need {p['meals']} restaurant(s) a day in that city; bad: {bad_r}",
        )
        bad_a = [n for d in days for n in d["attractions"] if look.attraction(n).get("city") != d["city"]]
        counts = all(len(d["attractions"]) == p["sights"] for d in days)
        check(
            checks,
            "attractions",
            not bad_a and counts,
            f"need {p['sights']} attraction(s) a day in that city; bad: {bad_a}",
        )
        if "no_repeat" in c:
            every = (
                [d["city"] for d in days]
                + [d["hotel"] for d in days]
                + [n for d in days for n in d["restaurants"] + d["attractions"]]
            )
            dup = sorted({x for x in every if every.count(x) > 1})
            check(checks, "no_repeat", not dup, f"repeated: {dup}")
        if "routes" in c:
            gaps = [
                (a["city"], b["city"]) for a, b in zip(days, days[1:]) if not look.route(a["city"], b["city"])
            ]
            check(checks, "routes", not gaps, f"no direct train between {gaps}")
        if "meal_budget" in c:
            over_m, over_a = [], []
            for i, d in enumerate(days):
                pol = look.policy(look.hotel(d["hotel"]).get("tier"))
                if sum(look.restaurant(n).get("cost", 0) for n in d["restaurants"]) > pol.get(
                    "meal_budget", -1
                ):
                    over_m.append(i + 1)
                if sum(look.attraction(n).get("ticket", 0) for n in d["attractions"]) > pol.get(
                    "attraction_budget", -1
                ):
                    over_a.append(i + 1)
            check(
                checks,
                "meal_budget",
                not over_m,
                f"meal budget of the hotel's tier exceeded on day(s) {over_m}",
            )
            check(checks, "attraction_budget", not over_a, f"attraction budget exceeded on day(s) {over_a}")
        if "open_days" in c:
            closed = [
                n
                for i, d in enumerate(days)
                for n in d["attractions"]
                if look.attraction(n).get("closed_weekday") == (p["start_weekday"] + i) % 7
            ]
            check(checks, "open_days", not closed, f"closed on the day of the visit: {closed}")
        if "min_rating" in c:
            low = [d["hotel"] for d in days if look.hotel(d["hotel"]).get("rating", 0) < p["min_rating"]]
            check(checks, "min_rating", not low, f"hotels rated below {p['min_rating']}: {low}")
        if "hotel_total" in c:
            total = sum(look.hotel(d["hotel"]).get("price", 0) for d in days)
            check(
                checks,
                "hotel_total",
                total <= p["hotel_total"],
                f"hotel total {total} exceeds {p['hotel_total']}",
            )
        if "cuisine_variety" in c:
            same = [
                i + 1
                for i, d in enumerate(days)
                if len({look.restaurant(n).get("cuisine") for n in d["restaurants"]}) < len(d["restaurants"])
            ]
            check(checks, "cuisine_variety", not same, f"a cuisine repeats on day(s) {same}")
        return checks

    def mutations(self, initial, p, answer, rng):
        c, days, look, out = set(p["constraints"]), answer["days"], _Lookup(initial), []

        def edit(name, fn):
            new = {
                "days": [
                    dict(d, restaurants=list(d["restaurants"]), attractions=list(d["attractions"]))
                    for d in days
                ]
            }
            if fn(new["days"]) is not False:
                out.append(Mutation(name, new))

        used = {n for d in days for n in [d["hotel"], *d["restaurants"], *d["attractions"]]}

        def other(table, city):
            found = rows(initial, f"SELECT * FROM {table} WHERE city!=?", (city,))
            return [r for r in found if r["name"] not in used]

        edit("day_count", lambda ds: ds.pop())
        edit("start_city", lambda ds: ds.reverse() if ds[-1]["city"] != p["start"] else False)
        edit("hotel", lambda ds: ds[0].update(hotel=other("hotels", ds[0]["city"])[0]["name"]))
        edit(
            "restaurants",
            lambda ds: ds[-1]["restaurants"].__setitem__(0, other("restaurants", ds[-1]["city"])[0]["name"]),
        )
        edit("restaurants", lambda ds: ds[0]["restaurants"].__setitem__(0, "Imaginary Noodle Palace"))
        edit(
            "attractions",
            lambda ds: ds[0]["attractions"].__setitem__(0, other("attractions", ds[0]["city"])[0]["name"]),
        )
        edit(
            "attractions",
            lambda ds: (
                ds[-1]["attractions"].append(ds[-1]["attractions"][0])
                if "no_repeat" not in c
                else ds[-1]["attractions"].pop()
            ),
        )
        if "no_repeat" in c:
            edit("no_repeat", lambda ds: ds.__setitem__(-1, dict(ds[0])))
        if "routes" in c:
            cities = [r["name"] for r in rows(initial, "SELECT name FROM cities")]

            def unroute(ds):
                prev = ds[-2]["city"]
                far = [x for x in cities if not look.route(prev, x) and x not in {d["city"] for d in ds}]
                if not far:
                    return False
                ds[-1] = dict(ds[-1], city=far[0])
                ds[-1]["hotel"] = rows(initial, "SELECT name FROM hotels WHERE city=?", (far[0],))[0]["name"]

            edit("routes", unroute)
        for key, table, field_, limit in (
            ("meal_budget", "restaurants", "cost", "meal_budget"),
            ("attraction_budget", "attractions", "ticket", "attraction_budget"),
        ):
            if key in c:

                def blow(ds, table=table, field_=field_, limit=limit):
                    for d in ds:
                        slot = "restaurants" if table == "restaurants" else "attractions"
                        pol = look.policy(look.hotel(d["hotel"])["tier"])
                        for cand in rows(
                            initial,
                            f"SELECT name, {field_} AS v FROM {table} WHERE city=? ORDER BY v DESC",
                            (d["city"],),
                        ):
                            if cand["name"] in d[slot]:
                                continue
                            trial = d[slot][1:] + [cand["name"]]
                            total = sum(
                                rows(initial, f"SELECT {field_} AS v FROM {table} WHERE name=?", (n,))[0]["v"]
                                for n in trial
                            )
                            if total > pol[limit] and (
                                slot != "restaurants"
                                or "cuisine_variety" not in c
                                or len({look.restaurant(n)["cuisine"] for n in trial}) == len(trial)
                            ):
                                d[slot] = trial
                                return None
                    return False

                edit(key, blow)
        if "open_days" in c:

            def closed(ds):
                for i, d in enumerate(ds):
                    wd = (p["start_weekday"] + i) % 7
                    for cand in rows(
                        initial,
                        "SELECT name FROM attractions WHERE city=? AND closed_weekday=?",
                        (d["city"], wd),
                    ):
                        d["attractions"][0] = cand["name"]
                        return None
                return False

            edit("open_days", closed)
        if "min_rating" in c:

            def low(ds):
                for d in ds:
                    for h in rows(
                        initial,
                        "SELECT name FROM hotels WHERE city=? AND rating<?",
                        (d["city"], p["min_rating"]),
                    ):
                        d["hotel"] = h["name"]
                        return None
                return False

            edit("min_rating", low)
        if "hotel_total" in c:

            def pricey(ds):
                for d in ds:
                    d["hotel"] = rows(
                        initial, "SELECT name FROM hotels WHERE city=? ORDER BY price DESC", (d["city"],)
                    )[0]["name"]
                if sum(look.hotel(d["hotel"])["price"] for d in ds) <= p["hotel_total"]:
                    return False

            edit("hotel_total", pricey)
        return out

    # --------------------------------------------------------------- baseline: greedy, no backtracking
    def baseline(self, call: ToolCaller, p, rng):
        att, plan = attends(rng, p), []
        cities = [r["name"] for r in call("list_cities")]
        for day in range(p["n_days"]):
            used = {d["city"] for d in plan}
            if day == 0:
                city = p["start"]
            else:
                pool = (
                    [r["city"] for r in call("get_routes", city=plan[-1]["city"])]
                    if "routes" in att
                    else cities
                )
                pool = [x for x in pool if x not in used] if "no_repeat" in att else pool
                if not pool:
                    return {"days": plan}
                city = rng.choice(pool)
            hotels = call(
                "search_hotels", city=city, min_rating=p["min_rating"] if "min_rating" in att else 0.0
            )
            if "hotel_total" in att and p["hotel_total"]:
                left = p["hotel_total"] - sum(h for h in (d["_price"] for d in plan))
                hotels = [h for h in hotels if h["price"] <= left / (p["n_days"] - day)] or hotels[:1]
            if not hotels:
                return {"days": plan}
            hotel = rng.choice(hotels)
            budget = call("get_budget_policy", tier=hotel["tier"]) if "meal_budget" in att else None
            food = call("search_restaurants", city=city)
            sights = call("search_attractions", city=city)
            if "open_days" in att:
                wd = WEEKDAYS[(p["start_weekday"] + day) % 7]
                sights = [
                    s for s in sights if call("get_attraction_schedule", name=s["name"])["closed_on"] != wd
                ]
            meal = _sample(
                rng,
                food,
                p["meals"],
                lambda rs, budget=budget: (
                    (not budget or sum(r["cost"] for r in rs) <= budget["meal_budget"])
                    and ("cuisine_variety" not in att or len({r["cuisine"] for r in rs}) == len(rs))
                ),
            )
            seen = _sample(
                rng,
                sights,
                p["sights"],
                lambda ss, budget=budget: (
                    not budget or sum(s["ticket"] for s in ss) <= budget["attraction_budget"]
                ),
            )
            plan.append(
                {
                    "city": city,
                    "hotel": hotel["name"],
                    "_price": hotel["price"],
                    "restaurants": [r["name"] for r in meal],
                    "attractions": [s["name"] for s in seen],
                }
            )
        return {"days": [{k: v for k, v in d.items() if k != "_price"} for d in plan]}


def _cheapest(items: list[dict], k: int, distinct_cuisine: bool) -> list[dict] | None:
    picks, cuisines = [], set()
    for item in items:  # sorted by cost
        if distinct_cuisine and item["cuisine"] in cuisines:
            continue
        picks.append(item)
        cuisines.add(item["cuisine"])
        if len(picks) == k:
            return picks
    return None


def _sample(rng: random.Random, items: list[dict], k: int, ok, tries: int = 12) -> list[dict]:
    """A few random draws; the first acceptable one, else the last draw (no exhaustive search)."""
    if len(items) < k:
        return items
    draw = items[:k]
    for _ in range(tries):
        draw = rng.sample(items, k)
        if ok(draw):
            return draw
    return draw


class _Lookup:
    """Memoised row lookups by name for the verifier (missing names give {})."""

    def __init__(self, db: sqlite3.Connection):
        self.db, self.memo = db, {}

    def _one(self, table: str, key: str, value) -> dict:
        if (table, value) not in self.memo:
            found = (
                rows(self.db, f"SELECT * FROM {table} WHERE {key}=?", (value,))
                if isinstance(value, (str, int))
                else []
            )
            self.memo[(table, value)] = found[0] if found else {}
        return self.memo[(table, value)]

    def hotel(self, name):
        return self._one("hotels", "name", name)  # noqa: E704

    def restaurant(self, name):
        return self._one("restaurants", "name", name)  # noqa: E704

    def attraction(self, name):
        return self._one("attractions", "name", name)  # noqa: E704

    def policy(self, tier):
        return self._one("budget_policy", "tier", tier)  # noqa: E704

    def route(self, a: str, b: str) -> bool:
        return bool(rows(self.db, "SELECT 1 FROM routes WHERE city_a=? AND city_b=?", (a, b)))
