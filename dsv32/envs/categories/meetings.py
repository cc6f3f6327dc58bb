"""Meeting scheduling across calendars (writes a meeting).

Ladder: L1 two attendees, 30 minutes, working hours, everyone free; L2 four attendees, 60 minutes
and a room with enough seats; L3 the room must be free (adds `get_room_bookings`) and the slot must
be the earliest that works; L4 five attendees, a video room and a 15-minute buffer after each
attendee's previous commitment. Times are minutes after midnight on one day.
"""

from __future__ import annotations

import json
import random

from dsv32.envs.categories.base import Category, Mutation, attends, check, need, parse_json_answer, rows
from dsv32.envs.tools import A, I, S, ToolCaller, ToolError, tool

NAMES = "Ana Bo Chen Dara Eli Fang Gus Hana Ivo Jun Kai Lin Mei Nour Omar Pia".split()
DAY_START, DAY_END, STEP = 9 * 60, 17 * 60, 15


@tool("list_people", "Everyone in the organisation.")
def list_people(ctx):
    return [r["name"] for r in rows(ctx.db, "SELECT name FROM people ORDER BY name")]


@tool("get_busy", "A person's busy intervals (start, end in minutes after midnight).", person=S("name"))
def get_busy(ctx, person):
    if not rows(ctx.db, "SELECT 1 FROM people WHERE name=?", (person,)):
        raise ToolError(f"unknown person {person!r}")
    return rows(ctx.db, "SELECT start, end FROM busy WHERE person=? ORDER BY start", (person,))


@tool("list_rooms", "Meeting rooms: name, seats, video.")
def list_rooms(ctx):
    return rows(ctx.db, "SELECT name, seats, video FROM rooms ORDER BY name")


@tool("get_room_bookings", "A room's booked intervals.", room=S("room name"))
def get_room_bookings(ctx, room):
    return rows(ctx.db, "SELECT start, end FROM room_bookings WHERE room=? ORDER BY start", (room,))


@tool(
    "book_meeting",
    "Book a meeting (start in minutes after midnight).",
    True,
    title=S("title"),
    start=I("start minute"),
    duration=I("minutes"),
    room=S("room"),
    attendees=A("names", {"type": "string"}),
)
def book_meeting(ctx, title, start, duration, room, attendees):
    if not rows(ctx.db, "SELECT 1 FROM rooms WHERE name=?", (room,)):
        raise ToolError(f"unknown room {room!r}")
    cur = ctx.db.execute(
        "INSERT INTO meetings(title, start, end, room, attendees) VALUES (?,?,?,?,?)",
        (title, start, start + duration, room, json.dumps(attendees)),
    )
    ctx.db.execute("INSERT INTO room_bookings VALUES (?,?,?)", (room, start, start + duration))
    return {"meeting_id": cur.lastrowid}


def _free(busy, start, end, buffer=0):
    return all(end <= b["start"] or start >= b["end"] + buffer for b in busy)


LADDER = (
    {"n": 2, "duration": 30, "add": ["booked", "attendees", "duration", "working_hours", "all_free"]},
    {"n": 4, "duration": 60, "add": ["room_seats"]},
    {"add": ["room_free", "earliest"]},
    {"n": 5, "add": ["video", "buffer"]},
)


class Meetings(Category):
    name = "meetings"
    summary = "calendar-scheduling"
    max_level = 4
    base_tools = ("list_people", "get_busy", "list_rooms", "book_meeting")
    answer_format = 'JSON {"meeting_id": int, "start": int} for the meeting you booked'

    def library(self):
        return [list_people, get_busy, list_rooms, book_meeting, get_room_bookings]

    def build_database(self, db, rng):
        db.executescript("""CREATE TABLE people(name TEXT PRIMARY KEY); CREATE TABLE busy(person TEXT, start INT, end INT);
            CREATE TABLE rooms(name TEXT PRIMARY KEY, seats INT, video INT); CREATE TABLE room_bookings(room TEXT, start INT, end INT);
            CREATE TABLE meetings(id INTEGER PRIMARY KEY AUTOINCREMENT, title TEXT, start INT, end INT, room TEXT, attendees TEXT);""")  # noqa: E501
        people = rng.sample(NAMES, rng.randint(8, 12))
        db.executemany("INSERT INTO people VALUES (?)", [(p,) for p in people])
        for p in people:
            for _ in range(rng.randint(2, 5)):
                s = rng.randrange(DAY_START, DAY_END - 30, STEP)
                db.execute("INSERT INTO busy VALUES (?,?,?)", (p, s, s + rng.choice([30, 45, 60, 90])))
        for i in range(rng.randint(3, 5)):
            room = f"{rng.choice(['Lotus', 'Cedar', 'Maple', 'Birch', 'Pine'])}-{i + 1}"
            db.execute(
                "INSERT INTO rooms VALUES (?,?,?)", (room, rng.choice([4, 6, 8, 12]), rng.random() < 0.5)
            )
            for _ in range(rng.randint(1, 4)):
                s = rng.randrange(DAY_START, DAY_END - 30, STEP)
                db.execute(
                    "INSERT INTO room_bookings VALUES (?,?,?)", (room, s, s + rng.choice([30, 60, 90]))
                )
        return f"{len(people)} calendars and meeting rooms"

    def initial_task(self, db, rng):
        people = [r["name"] for r in rows(db, "SELECT name FROM people ORDER BY name")]
        step = LADDER[0]
        return {
            "level": 1,
            "title": f"Sync {rng.randint(1, 999)}",
            "attendees": rng.sample(people, step["n"]),
            "duration": step["duration"],
            "constraints": list(step["add"]),
        }

    def harden(self, db, p, rng):
        if p["level"] >= self.max_level:
            return None
        step = LADDER[p["level"]]
        people = [r["name"] for r in rows(db, "SELECT name FROM people ORDER BY name")]
        new = dict(
            p,
            level=p["level"] + 1,
            constraints=p["constraints"] + step["add"],
            duration=step.get("duration", p["duration"]),
        )
        extra = [x for x in people if x not in p["attendees"]]
        new["attendees"] = p["attendees"] + rng.sample(
            extra, step.get("n", len(p["attendees"])) - len(p["attendees"])
        )
        return new

    def instruction(self, p):
        c = set(p["constraints"])
        text = [
            f"Book a {p['duration']}-minute meeting titled {p['title']!r} with {', '.join(p['attendees'])} (exactly these attendees),",  # noqa: E501
            "between 09:00 and 17:00 when every attendee is free.",
        ]
        if "room_seats" in c:
            text.append(
                "Use a room with a seat for every attendee"
                + (" and video equipment." if "video" in c else ".")
            )
        if "room_free" in c:
            text.append(
                "The room must not be booked at that time, and choose the earliest start (on a 15-minute grid) that satisfies everything."  # noqa: E501
            )
        if "buffer" in c:
            text.append("Leave every attendee at least 15 minutes after any earlier commitment.")
        return " ".join(text) + " Make exactly one booking."

    def _rooms(self, call, p, c):
        rooms = call("list_rooms")
        if "room_seats" in c:
            rooms = [
                r for r in rooms if r["seats"] >= len(p["attendees"]) and (r["video"] or "video" not in c)
            ]
        return rooms

    def solve(self, call: ToolCaller, p):
        c = set(p["constraints"])
        call.note(
            "I collect every attendee's busy times, then scan the day in 15-minute steps for the first slot that fits."  # noqa: E501
        )
        busy = {a: call("get_busy", person=a) for a in p["attendees"]}
        rooms = self._rooms(call, p, c)
        bookings = (
            {r["name"]: call("get_room_bookings", room=r["name"]) for r in rooms} if "room_free" in c else {}
        )
        buffer = 15 if "buffer" in c else 0
        for start in range(DAY_START, DAY_END - p["duration"] + 1, STEP):
            end = start + p["duration"]
            if not all(_free(busy[a], start, end, buffer) for a in p["attendees"]):
                continue
            for room in rooms:
                if "room_free" in c and not _free(bookings[room["name"]], start, end):
                    continue
                booked = call(
                    "book_meeting",
                    title=p["title"],
                    start=start,
                    duration=p["duration"],
                    room=room["name"],
                    attendees=p["attendees"],
                )
                return {"meeting_id": booked["meeting_id"], "start": start}
        return None

    def verify(self, initial, final, p, answer):
        answer = parse_json_answer(answer)
        mid = need(answer, "meeting_id", int)
        c, checks = set(p["constraints"]), []
        new = rows(final, "SELECT * FROM meetings WHERE id NOT IN (SELECT id FROM meetings WHERE 0)")
        old = {r["id"] for r in rows(initial, "SELECT id FROM meetings")}
        new = [m for m in new if m["id"] not in old]
        mine = [m for m in new if m["id"] == mid and m["title"] == p["title"]]
        check(
            checks,
            "booked",
            len(mine) == 1 and len(new) == 1,
            f"need exactly one new meeting {p['title']!r} with id {mid}",
        )
        if not mine:
            return checks
        m = mine[0]
        people = json.loads(m["attendees"]) if isinstance(m["attendees"], str) else []
        check(
            checks,
            "attendees",
            sorted(people) == sorted(p["attendees"]),
            f"attendees {people} differ from {p['attendees']}",
        )
        check(
            checks,
            "duration",
            m["end"] - m["start"] == p["duration"],
            f"meeting lasts {m['end'] - m['start']} minutes",
        )
        check(checks, "working_hours", DAY_START <= m["start"] and m["end"] <= DAY_END, "outside 09:00-17:00")
        busy = {a: rows(initial, "SELECT start, end FROM busy WHERE person=?", (a,)) for a in p["attendees"]}
        clash = [a for a in p["attendees"] if not _free(busy[a], m["start"], m["end"])]
        check(checks, "all_free", not clash, f"busy then: {clash}")
        room = (rows(initial, "SELECT * FROM rooms WHERE name=?", (m["room"],)) or [{}])[0]
        if "room_seats" in c:
            check(
                checks,
                "room_seats",
                room.get("seats", 0) >= len(p["attendees"]),
                f"room {m['room']!r} is too small or unknown",
            )
        if "room_free" in c:
            taken = rows(initial, "SELECT start, end FROM room_bookings WHERE room=?", (m["room"],))
            check(
                checks,
                "room_free",
                bool(room) and _free(taken, m["start"], m["end"]),
                f"room {m['room']!r} is booked then",
            )
            check(
                checks,
                "earliest",
                m["start"] == self._earliest(initial, p),
                "an earlier slot satisfies every constraint",
            )
        if "video" in c:
            check(checks, "video", bool(room.get("video")), f"room {m['room']!r} has no video")
        if "buffer" in c:
            tight = [a for a in p["attendees"] if not _free(busy[a], m["start"], m["end"], 15)]
            check(checks, "buffer", not tight, f"less than 15 minutes after a commitment for {tight}")
        return checks

    def _earliest(self, db, p):
        c = set(p["constraints"])
        busy = {a: rows(db, "SELECT start, end FROM busy WHERE person=?", (a,)) for a in p["attendees"]}
        rooms = [
            r
            for r in rows(db, "SELECT * FROM rooms")
            if r["seats"] >= len(p["attendees"]) and (r["video"] or "video" not in c)
        ]
        for start in range(DAY_START, DAY_END - p["duration"] + 1, STEP):
            end = start + p["duration"]
            if all(_free(busy[a], start, end, 15 if "buffer" in c else 0) for a in p["attendees"]) and any(
                _free(rows(db, "SELECT start, end FROM room_bookings WHERE room=?", (r["name"],)), start, end)
                for r in rooms
            ):
                return start
        return None

    def mutations(self, initial, p, answer, rng):
        mid, c = answer["meeting_id"], set(p["constraints"])
        upd = lambda col, val: ("UPDATE meetings SET " + col + "=? WHERE id=?", (val, mid))  # noqa: E731
        out = [
            Mutation("booked", {"meeting_id": mid + 50, "start": answer["start"]}),
            Mutation(
                "booked",
                answer,
                [
                    (
                        "INSERT INTO meetings(title, start, end, room, attendees) SELECT title, start, end, room, attendees FROM meetings WHERE id=?",  # noqa: E501
                        (mid,),
                    )
                ],
            ),
            Mutation("attendees", answer, [upd("attendees", json.dumps(p["attendees"][:-1]))]),
            Mutation("duration", answer, [("UPDATE meetings SET end = end + 15 WHERE id=?", (mid,))]),
            Mutation(
                "working_hours",
                answer,
                [("UPDATE meetings SET start = 480, end = 480 + ? WHERE id=?", (p["duration"], mid))],
            ),
        ]
        busy = rows(
            initial, "SELECT start, end FROM busy WHERE person=? ORDER BY start", (p["attendees"][0],)
        )
        clash = next(
            (b for b in busy if b["start"] >= DAY_START and b["start"] + p["duration"] <= DAY_END), None
        )
        if clash:
            out.append(
                Mutation(
                    "all_free",
                    answer,
                    [
                        (
                            "UPDATE meetings SET start=?, end=? WHERE id=?",
                            (clash["start"], clash["start"] + p["duration"], mid),
                        )
                    ],
                )
            )
        if "room_seats" in c:
            small = rows(initial, "SELECT name FROM rooms WHERE seats < ?", (len(p["attendees"]),))
            if small:
                out.append(Mutation("room_seats", answer, [upd("room", small[0]["name"])]))
        if "video" in c:
            plain = rows(
                initial, "SELECT name FROM rooms WHERE video = 0 AND seats >= ?", (len(p["attendees"]),)
            )
            if plain:
                out.append(Mutation("video", answer, [upd("room", plain[0]["name"])]))
        return out

    def baseline(self, call: ToolCaller, p, rng: random.Random):
        att, c = attends(rng, p), set(p["constraints"])
        busy = {a: call("get_busy", person=a) for a in p["attendees"]}
        who = [a for a in p["attendees"] if "all_free" in att or rng.random() < 0.5]
        rooms = self._rooms(call, p, {x for x in c if x in att})
        buffer = 15 if "buffer" in att else 0
        starts = [
            s
            for s in range(DAY_START, DAY_END - p["duration"] + 1, STEP)
            if all(_free(busy[a], s, s + p["duration"], buffer) for a in who)
        ]
        if not starts or not rooms:
            return None
        start = starts[0] if "earliest" in att else rng.choice(starts)
        room = rng.choice(rooms)
        if "room_free" in att and "room_free" in c:
            free = [
                r
                for r in rooms
                if _free(call("get_room_bookings", room=r["name"]), start, start + p["duration"])
            ]
            room = rng.choice(free) if free else room
        booked = call(
            "book_meeting",
            title=p["title"],
            start=start,
            duration=p["duration"],
            room=room["name"],
            attendees=p["attendees"],
        )
        return {"meeting_id": booked["meeting_id"], "start": start}
