"""E-commerce orders and returns (writes returns and cancellations).

Ladder: L1 return a given quantity of one item and report the refund; L2 return every eligible
item of a customer's delivered orders under the store policy (adds `get_return_policy`: a return
window and no final-sale items); L3 also cancel every pending order of that customer (cancelling
restocks its items). Refunds are quantity x the price paid.
"""

from __future__ import annotations

import random

from dsv32.envs.categories.base import Category, Mutation, attends, check, need, parse_json_answer, rows
from dsv32.envs.tools import I, S, ToolCaller, ToolError, tool

PRODUCTS = (
    "kettle",
    "headphones",
    "backpack",
    "desk lamp",
    "yoga mat",
    "teapot",
    "keyboard",
    "umbrella",
    "blender",
    "scarf",
)
CUSTOMERS = ("alice", "bing", "carmen", "deng", "elena", "feng")


@tool(
    "get_orders",
    "A customer's orders: id, day placed, status (pending/delivered/cancelled).",
    customer=S("customer id"),
)
def get_orders(ctx, customer):
    return rows(ctx.db, "SELECT id, day, status FROM orders WHERE customer=? ORDER BY id", (customer,))


@tool(
    "get_order",
    "Items of an order: product id, name, quantity, price paid, final-sale flag.",
    order_id=I("order id"),
)
def get_order(ctx, order_id):
    if not rows(ctx.db, "SELECT 1 FROM orders WHERE id=?", (order_id,)):
        raise ToolError(f"no order {order_id}")
    sql = "SELECT i.product_id, p.name, i.qty, i.price, p.final_sale FROM items i JOIN products p ON p.id = i.product_id WHERE i.order_id=?"  # noqa: E501
    return rows(ctx.db, sql + " ORDER BY i.product_id", (order_id,))


@tool(
    "get_return_policy",
    "Today's day number, the return window in days, and whether final-sale items can be returned.",
)
def get_return_policy(ctx):
    return rows(ctx.db, "SELECT today, window_days, 0 AS final_sale_returnable FROM policy")[0]


@tool(
    "create_return",
    "Return a quantity of an item from an order; refunds quantity x price paid.",
    True,
    order_id=I("order id"),
    product_id=I("product id"),
    qty=I("quantity"),
)
def create_return(ctx, order_id, product_id, qty):
    item = rows(
        ctx.db,
        "SELECT i.qty, i.price, o.status FROM items i JOIN orders o ON o.id = i.order_id WHERE i.order_id=? AND i.product_id=?",  # noqa: E501
        (order_id, product_id),
    )
    if not item or item[0]["status"] != "delivered":
        raise ToolError(f"order {order_id} has no delivered product {product_id}")
    done = rows(
        ctx.db,
        "SELECT COALESCE(SUM(qty), 0) AS n FROM returns WHERE order_id=? AND product_id=?",
        (order_id, product_id),
    )[0]["n"]
    if qty < 1 or qty + done > item[0]["qty"]:
        raise ToolError(f"can return at most {item[0]['qty'] - done} of product {product_id}")
    refund = round(qty * item[0]["price"], 2)
    cur = ctx.db.execute(
        "INSERT INTO returns(order_id, product_id, qty, refund) VALUES (?,?,?,?)",
        (order_id, product_id, qty, refund),
    )
    return {"return_id": cur.lastrowid, "refund": refund}


@tool("cancel_order", "Cancel a pending order (its items go back to stock).", True, order_id=I("order id"))
def cancel_order(ctx, order_id):
    found = rows(ctx.db, "SELECT status FROM orders WHERE id=?", (order_id,))
    if not found or found[0]["status"] != "pending":
        raise ToolError(f"order {order_id} is not pending")
    ctx.db.execute("UPDATE orders SET status='cancelled' WHERE id=?", (order_id,))
    for it in rows(ctx.db, "SELECT product_id, qty FROM items WHERE order_id=?", (order_id,)):
        ctx.db.execute("UPDATE products SET stock = stock + ? WHERE id=?", (it["qty"], it["product_id"]))
    return {"cancelled": order_id}


def eligible(db, customer, policy: bool) -> dict[tuple[int, int], tuple[int, float]]:
    """(order, product) -> (qty, price) returnable under the policy (L2+) or merely delivered."""
    today, window = (lambda r: (r["today"], r["window_days"]))(rows(db, "SELECT * FROM policy")[0])
    sql = (
        "SELECT i.order_id, i.product_id, i.qty, i.price, p.final_sale, o.day FROM items i JOIN orders o ON o.id=i.order_id "  # noqa: E501
        "JOIN products p ON p.id=i.product_id WHERE o.customer=? AND o.status='delivered'"
    )
    return {
        (r["order_id"], r["product_id"]): (r["qty"], r["price"])
        for r in rows(db, sql, (customer,))
        if not policy or (not r["final_sale"] and today - r["day"] <= window)
    }


class Ecommerce(Category):
    name = "ecommerce"
    summary = "online-store customer-service"
    max_level = 3
    base_tools = ("get_orders", "get_order", "create_return", "cancel_order")
    answer_format = 'JSON {"refund_total": number} (the sum of refunds you issued)'

    def library(self):
        return [get_orders, get_order, create_return, cancel_order, get_return_policy]

    def build_database(self, db, rng):
        db.executescript("""
            CREATE TABLE products(id INTEGER PRIMARY KEY, name TEXT, price REAL, stock INT, final_sale INT);
            CREATE TABLE orders(id INTEGER PRIMARY KEY, customer TEXT, day INT, status TEXT);
            CREATE TABLE items(order_id INT, product_id INT, qty INT, price REAL);
            CREATE TABLE returns(id INTEGER PRIMARY KEY AUTOINCREMENT, order_id INT, product_id INT, qty INT,
                                 refund REAL);
            CREATE TABLE policy(today INT, window_days INT);""")
        for i, name in enumerate(rng.sample(PRODUCTS, 8)):
            db.execute(
                "INSERT INTO products VALUES (?,?,?,?,?)",
                (i + 1, name, rng.randrange(500, 20000) / 100, rng.randint(0, 30), rng.random() < 0.25),
            )
        today = 100
        db.execute("INSERT INTO policy VALUES (?,?)", (today, rng.choice([14, 30])))
        oid = 1000
        for cust in rng.sample(CUSTOMERS, 4):
            for _ in range(rng.randint(3, 6)):
                oid += rng.randint(1, 7)
                status = rng.choice(["delivered", "delivered", "delivered", "pending", "cancelled"])
                db.execute(
                    "INSERT INTO orders VALUES (?,?,?,?)", (oid, cust, today - rng.randint(0, 60), status)
                )
                for pid in rng.sample(range(1, 9), rng.randint(1, 3)):
                    price = rows(db, "SELECT price FROM products WHERE id=?", (pid,))[0]["price"]
                    db.execute(
                        "INSERT INTO items VALUES (?,?,?,?)",
                        (oid, pid, rng.randint(1, 4), round(price * rng.choice([1, 0.9, 0.8]), 2)),
                    )
        return "products, four customers' orders, a return policy"

    def initial_task(self, db, rng):
        custs = [r["customer"] for r in rows(db, "SELECT DISTINCT customer FROM orders ORDER BY customer")]
        rng.shuffle(custs)
        for cust in custs:
            items = sorted(eligible(db, cust, policy=False))
            if items and eligible(db, cust, policy=True):
                order, product = rng.choice(items)
                qty = rng.randint(1, eligible(db, cust, False)[(order, product)][0])
                return {
                    "level": 1,
                    "customer": cust,
                    "order": order,
                    "product": product,
                    "qty": qty,
                    "constraints": ["returned", "refund_total", "nothing_else"],
                }
        return None

    def harden(self, db, p, rng):
        if p["level"] == 1:
            return dict(
                p, level=2, constraints=["all_eligible", "eligible_only", "full_quantity", "refund_total"]
            )
        pending = rows(db, "SELECT 1 FROM orders WHERE customer=? AND status='pending'", (p["customer"],))
        if p["level"] == 2 and pending:  # cancelling needs a pending order to cancel
            return dict(p, level=3, constraints=p["constraints"] + ["cancel_pending", "others_untouched"])
        return None

    def instruction(self, p):
        if p["level"] == 1:
            return f"Customer {p['customer']} wants to return {p['qty']} unit(s) of product {p['product']} from order {p['order']}. Process it and report the refund; change nothing else."  # noqa: E501
        text = f"Customer {p['customer']} wants to return everything from their delivered orders that the store's return policy allows (full quantities)."  # noqa: E501
        if p["level"] == 3:
            text += " Also cancel every one of their pending orders, and leave other orders alone."
        return text + " Report the total refund."

    def solve(self, call: ToolCaller, p):
        if p["level"] == 1:
            call.note("A single return of the requested quantity; the refund is quantity x price paid.")
            return {
                "refund_total": call(
                    "create_return", order_id=p["order"], product_id=p["product"], qty=p["qty"]
                )["refund"]
            }
        call.note("I need the policy (window and final-sale rule) before deciding what is returnable.")
        policy = call("get_return_policy")
        total = 0.0
        for order in call("get_orders", customer=p["customer"]):
            if order["status"] == "pending" and p["level"] >= 3:
                call("cancel_order", order_id=order["id"])
            if order["status"] != "delivered" or policy["today"] - order["day"] > policy["window_days"]:
                continue
            for item in call("get_order", order_id=order["id"]):
                if not item["final_sale"]:
                    total += call(
                        "create_return", order_id=order["id"], product_id=item["product_id"], qty=item["qty"]
                    )["refund"]
        return {"refund_total": round(total, 2)}

    def verify(self, initial, final, p, answer):
        reported = need(parse_json_answer(answer), "refund_total", (int, float))
        c, checks = set(p["constraints"]), []
        got = {}
        for r in rows(final, "SELECT * FROM returns"):
            got[(r["order_id"], r["product_id"])] = got.get((r["order_id"], r["product_id"]), 0) + r["qty"]
        refunds = rows(final, "SELECT COALESCE(SUM(refund), 0) AS s FROM returns")[0]["s"]
        prices = {(r["order_id"], r["product_id"]): r["price"] for r in rows(initial, "SELECT * FROM items")}
        fair = round(sum(q * prices.get(k, 0) for k, q in got.items()), 2)
        check(
            checks,
            "refund_total",
            abs(reported - fair) < 0.01 and abs(refunds - fair) < 0.01,
            f"reported {reported}, refunds recorded {refunds}, due {fair}",
        )
        if p["level"] == 1:
            check(
                checks,
                "returned",
                got.get((p["order"], p["product"])) == p["qty"],
                f"expected {p['qty']} of product {p['product']} returned from order {p['order']}",
            )
            check(
                checks,
                "nothing_else",
                set(got) <= {(p["order"], p["product"])} and self._orders(initial) == self._orders(final),
                "other changes were made",
            )
            return checks
        want = eligible(initial, p["customer"], policy=True)
        check(checks, "all_eligible", set(want) <= set(got), f"not returned: {sorted(set(want) - set(got))}")
        check(
            checks,
            "eligible_only",
            set(got) <= set(want),
            f"not returnable under the policy: {sorted(set(got) - set(want))}",
        )
        check(
            checks,
            "full_quantity",
            all(got[k] == want[k][0] for k in set(got) & set(want)),
            "partial quantities returned",
        )
        if "cancel_pending" in c:
            before, after = self._orders(initial), self._orders(final)
            mine = {o for o, (cust, st) in before.items() if cust == p["customer"] and st == "pending"}
            check(
                checks,
                "cancel_pending",
                all(after[o][1] == "cancelled" for o in mine),
                "a pending order is still open",
            )
            check(
                checks,
                "others_untouched",
                all(after[o] == before[o] for o in before if o not in mine),
                "other orders changed",
            )
        return checks

    def _orders(self, db):
        return {r["id"]: (r["customer"], r["status"]) for r in rows(db, "SELECT * FROM orders")}

    def mutations(self, initial, p, answer, rng):
        total = answer["refund_total"]
        out = [
            Mutation("refund_total", {"refund_total": total + 1}),
            Mutation(
                "refund_total",
                answer,
                [("UPDATE returns SET refund = refund + 5 WHERE id = (SELECT MIN(id) FROM returns)", ())],
            ),
        ]
        other = rows(
            initial,
            "SELECT i.order_id, i.product_id, i.price FROM items i JOIN orders o ON o.id=i.order_id WHERE o.customer != ? AND o.status='delivered' LIMIT 1",  # noqa: E501
            (p["customer"],),
        )
        if p["level"] == 1:
            out.append(Mutation("returned", {"refund_total": 0}, [("DELETE FROM returns", ())]))
            out.append(
                Mutation(
                    "returned",
                    {"refund_total": round(total * 2, 2)},
                    [("UPDATE returns SET qty = qty * 2, refund = refund * 2", ())],
                )
            )
            out.append(
                Mutation(
                    "nothing_else",
                    answer,
                    [
                        (
                            "UPDATE orders SET status='cancelled' WHERE id = (SELECT MAX(id) FROM orders WHERE status='pending')",  # noqa: E501
                            (),
                        )
                    ],
                )
            )
            return out
        want = eligible(initial, p["customer"], policy=True)
        loose = sorted(set(eligible(initial, p["customer"], policy=False)) - set(want))
        first = min(want) if want else None
        if first:
            price = want[first][1] * want[first][0]
            out.append(
                Mutation(
                    "all_eligible",
                    {"refund_total": round(total - price, 2)},
                    [("DELETE FROM returns WHERE order_id=? AND product_id=?", first)],
                )
            )
            if want[first][0] > 1:
                out.append(
                    Mutation(
                        "full_quantity",
                        {"refund_total": round(total - want[first][1], 2)},
                        [
                            (
                                "UPDATE returns SET qty = qty - 1, refund = round(refund - ?, 2) WHERE order_id=? AND product_id=?",  # noqa: E501
                                (want[first][1], *first),
                            )
                        ],
                    )
                )
        for key in loose[:1] + [(o["order_id"], o["product_id"]) for o in other]:
            price = rows(initial, "SELECT price FROM items WHERE order_id=? AND product_id=?", key)[0][
                "price"
            ]
            out.append(
                Mutation(
                    "eligible_only",
                    {"refund_total": round(total + price, 2)},
                    [
                        (
                            "INSERT INTO returns(order_id, product_id, qty, refund) VALUES (?,?,1,?)",
                            (*key, price),
                        )
                    ],
                )
            )
        if "cancel_pending" in p["constraints"]:
            pending = rows(
                initial,
                "SELECT MIN(id) AS id FROM orders WHERE status='pending' AND customer=?",
                (p["customer"],),
            )[0]["id"]
            out.append(
                Mutation(
                    "cancel_pending", answer, [("UPDATE orders SET status='pending' WHERE id=?", (pending,))]
                )
            )
            out.append(
                Mutation(
                    "others_untouched",
                    answer,
                    [
                        (
                            "UPDATE orders SET status='cancelled' WHERE id = (SELECT MIN(id) FROM orders WHERE customer != ? AND status='delivered')",  # noqa: E501
                            (p["customer"],),
                        )
                    ],
                )
            )
        return out

    def baseline(self, call: ToolCaller, p, rng: random.Random):
        att = attends(rng, p)
        if p["level"] == 1:
            qty = p["qty"] if "returned" in att else rng.randint(1, p["qty"] + 1)
            try:
                return {
                    "refund_total": call(
                        "create_return", order_id=p["order"], product_id=p["product"], qty=qty
                    )["refund"]
                }
            except ToolError:
                return None
        policy = call("get_return_policy")
        total = 0.0
        for order in call("get_orders", customer=p["customer"]):
            if order["status"] == "pending" and "cancel_pending" in att:
                call("cancel_order", order_id=order["id"])
            if order["status"] != "delivered":
                continue
            if "eligible_only" in att and policy["today"] - order["day"] > policy["window_days"]:
                continue
            for item in call("get_order", order_id=order["id"]):
                if item["final_sale"] and "eligible_only" in att:
                    continue
                if "all_eligible" not in att and rng.random() < 0.3:
                    continue
                qty = item["qty"] if "full_quantity" in att else 1
                total += call("create_return", order_id=order["id"], product_id=item["product_id"], qty=qty)[
                    "refund"
                ]
        return {"refund_total": round(total, 2)}
