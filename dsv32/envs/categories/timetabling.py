"""Timetabling: assign courses to (slot, room) without clashes.

Ladder: L1 three courses, rooms big enough, no room double-booked; L2 five courses, no teacher or
student-group clash; L3 seven courses, teachers' unavailable slots (adds `get_teacher_unavailability`)
and lab courses in lab rooms; L4 nine courses and at most two courses per group per day. The
solution is backtracking search (most-constrained course first); the baseline assigns greedily.
"""

from __future__ import annotations

import random

from dsv32.envs.categories.base import Category, Mutation, attends, check, need, parse_json_answer, rows
from dsv32.envs.tools import S, ToolCaller, tool

SUBJECTS = (
    "Algebra",
    "Physics",
    "Chemistry",
    "Poetry",
    "History",
    "Biology",
    "Economics",
    "Drawing",
    "Music",
    "Geography",
    "Logic",
    "Statistics",
)
TEACHERS = ("Prof Li", "Dr Ma", "Ms He", "Mr Guo", "Dr Sun", "Ms Zhu")


@tool("list_courses", "Courses to schedule: name, teacher, student group, size, needs a lab.")
def list_courses(ctx):
    return rows(ctx.db, "SELECT name, teacher, grp, size, lab FROM courses WHERE active=1 ORDER BY name")


@tool("list_rooms", "Rooms: name, capacity, is a lab.")
def list_rooms(ctx):
    return rows(ctx.db, "SELECT name, capacity, lab FROM rooms ORDER BY name")


@tool("list_slots", "Time slots: id, day, period.")
def list_slots(ctx):
    return rows(ctx.db, "SELECT id, day, period FROM slots ORDER BY id")


@tool("get_teacher_unavailability", "Slot ids a teacher cannot teach.", teacher=S("teacher"))
def get_teacher_unavailability(ctx, teacher):
    return [
        r["slot"]
        for r in rows(ctx.db, "SELECT slot FROM unavailable WHERE teacher=? ORDER BY slot", (teacher,))
    ]


LADDER = (
    (3, ["assignment", "capacity", "room_clash"]),
    (5, ["teacher_clash", "group_clash"]),
    (7, ["unavailable", "lab"]),
    (9, ["per_day"]),
)


class Timetabling(Category):
    name = "timetabling"
    summary = "school-timetabling"
    max_level = 4
    base_tools = ("list_courses", "list_rooms", "list_slots")
    answer_format = (
        'JSON {"schedule": [{"course": str, "slot": int, "room": str}, ...]} with every listed course once'
    )

    def library(self):
        return [list_courses, list_rooms, list_slots, get_teacher_unavailability]

    def build_database(self, db, rng):
        db.executescript("""
            CREATE TABLE courses(name TEXT PRIMARY KEY, teacher TEXT, grp TEXT, size INT, lab INT, active INT,
                                 rank INT);
            CREATE TABLE rooms(name TEXT PRIMARY KEY, capacity INT, lab INT);
            CREATE TABLE slots(id INT PRIMARY KEY, day INT, period INT);
            CREATE TABLE unavailable(teacher TEXT, slot INT);""")
        n_slots = 0
        for day in range(1, 4):
            for period in range(1, 4):
                n_slots += 1
                db.execute("INSERT INTO slots VALUES (?,?,?)", (n_slots, day, period))
        for i, subject in enumerate(rng.sample(SUBJECTS, 9)):
            db.execute(
                "INSERT INTO courses VALUES (?,?,?,?,?,0,?)",
                (
                    subject,
                    rng.choice(TEACHERS[:4]),
                    rng.choice(["G1", "G2", "G3"]),
                    rng.randint(12, 40),
                    rng.random() < 0.3,
                    i,
                ),
            )
        for name, cap, lab in (
            ("R101", rng.randint(20, 30), 0),
            ("R102", 45, 0),
            ("Lab-A", rng.randint(25, 45), 1),
        ):
            db.execute("INSERT INTO rooms VALUES (?,?,?)", (name, cap, lab))
        for t in TEACHERS[:4]:
            for s in rng.sample(range(1, n_slots + 1), rng.randint(1, 3)):
                db.execute("INSERT INTO unavailable VALUES (?,?)", (t, s))
        return "courses, rooms, nine weekly slots and teacher availability"

    def initial_task(self, db, rng):
        return self._level(db, 1, [])

    def _level(self, db, level, constraints):
        n, add = LADDER[level - 1]
        courses = [r["name"] for r in rows(db, "SELECT name FROM courses ORDER BY rank LIMIT ?", (n,))]
        return {
            "level": level,
            "courses": courses,
            "constraints": constraints + add,
            "setup": [["UPDATE courses SET active = (name IN (" + ",".join("?" * n) + "))", courses]],
        }

    def harden(self, db, p, rng):
        return self._level(db, p["level"] + 1, p["constraints"]) if p["level"] < self.max_level else None

    def instruction(self, p):
        c = set(p["constraints"])
        text = [
            "Build a timetable: give every listed course one slot and one room; rooms must hold the group and never host two courses at once."  # noqa: E501
        ]
        if "teacher_clash" in c:
            text.append("No teacher or student group may have two courses in one slot.")
        if "unavailable" in c:
            text.append("Respect each teacher's unavailable slots, and put lab courses in lab rooms.")
        if "per_day" in c:
            text.append("No group may have more than two courses on the same day.")
        return " ".join(text)

    def solve(self, call: ToolCaller, p):
        c = set(p["constraints"])
        call.note(
            "I load courses, rooms and slots, then assign courses by backtracking, most constrained first."
        )
        courses, rooms, slots = call("list_courses"), call("list_rooms"), call("list_slots")
        away = (
            {
                t: set(call("get_teacher_unavailability", teacher=t))
                for t in sorted({x["teacher"] for x in courses})
            }
            if "unavailable" in c
            else {}
        )
        day = {s["id"]: s["day"] for s in slots}
        courses.sort(key=lambda x: (-x["lab"], -x["size"], x["name"]))
        plan: list[dict] = []

        def fits(course, slot, room):
            return _ok(course, slot, room, plan, c, away, day)

        def place(i):
            if i == len(courses):
                return True
            for s in slots:
                for r in rooms:
                    if fits(courses[i], s["id"], r):
                        plan.append({"course": courses[i], "slot": s["id"], "room": r})
                        if place(i + 1):
                            return True
                        plan.pop()
            return False

        if not place(0):
            return None
        return {
            "schedule": [
                {"course": x["course"]["name"], "slot": x["slot"], "room": x["room"]["name"]} for x in plan
            ]
        }

    def verify(self, initial, final, p, answer):
        sched = need(parse_json_answer(answer), "schedule", list)
        c, checks = set(p["constraints"]), []
        courses = {r["name"]: r for r in rows(initial, "SELECT * FROM courses")}
        rooms = {r["name"]: r for r in rows(initial, "SELECT * FROM rooms")}
        day = {r["id"]: r["day"] for r in rows(initial, "SELECT * FROM slots")}
        items = []
        for i, e in enumerate(sched):
            items.append(
                (
                    need(e, "course", str, f"schedule[{i}]"),
                    need(e, "slot", int, f"schedule[{i}]"),
                    need(e, "room", str, f"schedule[{i}]"),
                )
            )
        names = [x[0] for x in items]
        valid = all(x[0] in courses and x[1] in day and x[2] in rooms for x in items)
        check(
            checks,
            "assignment",
            sorted(names) == sorted(p["courses"]) and valid,
            "every listed course exactly once, with real slots and rooms",
        )
        items = [x for x in items if x[0] in courses and x[2] in rooms and x[1] in day]
        check(
            checks,
            "capacity",
            all(rooms[r]["capacity"] >= courses[n]["size"] for n, s, r in items),
            "a room is too small",
        )
        pairs = lambda key: [(s, key(n, r)) for n, s, r in items]  # noqa: E731
        dup = lambda xs: len(xs) != len(set(xs))  # noqa: E731
        check(checks, "room_clash", not dup(pairs(lambda n, r: r)), "a room hosts two courses in one slot")
        if "teacher_clash" in c:
            check(
                checks,
                "teacher_clash",
                not dup(pairs(lambda n, r: courses[n]["teacher"])),
                "a teacher has two courses in one slot",
            )
            check(
                checks,
                "group_clash",
                not dup(pairs(lambda n, r: courses[n]["grp"])),
                "a group has two courses in one slot",
            )
        if "unavailable" in c:
            away = {(r["teacher"], r["slot"]) for r in rows(initial, "SELECT * FROM unavailable")}
            check(
                checks,
                "unavailable",
                not any((courses[n]["teacher"], s) in away for n, s, r in items),
                "a teacher is unavailable then",
            )
            check(
                checks,
                "lab",
                all(rooms[r]["lab"] or not courses[n]["lab"] for n, s, r in items),
                "a lab course is not in a lab",
            )
        if "per_day" in c:
            load = [(courses[n]["grp"], day[s]) for n, s, r in items]
            check(
                checks,
                "per_day",
                all(load.count(x) <= 2 for x in load),
                "a group has more than two courses in a day",
            )
        return checks

    def mutations(self, initial, p, answer, rng):
        sched = answer["schedule"]
        courses = {r["name"]: r for r in rows(initial, "SELECT * FROM courses")}
        rooms = rows(initial, "SELECT * FROM rooms ORDER BY capacity")
        out = []

        def edit(breaks, fn):
            new = [dict(e) for e in sched]
            if fn(new) is not False:
                out.append(Mutation(breaks, {"schedule": new}))

        edit("assignment", lambda s: s.pop())
        edit("assignment", lambda s: s.append(dict(s[0])))
        edit("assignment", lambda s: s[0].update(room="R999"))
        edit("assignment", lambda s: s[-1].update(slot=99))
        small = [e for e in sched if any(r["capacity"] < courses[e["course"]]["size"] for r in rooms)]
        edit(
            "capacity",
            lambda s: (
                s[sched.index(small[0])].update(
                    room=next(r["name"] for r in rooms if r["capacity"] < courses[small[0]["course"]]["size"])
                )
                if small
                else False
            ),
        )
        edit("room_clash", lambda s: s[1].update(slot=s[0]["slot"], room=s[0]["room"]))
        if "teacher_clash" in p["constraints"]:
            same = [
                (a, b)
                for a in sched
                for b in sched
                if a is not b and courses[a["course"]]["teacher"] == courses[b["course"]]["teacher"]
            ]
            edit(
                "teacher_clash",
                lambda s: (
                    s[sched.index(same[0][1])].update(
                        slot=same[0][0]["slot"],
                        room=next(r["name"] for r in rooms if r["name"] != same[0][0]["room"]),
                    )
                    if same
                    else False
                ),
            )
        return out

    def baseline(self, call: ToolCaller, p, rng: random.Random):
        att = attends(rng, p) | {"assignment"}
        c = set(p["constraints"]) & att
        courses, rooms, slots = call("list_courses"), call("list_rooms"), call("list_slots")
        away = (
            {
                t: set(call("get_teacher_unavailability", teacher=t))
                for t in sorted({x["teacher"] for x in courses})
            }
            if "unavailable" in c
            else {}
        )
        day = {s["id"]: s["day"] for s in slots}
        rng.shuffle(courses)
        plan = []
        for course in courses:
            options = [
                (s["id"], r) for s in slots for r in rooms if _ok(course, s["id"], r, plan, c, away, day)
            ]
            if not options:
                options = [(s["id"], r) for s in slots for r in rooms]
            slot, room = rng.choice(options)
            plan.append({"course": course, "slot": slot, "room": room})
        return {
            "schedule": [
                {"course": x["course"]["name"], "slot": x["slot"], "room": x["room"]["name"]} for x in plan
            ]
        }


def _ok(course, slot, room, plan, c, away, day) -> bool:
    if "capacity" in c and room["capacity"] < course["size"]:
        return False
    if "lab" in c and course["lab"] and not room["lab"]:
        return False
    if "unavailable" in c and slot in away.get(course["teacher"], ()):
        return False
    for x in plan:
        if x["slot"] == slot and (
            "room_clash" in c
            and x["room"]["name"] == room["name"]
            or "teacher_clash" in c
            and x["course"]["teacher"] == course["teacher"]
            or "group_clash" in c
            and x["course"]["grp"] == course["grp"]
        ):
            return False
    if (
        "per_day" in c
        and sum(1 for x in plan if x["course"]["grp"] == course["grp"] and day[x["slot"]] == day[slot]) >= 2
    ):
        return False
    return True
