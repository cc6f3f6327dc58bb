"""Flight booking with connections (writes a booking).

Ladder: L1 a direct flight; L2 a pair with no direct flight (one connection, 30-minute minimum
layover) and an arrival deadline; L3 airport-specific minimum connection times (adds
`get_connection_rules`) and a price budget; L4 up to two stops, a party of several passengers
(seats and price per person) and an airline to avoid. The solution enumerates itineraries by
depth-first search over `search_flights` and books the cheapest valid one; the verifier reads the
booking the episode created and checks route, connections, times, budget, seats and airline.
"""

from __future__ import annotations

import json
import random

from dsv32.envs.categories.base import Category, Mutation, attends, check, need, rows
from dsv32.envs.tools import A, I, S, ToolCaller, ToolError, tool

CODES = "HGH PVG SHA PEK PKX CAN SZX CTU CKG XIY KMG WUH NKG TAO XMN CSX HRB DLC TSN NNG".split()
AIRLINES = ("China Eastern", "Air China", "China Southern", "Hainan", "Sichuan", "Xiamen Air")
BASE_GAP = 30


@tool("list_airports", "All airports: code and city.")
def list_airports(ctx):
    return rows(ctx.db, "SELECT code, city FROM airports ORDER BY code")


@tool(
    "search_flights",
    "Flights leaving an airport (optionally to one destination): id, airline, times in minutes after "
    "midnight, price per person, seats left.",
    origin=S("airport code"),
    dest=S("airport code", optional=True),
)
def search_flights(ctx, origin, dest=None):
    sql = "SELECT id, airline, origin, dest, depart, arrive, price, seats FROM flights WHERE origin=? AND (? IS NULL OR dest=?)"  # noqa: E501
    return rows(ctx.db, sql + " ORDER BY depart", (origin, dest, dest))


@tool("get_connection_rules", "Minimum connection time (minutes) at an airport.", airport=S("airport code"))
def get_connection_rules(ctx, airport):
    found = rows(ctx.db, "SELECT code AS airport, min_connection FROM airports WHERE code=?", (airport,))
    if not found:
        raise ToolError(f"unknown airport {airport!r}")
    return found[0]


@tool(
    "book_itinerary",
    "Book flights (in travel order) for a passenger and party size; takes seats and returns the booking.",
    True,
    passenger=S("passenger name"),
    flight_ids=A("flight ids in order", {"type": "integer"}),
    party=I("number of travellers", optional=True),
)
def book_itinerary(ctx, passenger, flight_ids, party=1):
    if not flight_ids or party < 1:
        raise ToolError("book_itinerary needs at least one flight id and party >= 1")
    total = 0
    for fid in flight_ids:
        found = rows(ctx.db, "SELECT price, seats FROM flights WHERE id=?", (fid,))
        if not found:
            raise ToolError(f"no flight with id {fid}")
        if found[0]["seats"] < party:
            raise ToolError(f"flight {fid} has only {found[0]['seats']} seats left")
        total += found[0]["price"] * party
    for fid in flight_ids:
        ctx.db.execute("UPDATE flights SET seats = seats - ? WHERE id=?", (party, fid))
    cur = ctx.db.execute(
        "INSERT INTO bookings(passenger, flights, party, total) VALUES (?,?,?,?)",
        (passenger, json.dumps(flight_ids), party, total),
    )
    return {"booking_id": cur.lastrowid, "total": total}


@tool("cancel_booking", "Cancel a booking and release its seats.", True, booking_id=I("booking id"))
def cancel_booking(ctx, booking_id):
    found = rows(ctx.db, "SELECT flights, party FROM bookings WHERE id=?", (booking_id,))
    if not found:
        raise ToolError(f"no booking {booking_id}")
    for fid in json.loads(found[0]["flights"]):
        ctx.db.execute("UPDATE flights SET seats = seats + ? WHERE id=?", (found[0]["party"], fid))
    ctx.db.execute("DELETE FROM bookings WHERE id=?", (booking_id,))
    return {"cancelled": booking_id}


def _hhmm(m: int) -> str:
    return f"{m // 60:02d}:{m % 60:02d}"


class Flights(Category):
    name = "flights"
    summary = "flight-booking"
    max_level = 4
    base_tools = ("list_airports", "search_flights", "book_itinerary", "cancel_booking")
    answer_format = 'JSON {"booking_id": int} for the booking you made'

    def library(self):
        return [list_airports, search_flights, book_itinerary, cancel_booking, get_connection_rules]

    def build_database(self, db, rng):
        db.executescript("""
            CREATE TABLE airports(code TEXT PRIMARY KEY, city TEXT, min_connection INT);
            CREATE TABLE flights(id INTEGER PRIMARY KEY, airline TEXT, origin TEXT, dest TEXT,
                                 depart INT, arrive INT, price INT, seats INT);
            CREATE TABLE bookings(id INTEGER PRIMARY KEY AUTOINCREMENT, passenger TEXT, flights TEXT,
                                  party INT, total INT);
        """)
        codes = rng.sample(CODES, rng.randint(8, 11))
        db.executemany(
            "INSERT INTO airports VALUES (?,?,?)",
            [(c, f"city of {c}", rng.choice([30, 45, 60, 90])) for c in codes],
        )
        pairs = [(a, b) for a in codes for b in codes if a != b and rng.random() < 0.3]
        fid = 100
        for a, b in pairs:
            for _ in range(rng.randint(1, 3)):
                dep = rng.randrange(6 * 60, 21 * 60, 5)
                fid += rng.randint(1, 9)
                db.execute(
                    "INSERT INTO flights VALUES (?,?,?,?,?,?,?,?)",
                    (
                        fid,
                        rng.choice(AIRLINES),
                        a,
                        b,
                        dep,
                        dep + rng.randrange(60, 200, 5),
                        rng.randrange(300, 1500, 10),
                        rng.randint(0, 9),
                    ),
                )
        return f"{len(codes)} airports and {len(pairs)} routes of scheduled flights"

    def _itineraries(self, db, origin, dest, max_stops):
        out, legs = [], {}
        for r in rows(db, "SELECT * FROM flights"):
            legs.setdefault(r["origin"], []).append(r)

        def walk(path):
            here = path[-1]["dest"]
            if here == dest:
                out.append(path)
                return
            if len(path) > max_stops:
                return
            for nxt in legs.get(here, []):
                if nxt["depart"] > path[-1]["arrive"] and nxt["dest"] not in {p["origin"] for p in path}:
                    walk(path + [nxt])

        for first in legs.get(origin, []):
            walk([first])
        return out

    def initial_task(self, db, rng):
        direct = rows(db, "SELECT DISTINCT origin, dest FROM flights WHERE seats >= 1 ORDER BY origin, dest")
        if not direct:
            return None
        pick = rng.choice(direct)
        name = rng.choice(["Li Wei", "Zhang Min", "Wang Fang", "Chen Jie", "Liu Yang", "Zhao Lei"])
        return {
            "level": 1,
            "origin": pick["origin"],
            "dest": pick["dest"],
            "passenger": name,
            "party": 1,
            "max_stops": 0,
            "arrive_by": None,
            "budget": None,
            "avoid": None,
            "constraints": ["booked", "passenger", "route", "one_booking"],
        }

    def harden(self, db, p, rng):
        level = p["level"] + 1
        new = dict(p, level=level, constraints=list(p["constraints"]))
        if level == 2:
            codes = [r["code"] for r in rows(db, "SELECT code FROM airports")]
            pairs = [
                (a, b)
                for a in codes
                for b in codes
                if a != b and not rows(db, "SELECT 1 FROM flights WHERE origin=? AND dest=?", (a, b))
            ]
            rng.shuffle(pairs)
            for a, b in pairs[:30]:
                its = [
                    i
                    for i in self._itineraries(db, a, b, 1)
                    if len(i) == 2 and min(x["seats"] for x in i) >= 1
                ]
                if its:
                    new.update(
                        origin=a, dest=b, max_stops=1, arrive_by=max(i[-1]["arrive"] for i in its) + 15
                    )
                    new["constraints"] += ["connection", "arrive_by"]
                    return new
            return None
        if level == 3:
            its = self._itineraries(db, p["origin"], p["dest"], p["max_stops"])
            prices = sorted(sum(x["price"] for x in i) for i in its) or [1000]
            new.update(budget=int(prices[len(prices) // 3] * rng.uniform(1.0, 1.15)))
            new["constraints"] += ["min_connection", "budget"]
            return new
        if level == 4:
            new.update(max_stops=2, party=rng.choice([2, 3]), avoid=rng.choice(AIRLINES))
            new["budget"] = p["budget"] * new["party"]
            new["constraints"] += ["party", "avoid_airline"]
            return new
        return None

    def instruction(self, p):
        c = set(p["constraints"])
        text = [
            f"Book a trip from {p['origin']} to {p['dest']} for {p['passenger']}"
            + (f" and {p['party'] - 1} companion(s) (party of {p['party']})." if "party" in c else ".")
        ]
        text.append(f"Use at most {p['max_stops']} stop(s)." if p["max_stops"] else "Take a direct flight.")
        if "arrive_by" in c:
            text.append(f"Arrive by {_hhmm(p['arrive_by'])}.")
        if "connection" in c:
            text.append(
                f"Each connection needs at least {BASE_GAP} minutes"
                + (
                    ", or the airport's own minimum connection time if longer."
                    if "min_connection" in c
                    else "."
                )
            )
        if "budget" in c:
            text.append(f"The total price for the party must not exceed {p['budget']}.")
        if "avoid_airline" in c:
            text.append(f"Do not fly {p['avoid']}.")
        text.append("Make exactly one booking.")
        return " ".join(text)

    def _gap(self, call, c, airport, memo):
        if "min_connection" not in c:
            return BASE_GAP
        if airport not in memo:
            memo[airport] = max(BASE_GAP, call("get_connection_rules", airport=airport)["min_connection"])
        return memo[airport]

    def solve(self, call: ToolCaller, p):
        c, gaps, found = set(p["constraints"]), {}, []
        call.note(
            f"I search itineraries from {p['origin']} to {p['dest']} with up to {p['max_stops']} stop(s), keep those meeting every rule, and book the cheapest."  # noqa: E501
        )
        cache = {}

        def legs(origin):
            if origin not in cache:
                cache[origin] = call("search_flights", origin=origin)
            return cache[origin]

        def ok_leg(f):
            return f["seats"] >= p["party"] and (
                p["avoid"] is None or "avoid_airline" not in c or f["airline"] != p["avoid"]
            )

        def walk(path):
            here = path[-1]["dest"]
            if here == p["dest"]:
                if p["arrive_by"] is None or path[-1]["arrive"] <= p["arrive_by"]:
                    found.append(path)
                return
            if len(path) > p["max_stops"]:
                return
            for nxt in legs(here):
                if (
                    ok_leg(nxt)
                    and nxt["depart"] >= path[-1]["arrive"] + self._gap(call, c, here, gaps)
                    and nxt["dest"] not in {x["origin"] for x in path}
                ):
                    walk(path + [nxt])

        for first in legs(p["origin"]):
            if ok_leg(first):
                walk([first])
        found = [
            f for f in found if p["budget"] is None or sum(x["price"] for x in f) * p["party"] <= p["budget"]
        ]
        if not found:
            return None
        best = min(found, key=lambda f: (sum(x["price"] for x in f), [x["id"] for x in f]))
        booking = call(
            "book_itinerary", passenger=p["passenger"], flight_ids=[x["id"] for x in best], party=p["party"]
        )
        return {"booking_id": booking["booking_id"]}

    def verify(self, initial, final, p, answer):
        from dsv32.envs.categories.base import parse_json_answer

        answer = parse_json_answer(answer)
        booking_id = need(answer, "booking_id", int)
        c, checks = set(p["constraints"]), []
        old = {r["id"] for r in rows(initial, "SELECT id FROM bookings")}
        new = [r for r in rows(final, "SELECT * FROM bookings") if r["id"] not in old]
        mine = [r for r in new if r["id"] == booking_id]
        check(checks, "booked", bool(mine), f"no new booking with id {booking_id}")
        check(checks, "one_booking", len(new) == 1, f"{len(new)} new bookings; exactly one required")
        if not mine:
            return checks
        b = mine[0]
        check(
            checks,
            "passenger",
            b["passenger"] == p["passenger"],
            f"booked for {b['passenger']!r}, not {p['passenger']!r}",
        )
        ids = json.loads(b["flights"]) if isinstance(b["flights"], str) else []
        legs = [(rows(initial, "SELECT * FROM flights WHERE id=?", (i,)) or [None])[0] for i in ids]
        real = [x for x in legs if x is not None]
        chain = len(real) == len(legs) > 0 and all(a["dest"] == b_["origin"] for a, b_ in zip(real, real[1:]))
        ends = chain and real[0]["origin"] == p["origin"] and real[-1]["dest"] == p["dest"]
        check(
            checks,
            "route",
            ends and len(real) - 1 <= p["max_stops"],
            f"flights {ids} do not go {p['origin']}->{p['dest']} within {p['max_stops']} stop(s)",
        )
        if not real:
            return checks
        if "connection" in c:

            def need_gap(ap):
                found = rows(initial, "SELECT min_connection FROM airports WHERE code=?", (ap,))
                return max(BASE_GAP, found[0]["min_connection"]) if "min_connection" in c else BASE_GAP

            base_bad = [b_["id"] for a, b_ in zip(real, real[1:]) if b_["depart"] < a["arrive"] + BASE_GAP]
            check(
                checks,
                "connection",
                not base_bad,
                f"connections under {BASE_GAP} minutes before flights {base_bad}",
            )
            if "min_connection" in c:
                bad = [
                    b_["id"]
                    for a, b_ in zip(real, real[1:])
                    if b_["depart"] < a["arrive"] + need_gap(a["dest"])
                ]
                check(
                    checks,
                    "min_connection",
                    not bad,
                    f"connections shorter than the airport minimum before flights {bad}",
                )
        if "arrive_by" in c:
            check(
                checks,
                "arrive_by",
                real[-1]["arrive"] <= p["arrive_by"],
                f"arrives {_hhmm(real[-1]['arrive'])}, after {_hhmm(p['arrive_by'])}",
            )
        if "budget" in c:
            total = sum(x["price"] for x in real) * b["party"]
            check(
                checks,
                "budget",
                total <= p["budget"] and b["total"] == total,
                f"total {total} (recorded {b['total']}) over budget {p['budget']}",
            )
        if "party" in c:
            seats_ok = all(
                rows(final, "SELECT seats FROM flights WHERE id=?", (x["id"],))[0]["seats"]
                == x["seats"] - p["party"]
                for x in real
            )
            check(
                checks,
                "party",
                b["party"] == p["party"] and seats_ok,
                f"party of {b['party']} booked (seats updated: {seats_ok}); {p['party']} required",
            )
        if "avoid_airline" in c:
            bad = [x["id"] for x in real if x["airline"] == p["avoid"]]
            check(checks, "avoid_airline", not bad, f"flights {bad} are operated by {p['avoid']}")
        return checks

    def mutations(self, initial, p, answer, rng):
        c, out, bid = set(p["constraints"]), [], answer["booking_id"]
        out.append(Mutation("booked", {"booking_id": bid + 1000}))
        out.append(Mutation("booked", answer, [("DELETE FROM bookings WHERE id=?", (bid,))]))
        out.append(
            Mutation(
                "one_booking",
                answer,
                [
                    (
                        "INSERT INTO bookings(passenger, flights, party, total) SELECT passenger, flights, party, total FROM bookings WHERE id=?",  # noqa: E501
                        (bid,),
                    )
                ],
            )
        )
        out.append(
            Mutation(
                "passenger",
                answer,
                [("UPDATE bookings SET passenger=? WHERE id=?", (p["passenger"] + " Jr", bid))],
            )
        )
        wrong = rows(
            initial, "SELECT id FROM flights WHERE origin=? AND dest!=? LIMIT 1", (p["origin"], p["dest"])
        )
        if wrong:
            out.append(
                Mutation(
                    "route",
                    answer,
                    [("UPDATE bookings SET flights=? WHERE id=?", (json.dumps([wrong[0]["id"]]), bid))],
                )
            )
        its = self._itineraries(initial, p["origin"], p["dest"], p["max_stops"])
        for breaks in ("connection", "arrive_by", "avoid_airline"):
            if breaks in c:
                for it in its:
                    if self._valid_except(it, p, c, breaks):
                        out.append(self._swap(bid, it, p, breaks))
                        break
        if "budget" in c:
            out.append(
                Mutation(
                    "budget", answer, [("UPDATE bookings SET total = ? WHERE id=?", (p["budget"] + 1, bid))]
                )
            )
        if "party" in c:
            out.append(
                Mutation("party", answer, [("UPDATE bookings SET party = party - 1 WHERE id=?", (bid,))])
            )
        return out

    def _valid_except(self, it, p, c, breaks):
        """Itinerary `it` breaks constraint `breaks` and, by direct data conditions, no other."""
        gaps = [b["depart"] - a["arrive"] for a, b in zip(it, it[1:])]
        tests = {
            "connection": all(g >= 90 for g in gaps),  # 90 = the largest airport minimum
            "arrive_by": p["arrive_by"] is None or it[-1]["arrive"] <= p["arrive_by"],
            "avoid_airline": all(x["airline"] != p["avoid"] for x in it),
        }
        wrong = {
            "connection": any(g < BASE_GAP for g in gaps),
            "arrive_by": not tests["arrive_by"],
            "avoid_airline": not tests["avoid_airline"],
        }
        fits = all(x["seats"] >= p["party"] for x in it) and (
            p["budget"] is None or sum(x["price"] for x in it) * p["party"] <= p["budget"]
        )
        others = all(ok for name, ok in tests.items() if name != breaks and name in c)
        return wrong[breaks] and fits and others

    def _swap(self, bid, it, p, breaks):
        """Re-point booking `bid` at itinerary `it`, moving the party's seats accordingly."""
        ids = [x["id"] for x in it]
        total = sum(x["price"] for x in it) * p["party"]
        legs = "SELECT value FROM json_each((SELECT flights FROM bookings WHERE id=?))"
        return Mutation(
            breaks,
            {"booking_id": bid},
            [
                (f"UPDATE flights SET seats = seats + ? WHERE id IN ({legs})", (p["party"], bid)),
                ("UPDATE bookings SET flights=?, total=? WHERE id=?", (json.dumps(ids), total, bid)),
                (f"UPDATE flights SET seats = seats - ? WHERE id IN ({legs})", (p["party"], bid)),
            ],
        )

    def baseline(self, call: ToolCaller, p, rng: random.Random):
        att, c = attends(rng, p), set(p["constraints"])
        for _ in range(3):
            path, here, t = [], p["origin"], 0
            while here != p["dest"] and len(path) <= p["max_stops"]:
                opts = call("search_flights", origin=here)
                if "party" in att:
                    opts = [f for f in opts if f["seats"] >= p["party"]]
                else:
                    opts = [f for f in opts if f["seats"] >= 1]
                if "avoid_airline" in att:
                    opts = [f for f in opts if f["airline"] != p["avoid"]]
                if path:
                    gap = BASE_GAP if "connection" in att else 0
                    if "min_connection" in att and "min_connection" in c:
                        gap = max(gap, call("get_connection_rules", airport=here)["min_connection"])
                    opts = [f for f in opts if f["depart"] >= t + gap]
                direct = [f for f in opts if f["dest"] == p["dest"]]
                if "arrive_by" in att and p["arrive_by"]:
                    direct = [f for f in direct if f["arrive"] <= p["arrive_by"]]
                pick = (
                    rng.choice(direct)
                    if direct
                    else (rng.choice(opts) if opts and len(path) < p["max_stops"] else None)
                )
                if pick is None:
                    break
                path.append(pick)
                here, t = pick["dest"], pick["arrive"]
            if here != p["dest"]:
                continue
            total = sum(f["price"] for f in path) * p["party"]
            if "budget" in att and p["budget"] and total > p["budget"]:
                continue
            party = p["party"] if "party" in att else 1
            try:
                return {
                    "booking_id": call(
                        "book_itinerary",
                        passenger=p["passenger"],
                        flight_ids=[f["id"] for f in path],
                        party=party,
                    )["booking_id"]
                }
            except ToolError:
                continue
        return None
