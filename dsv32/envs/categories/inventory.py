"""Inventory: bring a warehouse back to its reorder points (writes transfers and purchase orders).

Ladder: L1 one SKU below its minimum, fixed by transfers that leave every source at or above its
own minimum; L2 every SKU below minimum at the warehouse, each topped up exactly to its minimum;
L3 one SKU has no spare stock anywhere and must be bought (adds `list_suppliers` and
`create_purchase_order`), transfers first; L4 purchases from the cheapest supplier that delivers
within the lead-time limit.
"""

from __future__ import annotations

import random

from dsv32.envs.categories.base import Category, Mutation, attends, check, rows
from dsv32.envs.tools import I, S, ToolCaller, ToolError, tool

SKUS = ("bolt-m6", "nut-m6", "washer", "hinge", "bracket", "spring", "gasket", "valve", "pulley", "clamp")
SITES = ("Hangzhou", "Ningbo", "Wenzhou", "Jiaxing")


@tool("get_stock", "Stock at a warehouse: sku, quantity, minimum (reorder point).", warehouse=S("warehouse"))
def get_stock(ctx, warehouse):
    return rows(ctx.db, "SELECT sku, qty, min_qty FROM stock WHERE warehouse=? ORDER BY sku", (warehouse,))


@tool("list_warehouses", "All warehouses.")
def list_warehouses(ctx):
    return [r["warehouse"] for r in rows(ctx.db, "SELECT DISTINCT warehouse FROM stock ORDER BY warehouse")]


@tool(
    "transfer_stock",
    "Move units of a sku between warehouses.",
    True,
    sku=S("sku"),
    source=S("from"),
    dest=S("to"),
    qty=I("units"),
)
def transfer_stock(ctx, sku, source, dest, qty):
    have = rows(ctx.db, "SELECT qty FROM stock WHERE warehouse=? AND sku=?", (source, sku))
    if (
        qty < 1
        or not have
        or have[0]["qty"] < qty
        or not rows(ctx.db, "SELECT 1 FROM stock WHERE warehouse=? AND sku=?", (dest, sku))
    ):
        raise ToolError(f"cannot move {qty} {sku} from {source} to {dest}")
    ctx.db.execute("UPDATE stock SET qty = qty - ? WHERE warehouse=? AND sku=?", (qty, source, sku))
    ctx.db.execute("UPDATE stock SET qty = qty + ? WHERE warehouse=? AND sku=?", (qty, dest, sku))
    ctx.db.execute("INSERT INTO transfers(sku, source, dest, qty) VALUES (?,?,?,?)", (sku, source, dest, qty))
    return {"moved": qty}


@tool("list_suppliers", "Suppliers of a sku: name, unit cost, lead time in days.", sku=S("sku"))
def list_suppliers(ctx, sku):
    return rows(
        ctx.db, "SELECT supplier, unit_cost, lead_days FROM suppliers WHERE sku=? ORDER BY supplier", (sku,)
    )


@tool(
    "create_purchase_order",
    "Order units of a sku from a supplier for a warehouse (counts toward stock).",
    True,
    sku=S("sku"),
    supplier=S("supplier"),
    warehouse=S("warehouse"),
    qty=I("units"),
)
def create_purchase_order(ctx, sku, supplier, warehouse, qty):
    sup = rows(ctx.db, "SELECT unit_cost FROM suppliers WHERE sku=? AND supplier=?", (sku, supplier))
    if not sup or qty < 1:
        raise ToolError(f"{supplier!r} does not supply {sku!r} (or qty < 1)")
    ctx.db.execute("UPDATE stock SET qty = qty + ? WHERE warehouse=? AND sku=?", (qty, warehouse, sku))
    cur = ctx.db.execute(
        "INSERT INTO purchases(sku, supplier, warehouse, qty, cost) VALUES (?,?,?,?,?)",
        (sku, supplier, warehouse, qty, qty * sup[0]["unit_cost"]),
    )
    return {"po_id": cur.lastrowid}


class Inventory(Category):
    name = "inventory"
    summary = "warehouse-inventory"
    max_level = 4
    base_tools = ("get_stock", "list_warehouses", "transfer_stock")
    answer_format = 'JSON {"done": true} once the stock changes are made (the database state is graded)'

    def library(self):
        return [get_stock, list_warehouses, transfer_stock, list_suppliers, create_purchase_order]

    def build_database(self, db, rng):
        db.executescript("""CREATE TABLE stock(warehouse TEXT, sku TEXT, qty INT, min_qty INT, PRIMARY KEY(warehouse, sku));
            CREATE TABLE suppliers(sku TEXT, supplier TEXT, unit_cost REAL, lead_days INT);
            CREATE TABLE transfers(id INTEGER PRIMARY KEY AUTOINCREMENT, sku TEXT, source TEXT, dest TEXT, qty INT);
            CREATE TABLE purchases(id INTEGER PRIMARY KEY AUTOINCREMENT, sku TEXT, supplier TEXT, warehouse TEXT, qty INT, cost REAL);""")  # noqa: E501
        skus, sites = rng.sample(SKUS, 6), rng.sample(SITES, 3)
        scarce = skus[-1]  # nobody has spare units of this one
        for site in sites:
            for sku in skus:
                low = rng.randint(10, 40)
                qty = low + (rng.randint(-low // 2, 60) if sku != scarce else rng.randint(-low // 2, 0))
                db.execute("INSERT INTO stock VALUES (?,?,?,?)", (site, sku, max(qty, 0), low))
            for sku in skus:
                for name in rng.sample(["Acme", "Bolton", "Zhou Ltd", "Fastparts"], 2):
                    db.execute(
                        "INSERT INTO suppliers VALUES (?,?,?,?)",
                        (sku, name, rng.randrange(20, 400) / 100, rng.randint(1, 14)),
                    )
        return f"{len(sites)} warehouses x {len(skus)} SKUs with reorder points and suppliers"

    def _short(self, db, site):
        return [
            r
            for r in rows(
                db,
                "SELECT sku, qty, min_qty FROM stock WHERE warehouse=? AND qty < min_qty ORDER BY sku",
                (site,),
            )
        ]

    def _spare(self, db, sku, site):
        return sum(
            max(r["qty"] - r["min_qty"], 0)
            for r in rows(db, "SELECT qty, min_qty FROM stock WHERE sku=? AND warehouse!=?", (sku, site))
        )

    def initial_task(self, db, rng):
        for site in [
            r["warehouse"] for r in rows(db, "SELECT DISTINCT warehouse FROM stock ORDER BY warehouse")
        ]:
            coverable = [
                r for r in self._short(db, site) if self._spare(db, r["sku"], site) >= r["min_qty"] - r["qty"]
            ]
            if coverable:
                return {
                    "level": 1,
                    "warehouse": site,
                    "skus": [rng.choice(coverable)["sku"]],
                    "lead_limit": None,
                    "constraints": ["at_minimum", "sources_ok", "only_needed"],
                }
        return None

    def harden(self, db, p, rng):
        site, level = p["warehouse"], p["level"] + 1
        short = self._short(db, site)
        coverable = [r["sku"] for r in short if self._spare(db, r["sku"], site) >= r["min_qty"] - r["qty"]]
        if level == 2:
            return (
                dict(p, level=2, skus=coverable, constraints=p["constraints"] + ["exact"])
                if len(coverable) > 1
                else None
            )
        if level == 3:
            return (
                dict(
                    p,
                    level=3,
                    skus=[r["sku"] for r in short],
                    constraints=p["constraints"] + ["transfers_first"],
                )
                if len(short) > len(coverable)
                else None
            )
        if level == 4:
            return dict(
                p,
                level=4,
                lead_limit=rng.choice([7, 10]),
                constraints=p["constraints"] + ["cheapest_supplier"],
            )
        return None

    def instruction(self, p):
        c = set(p["constraints"])
        text = [
            f"At warehouse {p['warehouse']}, bring {', '.join(p['skus'])} up to their reorder points by transferring spare units from other warehouses;",  # noqa: E501
            "never take a source below its own reorder point, and move only what is needed.",
        ]
        if "exact" in c:
            text.append("End exactly at each reorder point.")
        if "transfers_first" in c:
            text.append(
                "Where transfers cannot cover the gap, buy the rest with a purchase order for that warehouse."
            )
        if "cheapest_supplier" in c:
            text.append(f"Buy from the cheapest supplier that delivers within {p['lead_limit']} days.")
        return " ".join(text)

    def solve(self, call: ToolCaller, p):
        c, site = set(p["constraints"]), p["warehouse"]
        call.note(
            "I compare each SKU with its reorder point, take spare units from other warehouses, and buy any remainder."  # noqa: E501
        )
        here = {r["sku"]: r for r in call("get_stock", warehouse=site)}
        others = {
            w: {r["sku"]: r for r in call("get_stock", warehouse=w)}
            for w in call("list_warehouses")
            if w != site
        }
        for sku in p["skus"]:
            gap = here[sku]["min_qty"] - here[sku]["qty"]
            for w, stock in others.items():
                move = min(gap, max(stock[sku]["qty"] - stock[sku]["min_qty"], 0))
                if move > 0:
                    call("transfer_stock", sku=sku, source=w, dest=site, qty=move)
                    gap -= move
            if gap > 0:
                sups = call("list_suppliers", sku=sku)
                if "cheapest_supplier" in c:
                    sups = [s for s in sups if s["lead_days"] <= p["lead_limit"]]
                if not sups:
                    return None
                best = min(sups, key=lambda s: (s["unit_cost"], s["supplier"]))
                call("create_purchase_order", sku=sku, supplier=best["supplier"], warehouse=site, qty=gap)
        return {"done": True}

    def verify(self, initial, final, p, answer):
        c, checks, site = set(p["constraints"]), [], p["warehouse"]
        before = {(r["warehouse"], r["sku"]): r for r in rows(initial, "SELECT * FROM stock")}
        after = {(r["warehouse"], r["sku"]): r for r in rows(final, "SELECT * FROM stock")}
        low = [s for s in p["skus"] if after[(site, s)]["qty"] < after[(site, s)]["min_qty"]]
        check(checks, "at_minimum", not low, f"still below the reorder point: {low}")
        drained = [
            k for k, r in after.items() if k[0] != site and r["qty"] < min(r["min_qty"], before[k]["qty"])
        ]
        check(checks, "sources_ok", not drained, f"sources taken below their reorder point: {drained}")
        touched = {k for k in after if after[k]["qty"] != before[k]["qty"]}
        check(checks, "only_needed", all(k[1] in p["skus"] for k in touched), "stock of other SKUs changed")
        if "exact" in c:
            off = [s for s in p["skus"] if after[(site, s)]["qty"] != after[(site, s)]["min_qty"]]
            check(checks, "exact", not off, f"not exactly at the reorder point: {off}")
        buys = rows(final, "SELECT * FROM purchases")
        if "transfers_first" in c:
            spare_left = [b["sku"] for b in buys if self._spare(final, b["sku"], site) > 0]
            check(
                checks,
                "transfers_first",
                not spare_left,
                f"bought {spare_left} while spare units remained elsewhere",
            )
        if "cheapest_supplier" in c:
            bad = []
            for b in buys:
                ok = [
                    s
                    for s in rows(
                        initial,
                        "SELECT * FROM suppliers WHERE sku=? AND lead_days<=?",
                        (b["sku"], p["lead_limit"]),
                    )
                ]
                if (
                    not ok
                    or b["supplier"] != min(ok, key=lambda s: (s["unit_cost"], s["supplier"]))["supplier"]
                ):
                    bad.append(b["sku"])
            check(
                checks,
                "cheapest_supplier",
                not bad,
                f"not the cheapest supplier within {p['lead_limit']} days: {bad}",
            )
        return checks

    def mutations(self, initial, p, answer, rng):
        site, sku = p["warehouse"], p["skus"][0]
        upd = "UPDATE stock SET qty = qty + ? WHERE warehouse=? AND sku=?"
        other = rows(
            initial,
            "SELECT warehouse FROM stock WHERE sku=? AND warehouse!=? ORDER BY warehouse",
            (sku, site),
        )[0]["warehouse"]
        spare_sku = rows(
            initial,
            f"SELECT sku FROM stock WHERE warehouse=? AND sku NOT IN ({','.join('?' * len(p['skus']))}) LIMIT 1",  # noqa: E501
            (site, *p["skus"]),
        )[0]["sku"]
        out = [
            Mutation("at_minimum", answer, [(upd, (-1, site, sku))]),
            Mutation("at_minimum", answer, [(upd, (-5, site, p["skus"][-1]))]),
            Mutation(
                "sources_ok", answer, [("UPDATE stock SET qty = 0 WHERE warehouse=? AND sku=?", (other, sku))]
            ),
            Mutation("only_needed", answer, [(upd, (3, site, spare_sku))]),
            Mutation("only_needed", answer, [(upd, (-1, other, spare_sku)), (upd, (1, site, spare_sku))]),
        ]
        if "exact" in p["constraints"]:
            out.append(Mutation("exact", answer, [(upd, (1, site, sku))]))
        return out

    def baseline(self, call: ToolCaller, p, rng: random.Random):
        att, site = attends(rng, p), p["warehouse"]
        here = {r["sku"]: r for r in call("get_stock", warehouse=site)}
        for sku in p["skus"]:
            gap = here[sku]["min_qty"] - here[sku]["qty"] + (0 if "exact" in att else rng.randint(0, 5))
            for w in rng.sample(call("list_warehouses"), len(call("list_warehouses"))):
                if w == site or gap <= 0:
                    continue
                row = {r["sku"]: r for r in call("get_stock", warehouse=w)}[sku]
                limit = row["qty"] - row["min_qty"] if "sources_ok" in att else row["qty"]
                move = min(gap, max(limit, 0))
                if move > 0:
                    call("transfer_stock", sku=sku, source=w, dest=site, qty=move)
                    gap -= move
            if gap > 0 and "list_suppliers" in call.toolset:
                sups = call("list_suppliers", sku=sku)
                if "cheapest_supplier" in att and p["lead_limit"]:
                    sups = [s for s in sups if s["lead_days"] <= p["lead_limit"]] or sups
                pick = (
                    min(sups, key=lambda s: (s["unit_cost"], s["supplier"]))
                    if "cheapest_supplier" in att
                    else rng.choice(sups)
                )
                call("create_purchase_order", sku=sku, supplier=pick["supplier"], warehouse=site, qty=gap)
        return {"done": True}
