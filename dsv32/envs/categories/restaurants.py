"""Restaurant reservations (writes reservations).

Ladder: L1 one reservation at a restaurant of a cuisine with a free table; L2 a minimum rating and
a price limit per person; L3 the restaurant must be open at that hour (adds `get_opening_hours`)
and be in a given district; L4 a second reservation on another day at a different restaurant of
a different cuisine, with a total budget (price x party summed) for both.
"""

from __future__ import annotations

import random

from dsv32.envs.categories.base import Category, Mutation, attends, check, need, parse_json_answer, rows
from dsv32.envs.tools import I, S, ToolCaller, ToolError, tool

CUISINES = ("Sichuan", "Cantonese", "Hunan", "Shanghainese", "hotpot", "dim sum", "noodles")
DISTRICTS = ("Xihu", "Binjiang", "Gongshu", "Shangcheng")
WORDS = ("Red", "Jade", "Spring", "Harbour", "Lantern", "Peony", "Bamboo", "River", "Moon", "Tea")


@tool(
    "search_restaurants",
    "Restaurants: name, cuisine, district, price per person, rating.",
    cuisine=S("cuisine", optional=True),
    district=S("district", optional=True),
)
def search_restaurants(ctx, cuisine=None, district=None):
    sql = "SELECT name, cuisine, district, price, rating FROM restaurants WHERE (? IS NULL OR cuisine=?) AND (? IS NULL OR district=?)"  # noqa: E501
    return rows(ctx.db, sql + " ORDER BY price, name", (cuisine, cuisine, district, district))


@tool(
    "check_availability",
    "Free tables for a party at a restaurant, day (1-7) and hour.",
    restaurant=S("name"),
    day=I("day 1-7"),
    hour=I("hour 0-23"),
    party=I("party size"),
)
def check_availability(ctx, restaurant, day, hour, party):
    found = rows(ctx.db, "SELECT tables, max_party FROM restaurants WHERE name=?", (restaurant,))
    if not found:
        raise ToolError(f"no restaurant {restaurant!r}")
    taken = rows(
        ctx.db,
        "SELECT COUNT(*) AS n FROM reservations WHERE restaurant=? AND day=? AND hour=?",
        (restaurant, day, hour),
    )[0]["n"]
    return {"free_tables": max(found[0]["tables"] - taken, 0) if party <= found[0]["max_party"] else 0}


@tool("get_opening_hours", "Opening and closing hour of a restaurant.", restaurant=S("name"))
def get_opening_hours(ctx, restaurant):
    found = rows(ctx.db, "SELECT open, close FROM restaurants WHERE name=?", (restaurant,))
    if not found:
        raise ToolError(f"no restaurant {restaurant!r}")
    return found[0]


@tool(
    "make_reservation",
    "Reserve a table.",
    True,
    restaurant=S("name"),
    guest=S("guest name"),
    day=I("day 1-7"),
    hour=I("hour"),
    party=I("party size"),
)
def make_reservation(ctx, restaurant, guest, day, hour, party):
    if check_availability.fn(ctx, restaurant, day, hour, party)["free_tables"] < 1:
        raise ToolError(f"{restaurant} has no free table for {party} on day {day} at {hour}:00")
    cur = ctx.db.execute(
        "INSERT INTO reservations(restaurant, guest, day, hour, party) VALUES (?,?,?,?,?)",
        (restaurant, guest, day, hour, party),
    )
    return {"reservation_id": cur.lastrowid}


class Restaurants(Category):
    name = "restaurants"
    summary = "restaurant-reservation"
    max_level = 4
    base_tools = ("search_restaurants", "check_availability", "make_reservation")
    answer_format = 'JSON {"reservation_ids": [int, ...]}'

    def library(self):
        return [search_restaurants, check_availability, make_reservation, get_opening_hours]

    def build_database(self, db, rng):
        db.executescript("""CREATE TABLE restaurants(name TEXT PRIMARY KEY, cuisine TEXT, district TEXT, price INT, rating REAL,
                                tables INT, max_party INT, open INT, close INT);
            CREATE TABLE reservations(id INTEGER PRIMARY KEY AUTOINCREMENT, restaurant TEXT, guest TEXT, day INT, hour INT, party INT);""")  # noqa: E501
        for i in range(rng.randint(22, 30)):
            opening = rng.choice([(11, 22), (11, 15), (17, 23), (10, 21), (12, 20)])
            db.execute(
                "INSERT OR IGNORE INTO restaurants VALUES (?,?,?,?,?,?,?,?,?)",
                (
                    f"{rng.choice(WORDS)} {rng.choice(WORDS)} {i}",
                    rng.choice(CUISINES),
                    rng.choice(DISTRICTS),
                    rng.randrange(40, 400, 5),
                    round(rng.uniform(3.0, 5.0), 1),
                    rng.randint(2, 4),
                    rng.choice([4, 6, 8, 10]),
                    *opening,
                ),
            )
        names = [r["name"] for r in rows(db, "SELECT name FROM restaurants")]
        for _ in range(rng.randint(10, 30)):
            db.execute(
                "INSERT INTO reservations(restaurant, guest, day, hour, party) VALUES (?,?,?,?,?)",
                (rng.choice(names), "walk-in", rng.randint(1, 7), rng.randint(11, 21), rng.randint(2, 6)),
            )
        return f"{len(names)} restaurants with tables and existing reservations"

    def initial_task(self, db, rng):
        cuisine = rng.choice(sorted({r["cuisine"] for r in rows(db, "SELECT cuisine FROM restaurants")}))
        slot = {"cuisine": cuisine, "day": rng.randint(1, 7), "hour": rng.choice([12, 13, 18, 19, 20])}
        return {
            "level": 1,
            "guest": rng.choice(["Mr Wu", "Ms Tang", "Dr Su"]),
            "party": rng.randint(2, 6),
            "slots": [slot],
            "min_rating": 0.0,
            "max_price": None,
            "district": None,
            "budget": None,
            "constraints": ["reserved", "slot", "cuisine", "available"],
        }

    def harden(self, db, p, rng):
        level = p["level"] + 1
        new = dict(p, level=level, slots=[dict(s) for s in p["slots"]])
        if level == 2:
            new.update(
                min_rating=rng.choice([3.3, 3.5, 3.8]),
                max_price=rng.choice([220, 260, 300]),
                constraints=p["constraints"] + ["rating", "price"],
            )
        elif level == 3:
            new.update(district=rng.choice(DISTRICTS), constraints=p["constraints"] + ["open", "district"])
        elif level == 4:
            other = [c for c in CUISINES if c != p["slots"][0]["cuisine"]]
            new["slots"].append(
                {
                    "cuisine": rng.choice(other),
                    "day": p["slots"][0]["day"] % 7 + 1,
                    "hour": rng.choice([12, 19]),
                }
            )
            new.update(
                budget=int(p["party"] * (p["max_price"] or 200) * rng.uniform(1.4, 2.0)),
                constraints=p["constraints"] + ["budget", "different"],
            )
        else:
            return None
        return new

    def instruction(self, p):
        c = set(p["constraints"])
        wants = "; ".join(
            f"a {s['cuisine']} restaurant on day {s['day']} at {s['hour']}:00" for s in p["slots"]
        )
        text = [f"Reserve tables for {p['guest']}, party of {p['party']}: {wants}."]
        if "rating" in c:
            text.append(
                f"Each restaurant must be rated at least {p['min_rating']} and cost at most {p['max_price']} per person."  # noqa: E501
            )
        if "district" in c:
            text.append(f"Only restaurants in {p['district']} that are open at the booked hour.")
        if "budget" in c:
            text.append(
                f"Use two different restaurants; total cost (price x party, both meals) at most {p['budget']}."  # noqa: E501
            )
        return " ".join(text)

    def _candidates(self, call, p, slot, c):
        where = {"district": p["district"]} if "district" in c else {}
        out = call("search_restaurants", cuisine=slot["cuisine"], **where)
        if "rating" in c:
            out = [r for r in out if r["rating"] >= p["min_rating"] and r["price"] <= p["max_price"]]
        if "open" in c:
            out = [
                r
                for r in out
                if (lambda h: h["open"] <= slot["hour"] < h["close"])(
                    call("get_opening_hours", restaurant=r["name"])
                )
            ]
        return [
            r
            for r in out
            if call(
                "check_availability",
                restaurant=r["name"],
                day=slot["day"],
                hour=slot["hour"],
                party=p["party"],
            )["free_tables"]
            > 0
        ]

    def solve(self, call: ToolCaller, p):
        c = set(p["constraints"])
        call.note(
            "For each requested meal I list matching restaurants, keep those meeting every rule with a free table, and pick the cheapest combination."  # noqa: E501
        )
        options = [self._candidates(call, p, s, c) for s in p["slots"]]
        combos = (
            [[a] for a in options[0]]
            if len(options) == 1
            else [[a, b] for a in options[0] for b in options[1] if a["name"] != b["name"]]
        )
        if "budget" in c:
            combos = [x for x in combos if sum(r["price"] for r in x) * p["party"] <= p["budget"]]
        if not combos:
            return None
        best = min(combos, key=lambda x: (sum(r["price"] for r in x), [r["name"] for r in x]))
        ids = [
            call(
                "make_reservation",
                restaurant=r["name"],
                guest=p["guest"],
                day=s["day"],
                hour=s["hour"],
                party=p["party"],
            )["reservation_id"]
            for r, s in zip(best, p["slots"])
        ]
        return {"reservation_ids": ids}

    def verify(self, initial, final, p, answer):
        ids = need(parse_json_answer(answer), "reservation_ids", list)
        c, checks = set(p["constraints"]), []
        old = {r["id"] for r in rows(initial, "SELECT id FROM reservations")}
        new = [
            r
            for r in rows(final, "SELECT * FROM reservations")
            if r["id"] not in old and r["guest"] == p["guest"]
        ]
        ok = len(new) == len(p["slots"]) == len(ids) and sorted(ids) == sorted(r["id"] for r in new)
        check(
            checks,
            "reserved",
            ok,
            f"need exactly {len(p['slots'])} new reservation(s) for {p['guest']} matching the answer",
        )
        if not ok:
            return checks
        by_id = {r["id"]: r for r in new}
        res = [by_id[i] for i in ids]
        info = [
            (rows(initial, "SELECT * FROM restaurants WHERE name=?", (r["restaurant"],)) or [{}])[0]
            for r in res
        ]
        check(
            checks,
            "slot",
            all(
                r["day"] == s["day"] and r["hour"] == s["hour"] and r["party"] == p["party"]
                for r, s in zip(res, p["slots"])
            ),
            "wrong day, hour or party",
        )
        check(
            checks,
            "cuisine",
            all(i.get("cuisine") == s["cuisine"] for i, s in zip(info, p["slots"])),
            "wrong cuisine",
        )
        over = [
            r["restaurant"]
            for r, i in zip(res, info)
            if rows(
                final,
                "SELECT COUNT(*) AS n FROM reservations WHERE restaurant=? AND day=? AND hour=?",
                (r["restaurant"], r["day"], r["hour"]),
            )[0]["n"]
            > i.get("tables", 0)
            or r["party"] > i.get("max_party", 0)
        ]
        check(checks, "available", not over, f"overbooked: {over}")
        if "rating" in c:
            check(
                checks, "rating", all(i.get("rating", 0) >= p["min_rating"] for i in info), "rating too low"
            )
            check(
                checks,
                "price",
                all(i.get("price", 10**9) <= p["max_price"] for i in info),
                "too expensive per person",
            )
        if "district" in c:
            check(
                checks,
                "district",
                all(i.get("district") == p["district"] for i in info),
                f"not in {p['district']}",
            )
            check(
                checks,
                "open",
                all(i.get("open", 99) <= r["hour"] < i.get("close", -1) for r, i in zip(res, info)),
                "closed at that hour",
            )
        if "budget" in c:
            check(
                checks, "different", len({r["restaurant"] for r in res}) == len(res), "same restaurant twice"
            )
            check(
                checks,
                "budget",
                sum(i.get("price", 10**9) for i in info) * p["party"] <= p["budget"],
                "over budget",
            )
        return checks

    def mutations(self, initial, p, answer, rng):
        ids, c = answer["reservation_ids"], set(p["constraints"])
        first = ids[0]
        upd = lambda col, val: ("UPDATE reservations SET " + col + "=? WHERE id=?", (val, first))  # noqa: E731
        out = [
            Mutation("reserved", {"reservation_ids": [i + 100 for i in ids]}),
            Mutation("reserved", answer, [upd("guest", "someone else")]),
            Mutation("slot", answer, [upd("day", p["slots"][0]["day"] % 7 + 1)]),
            Mutation("slot", answer, [upd("party", p["party"] + 1)]),
        ]
        res = rows(initial, "SELECT * FROM restaurants")
        pick = lambda cond: next((r["name"] for r in res if cond(r)), None)  # noqa: E731
        s0 = p["slots"][0]
        wrong_cuisine = pick(
            lambda r: (
                r["cuisine"] != s0["cuisine"]
                and r["tables"] >= 4
                and r["max_party"] >= p["party"]
                and r["open"] <= s0["hour"] < r["close"]
                and r["rating"] >= p["min_rating"]
                and (p["max_price"] is None or r["price"] <= p["max_price"])
                and (p["district"] is None or r["district"] == p["district"])
            )
        )
        if wrong_cuisine:
            out.append(Mutation("cuisine", answer, [upd("restaurant", wrong_cuisine)]))
        out.append(
            Mutation(
                "available",
                answer,
                [
                    (
                        "INSERT INTO reservations(restaurant, guest, day, hour, party) SELECT restaurant, 'walk-in', day, hour, party FROM reservations WHERE id=?",  # noqa: E501
                        (first,),
                    )
                ]
                * 4,
            )
        )
        if "rating" in c:
            cheap_low = pick(lambda r: r["cuisine"] == s0["cuisine"] and r["rating"] < p["min_rating"])
            if cheap_low:
                out.append(Mutation("rating", answer, [upd("restaurant", cheap_low)]))
        return out

    def baseline(self, call: ToolCaller, p, rng: random.Random):
        att = attends(rng, p)
        ids, used = [], set()
        for s in p["slots"]:
            opts = self._candidates(call, p, s, att & set(p["constraints"]))
            if "budget" in att:
                opts = [
                    r for r in opts if r["price"] * p["party"] <= (p["budget"] or 10**9) / len(p["slots"])
                ]
            if "different" in att:
                opts = [r for r in opts if r["name"] not in used]
            if not opts:
                return None
            r = rng.choice(opts)
            used.add(r["name"])
            try:
                ids.append(
                    call(
                        "make_reservation",
                        restaurant=r["name"],
                        guest=p["guest"],
                        day=s["day"],
                        hour=s["hour"],
                        party=p["party"],
                    )["reservation_id"]
                )
            except ToolError:
                return None
        return {"reservation_ids": ids}
