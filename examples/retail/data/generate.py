#!/usr/bin/env python3
"""Generates the sample data of the retail example: deterministic, standard library only.

    python3 data/generate.py        # from examples/retail/, rewrites data/*.csv

The data spans 2024-06-01 .. 2024-12-31; the example's as-of time is 2024-12-01 00:00:00, so
December lies in the "future" and must never show up in values computed for the as-of time.

CSV conventions: a header row; timestamps `2024-11-03 14:22:05` (UTC); dates `1990-05-17`;
an empty field is null; a list is a JSON array in one field (`["SHOES-1042","SOCKS-0007"]`);
a duration is a duration literal (`95s`).

Deliberate edge cases (see README.md for the full list and what each one tests):
  * C0007 and C0031 are one person with two accounts whose emails differ only in case and
    spaces: their profiles merge through the normalized email.
  * C0044 checks out with C0012's email: the two profiles merge through an order.
  * C0015 and a few others have emails with upper case and surrounding spaces.
  * C0020..C0024 have emails that identify nobody: "test@example.com", " TEST@Example.com ",
    "null", "   " (blank after trim) and null. They must not merge with each other.
  * C0010 browses with 12 cookies: only 10 may link (`max 10 per profile`).
  * cookie CK-FAMILY-TABLET is used to sign up to the newsletter with three emails of
    different people: only two may link (`max 2 per profile`).
  * 25 anonymous cookies never carry a customer id or email.
  * Events sit exactly on window edges (T, T - 12h, T - 1d, T - 7d, T - 30d, T - 90d) and
    one second after T.
  * Some orders have a null amount; refunds are rows with negative amounts.
  * Some web events carry the customer id in lower case (normalized by `upper(trim(...))`).
"""

import csv
import json
import os
import random
from datetime import date, datetime, timedelta

SEED = 20241201
AS_OF = datetime(2024, 12, 1, 0, 0, 0)
START = datetime(2024, 6, 1, 0, 0, 0)
END = datetime(2024, 12, 31, 23, 59, 59)
HERE = os.path.dirname(os.path.abspath(__file__))

rng = random.Random(SEED)

FIRST = ["Anna", "Ben", "Clara", "David", "Elif", "Felix", "Greta", "Hannah", "Ivan", "Julia",
         "Karim", "Lea", "Max", "Nina", "Oskar", "Paula", "Quentin", "Rosa", "Sven", "Tara",
         "Umut", "Vera", "Willem", "Xenia", "Yusuf", "Zoe", "Lukas", "Mia", "Noah", "Emma"]
LAST = ["Schmidt", "Meyer", "Fischer", "Weber", "Wagner", "Becker", "Hoffmann", "Koch",
        "Richter", "Klein", "Wolf", "Neumann", "Schwarz", "Braun", "Zimmermann", "Hartmann",
        "Dupont", "Martin", "de Vries", "Jansen", "Smith", "Brown", "Rossi", "Novak"]
DOMAINS = ["gmail.com", "web.de", "gmx.de", "outlook.com", "yahoo.com", "posteo.de",
           "acme-corp.de", "bluewin.ch"]
COUNTRIES = ["DE"] * 16 + ["AT"] * 4 + ["CH"] * 4 + ["FR"] * 4 + ["NL"] * 3 + ["US"] * 3 \
    + ["GB"] * 3 + [None] * 3
CATEGORIES = ["shoes", "apparel", "accessories", "outdoor", "kids", "luxury", "clearance"]
UTM = ["google", "google", "instagram", "newsletter", "newsletter_black_friday", "idealo", None,
       None, None]
SKUS = {c: [f"{c[:5].upper()}-{n:04d}" for n in rng.sample(range(1, 9999), 12)]
        for c in CATEGORIES}


def ts(t):
    return t.strftime("%Y-%m-%d %H:%M:%S")


def rand_time(lo, hi):
    """A whole-second time in [lo, hi]."""
    span = int((hi - lo).total_seconds())
    return lo + timedelta(seconds=rng.randint(0, max(span, 0)))


def money(x):
    return f"{x:.2f}"


# ------------------------------------------------------------------------------ customers

# Spending profile per customer: vip, regular, occasional, churned (stopped in summer), none.
KINDS = (["vip"] * 5 + ["regular"] * 18 + ["occasional"] * 12 + ["churned"] * 8 + ["none"] * 7)
rng.shuffle(KINDS)

customers = []
for i in range(1, 51):
    cid = f"C{i:04d}"
    first = FIRST[(i * 7) % len(FIRST)]
    last = LAST[(i * 5) % len(LAST)]
    local = f"{first}.{last}".lower().replace(" ", "")
    email = f"{local}@{rng.choice(DOMAINS)}"
    signup = rand_time(datetime(2021, 3, 1), datetime(2024, 11, 20))
    birth = date(1950, 1, 1) + timedelta(days=rng.randint(0, 57 * 365))
    customers.append({
        "customer_id": cid,
        "email": email,
        "first_name": first,
        "country": rng.choice(COUNTRIES),
        "birth_date": birth.isoformat() if rng.random() > 0.1 else "",
        "signup_at": signup,
        "marketing_opt_in": "true" if rng.random() > 0.12 else "false",
        "kind": KINDS[i - 1],
    })
by_id = {c["customer_id"]: c for c in customers}


def patch(cid, **kw):
    by_id[cid].update(kw)


# One person, two accounts: the emails differ only in case and spaces.
patch("C0007", first_name="Anna", email="Anna.Schmidt@web.de", kind="regular",
      signup_at=datetime(2022, 4, 2, 9, 15, 0))
patch("C0031", first_name="Anna", email=" anna.schmidt@WEB.DE ", kind="occasional",
      signup_at=datetime(2024, 7, 19, 20, 1, 44))
# ... and she moved: `country latest by signup_at` must say AT.
patch("C0007", country="DE", birth_date="1998-05-17")
patch("C0031", country="AT", birth_date="1998-05-17")
# Upper case and spaces, but one person.
patch("C0015", email="  Julia.Meyer@GMAIL.COM", first_name="Julia")
patch("C0026", email="Ben.Braun@Outlook.com ", first_name="Ben")
patch("C0038", email="MIA.NOVAK@POSTEO.DE", first_name="Mia")
patch("C0009", email="clara.richter@gmx.de", first_name="Clara")
# Plus addressing.
patch("C0033", email="max.weber+shop@gmail.com", first_name="Max")
# Values that identify nobody.
patch("C0020", email="test@example.com")
patch("C0021", email=" TEST@Example.com ")
patch("C0022", email="null")
patch("C0023", email="   ")
patch("C0024", email="")
# Ages on the edge: 18 exactly at the as-of date, and a minor.
patch("C0027", birth_date="2006-12-01")
patch("C0028", birth_date="2007-12-15")
# Signups around the 7-day window edge, and after the as-of time.
patch("C0048", signup_at=datetime(2024, 11, 24, 0, 0, 0), kind="occasional")
patch("C0049", signup_at=datetime(2024, 11, 24, 0, 0, 1), kind="none")
patch("C0046", signup_at=datetime(2024, 11, 29, 18, 30, 0), kind="occasional")
patch("C0050", signup_at=datetime(2024, 12, 5, 10, 0, 0), kind="occasional")
# Signed up exactly one year before the as-of time.
patch("C0003", signup_at=datetime(2023, 12, 1, 0, 0, 0))
# VIPs in DACH with long histories.
for cid in ("C0002", "C0005", "C0011"):
    patch(cid, kind="vip", country="DE", signup_at=datetime(2022, 1, 10, 12, 0, 0))
# A heavy browser with twelve cookies.
patch("C0010", kind="regular")

with open(os.path.join(HERE, "customers.csv"), "w", newline="") as f:
    w = csv.writer(f, lineterminator="\n")
    w.writerow(["customer_id", "email", "first_name", "country", "birth_date", "signup_at",
                "marketing_opt_in"])
    for c in customers:
        w.writerow([c["customer_id"], c["email"], c["first_name"], c["country"] or "",
                    c["birth_date"], ts(c["signup_at"]), c["marketing_opt_in"]])

# ------------------------------------------------------------------------------ orders

ORDER_COUNTS = {"vip": (14, 20), "regular": (5, 9), "occasional": (1, 4), "churned": (2, 5),
                "none": (0, 0)}
AMOUNT = {"vip": 140.0, "regular": 60.0, "occasional": 45.0, "churned": 55.0, "none": 0.0}

orders = []
order_no = 1000


def next_order_id():
    global order_no
    order_no += 1
    return f"O{order_no}"


def basket(favorite):
    n = rng.choice([1, 1, 1, 2, 2, 3, 4])
    items = []
    for _ in range(n):
        cat = favorite if rng.random() < 0.6 else rng.choice(CATEGORIES)
        items.append(rng.choice(SKUS[cat]))
    if rng.random() < 0.04:
        items.append("GIFT-CARD")
    return items


def add_order(c, when, status="completed", amount="auto", items="auto", email="auto",
              order_id=None):
    if items == "auto":
        items = basket(c["favorite"])
    if amount == "auto":
        base = AMOUNT[c["kind"]] or 40.0
        amount = money(max(4.99, rng.lognormvariate(0, 0.55) * base))
    if email == "auto":
        email = c["email"] if rng.random() < 0.85 else ""
    row = {
        "order_id": order_id or next_order_id(),
        "order_ts": when,
        "customer_id": c["customer_id"],
        "email": email,
        "amount": amount,
        "status": status,
        "items": json.dumps(items, separators=(",", ":")) if items is not None else "",
        "item_count": str(len(items)) if items is not None else "",
    }
    orders.append(row)
    return row


for c in customers:
    c["favorite"] = rng.choice(CATEGORIES[:6])
    lo, hi = ORDER_COUNTS[c["kind"]]
    n = rng.randint(lo, hi)
    first_possible = max(START, c["signup_at"])
    last_possible = datetime(2024, 8, 20) if c["kind"] == "churned" else END
    if first_possible >= last_possible:
        continue
    for _ in range(n):
        # A Black Friday bump: some orders land on 2024-11-29.
        if c["kind"] != "churned" and rng.random() < 0.06 and first_possible < datetime(2024, 11, 29):
            when = rand_time(datetime(2024, 11, 29, 6, 0, 0), datetime(2024, 11, 29, 23, 0, 0))
        else:
            when = rand_time(first_possible, last_possible)
        r = rng.random()
        if r < 0.80:
            row = add_order(c, when)
            if rng.random() < 0.06:
                refund_at = when + timedelta(days=rng.randint(3, 14), seconds=rng.randint(0, 80000))
                add_order(c, refund_at, status="refunded", amount="-" + row["amount"],
                          items=None, email="", order_id="R" + row["order_id"][1:])
        elif r < 0.88:
            add_order(c, when, status="cancelled")
        else:
            # Pending orders are not priced yet.
            add_order(c, when, status="pending", amount="")

# Completed orders with a null amount (data bug upstream): sums and averages skip them.
add_order(by_id["C0005"], datetime(2024, 10, 3, 11, 12, 13), amount="")
add_order(by_id["C0013"], datetime(2024, 11, 12, 16, 40, 2), amount="")
# Window edges for `over 30d` at T = 2024-12-01 00:00:00: excluded at T - 30d, included at T,
# excluded one second after T.
add_order(by_id["C0002"], datetime(2024, 11, 1, 0, 0, 0), amount="120.00")
add_order(by_id["C0002"], datetime(2024, 12, 1, 0, 0, 0), amount="80.00")
add_order(by_id["C0002"], datetime(2024, 12, 1, 0, 0, 1), amount="999.99")
# One second inside the 30-day window.
add_order(by_id["C0011"], datetime(2024, 11, 1, 0, 0, 1), amount="150.00")
# Two purchases at the same instant: first/last break the tie by value.
add_order(by_id["C0005"], datetime(2024, 11, 20, 10, 0, 0), amount="30.00",
          items=["SHOES-0001"])
add_order(by_id["C0005"], datetime(2024, 11, 20, 10, 0, 0), amount="35.00",
          items=["APPAR-0002"])
# C0044 checks out with C0012's email (mixed case): the two profiles merge.
add_order(by_id["C0044"], datetime(2024, 9, 14, 19, 5, 31), amount="64.90",
          email=by_id["C0012"]["email"].upper())
# Customer ids in lower case with spaces in the order feed.
add_order(by_id["C0017"], datetime(2024, 10, 21, 8, 30, 0), amount="42.00")
orders[-1]["customer_id"] = " c0017"
# A guest checkout email different from the account's: a second email for the profile.
add_order(by_id["C0009"], datetime(2024, 9, 30, 13, 2, 11), amount="25.50",
          email="c.richter.work@acme-corp.de")
# A gift-card purchase right before the as-of time.
add_order(by_id["C0019"], datetime(2024, 11, 30, 21, 14, 9), amount="50.00",
          items=["GIFT-CARD"])

# ------------------------------------------------------------------------------ web events

web = []
cookie_no = 0


def new_cookie():
    global cookie_no
    cookie_no += 1
    return f"CK-{rng.getrandbits(32):08x}-{cookie_no:03d}"


def event(t, cookie, name, customer_id="", email="", category=None, utm=None):
    if name == "page":
        cat = category or rng.choice(CATEGORIES)
        url = f"https://shop.example.com/{cat}/{rng.choice(SKUS[cat]).lower()}"
        depth = f"{rng.random():.2f}"
        dwell = f"{rng.randint(3, 240)}s"
    else:
        cat = None
        url = {"view_cart": "https://shop.example.com/cart",
               "add_to_cart": "https://shop.example.com/cart/add",
               "checkout": "https://shop.example.com/checkout"}[name]
        depth = ""
        dwell = ""
    web.append({
        "ts": t, "cookie_id": cookie, "customer_id": customer_id, "email": email,
        "event": name, "url": url, "category": cat or "", "utm-source": utm or "",
        "scroll_depth": depth, "time_on_page": dwell,
    })


def session(start, cookie, customer_id="", favorite=None, cart=0.3, checkout_at=None,
            email_once=""):
    """A visit: a few page views, maybe a cart; `checkout_at` ends it with a checkout."""
    utm = rng.choice(UTM)
    t = start
    pages = rng.randint(1, 5)
    for p in range(pages):
        cat = favorite if favorite and rng.random() < 0.5 else None
        cid = customer_id if customer_id and rng.random() < 0.95 else ""
        if cid and rng.random() < 0.06:
            cid = cid.lower()
        event(t, cookie, "page", cid, email_once if p == 0 else "", cat, utm if p == 0 else None)
        t += timedelta(seconds=rng.randint(8, 200))
    if checkout_at is not None or rng.random() < cart:
        event(t, cookie, "add_to_cart", customer_id)
        t += timedelta(seconds=rng.randint(5, 120))
        event(t, cookie, "view_cart", customer_id)
        t += timedelta(seconds=rng.randint(5, 300))
        if checkout_at is not None:
            event(max(t, checkout_at), cookie, "checkout", customer_id)


SESSIONS = {"vip": (6, 10), "regular": (3, 6), "occasional": (1, 3), "churned": (1, 3),
            "none": (1, 2)}
for c in customers:
    cid = c["customer_id"]
    n_cookies = 12 if cid == "C0010" else rng.choice([1, 1, 2, 2, 3])
    c["cookies"] = [new_cookie() for _ in range(n_cookies)]
    lo = max(START, c["signup_at"] - timedelta(days=10))
    if lo >= END:
        continue
    for k in range(rng.randint(*SESSIONS[c["kind"]])):
        cookie = c["cookies"][k % n_cookies] if k < n_cookies else rng.choice(c["cookies"])
        logged_in = rng.random() < 0.55
        session(rand_time(lo, END), cookie, cid if logged_in else "", c["favorite"])
    if cid == "C0010":
        for k, cookie in enumerate(c["cookies"]):
            session(datetime(2024, 7, 1, 9, 0, 0) + timedelta(days=7 * k, hours=k), cookie, cid,
                    c["favorite"], cart=0)

# A checkout session before most completed orders.
for o in orders:
    if o["status"] == "completed" and rng.random() < 0.5:
        c = by_id[o["customer_id"].strip().upper()]
        start = o["order_ts"] - timedelta(minutes=rng.randint(6, 25))
        session(start, rng.choice(c["cookies"]), c["customer_id"], c["favorite"],
                checkout_at=o["order_ts"] - timedelta(seconds=30))

# Anonymous visitors: cookies that never log in or leave an email.
for _ in range(25):
    cookie = new_cookie()
    for _ in range(rng.randint(1, 3)):
        session(rand_time(START, END), cookie, cart=0.15)

# A family tablet used to sign up to the newsletter with three people's emails.
tablet = "CK-FAMILY-TABLET"
for k, cid in enumerate(["C0036", "C0037", "C0039"]):
    session(datetime(2024, 10, 5 + k, 18, 0, 0), tablet,
            email_once=by_id[cid]["email"].strip())

# An anonymous visitor who months later leaves C0041's email in a form (upper case, spaces):
# the cookie's earlier, anonymous history joins C0041's profile.
late_known = new_cookie()
session(datetime(2024, 8, 3, 14, 0, 0), late_known, cart=0)
session(datetime(2024, 8, 17, 9, 30, 0), late_known, cart=0)
session(datetime(2024, 10, 9, 20, 15, 0), late_known, cart=0,
        email_once="  " + by_id["C0041"]["email"].upper())

# The shoe funnel: shoe page, add to cart within 30 minutes, purchase within a day.
c = by_id["C0014"]
event(datetime(2024, 11, 18, 20, 0, 0), c["cookies"][0], "page", "C0014", category="shoes")
event(datetime(2024, 11, 18, 20, 12, 0), c["cookies"][0], "add_to_cart", "C0014")
event(datetime(2024, 11, 18, 20, 13, 0), c["cookies"][0], "view_cart", "C0014")
add_order(c, datetime(2024, 11, 19, 7, 45, 0), amount="89.00", items=["SHOES-0042"])

# Cart abandonment on the edges of `did cart_view then not purchase within 1d`:
# C0016 viewed the cart exactly at T - 1d (the day has fully passed at T: abandoned);
# C0018 viewed it at T - 1d + 1s (the day has not passed yet: not abandoned at T);
# C0025 viewed it, then bought within the day (not abandoned).
event(datetime(2024, 11, 30, 0, 0, 0), by_id["C0016"]["cookies"][0], "view_cart", "C0016")
event(datetime(2024, 11, 30, 0, 0, 1), by_id["C0018"]["cookies"][0], "view_cart", "C0018")
event(datetime(2024, 11, 28, 15, 0, 0), by_id["C0025"]["cookies"][0], "view_cart", "C0025")
add_order(by_id["C0025"], datetime(2024, 11, 28, 22, 10, 0), amount="71.30")

# Page views on the edges of `over 12h` and `over 7d`, and after T.
ck = by_id["C0004"]["cookies"][0]
event(datetime(2024, 11, 30, 12, 0, 0), ck, "page", "C0004", category="outdoor")  # T - 12h: out
event(datetime(2024, 11, 30, 12, 0, 1), ck, "page", "C0004", category="outdoor")  # in
event(datetime(2024, 11, 24, 0, 0, 0), ck, "page", "C0004", category="kids")      # T - 7d: out
event(datetime(2024, 12, 1, 0, 0, 0), ck, "page", "C0004", category="outdoor")   # T: in
event(datetime(2024, 12, 1, 0, 0, 1), ck, "page", "C0004", category="luxury")    # after T
for k in range(4):  # four views in the last 12 hours: an engaged browser
    event(datetime(2024, 11, 30, 19, 0, 0) + timedelta(minutes=3 * k), ck, "page", "C0004",
          category="outdoor")

web.sort(key=lambda r: (r["ts"], r["cookie_id"], r["event"]))
orders.sort(key=lambda r: (r["order_ts"], r["order_id"]))
with open(os.path.join(HERE, "orders.csv"), "w", newline="") as f:
    w = csv.writer(f, lineterminator="\n")
    cols = ["order_id", "order_ts", "customer_id", "email", "amount", "status", "items",
            "item_count"]
    w.writerow(cols)
    for r in orders:
        w.writerow([ts(r["order_ts"]) if k == "order_ts" else r[k] for k in cols])

with open(os.path.join(HERE, "web_events.csv"), "w", newline="") as f:
    w = csv.writer(f, lineterminator="\n")
    wcols = ["ts", "cookie_id", "customer_id", "email", "event", "url", "category",
             "utm-source", "scroll_depth", "time_on_page"]
    w.writerow(wcols)
    for r in web:
        w.writerow([ts(r["ts"]) if k == "ts" else r[k] for k in wcols])

# ------------------------------------------------------------------------------ email events

CAMPAIGNS = [("newsletter_2024_06", datetime(2024, 6, 14, 8, 0, 0)),
             ("newsletter_2024_07", datetime(2024, 7, 12, 8, 0, 0)),
             ("autumn_sale_2024", datetime(2024, 9, 2, 0, 0, 0)),  # sent exactly at T - 90d
             ("newsletter_2024_10", datetime(2024, 10, 18, 8, 0, 0)),
             ("black_friday_2024", datetime(2024, 11, 28, 8, 0, 0)),
             ("advent_2024", datetime(2024, 12, 6, 8, 0, 0))]
emails = []


def esp_address(c):
    """The ESP lower-cases addresses, except for a few imported by hand."""
    e = c["email"].strip()
    return e if c["customer_id"] in ("C0026", "C0038") else e.lower()


recipients = [c for c in customers if c["marketing_opt_in"] == "true" and c["email"].strip()
              and c["customer_id"] not in ("C0020", "C0021", "C0022", "C0031")]
recipients = [esp_address(c) for c in recipients]
# Newsletter-only subscribers without an account, and the ESP's seed address.
recipients += ["lena.vogel@gmx.de", "p.okafor@outlook.com"]
seed_list = ["test@example.com"]

unsubscribed = set()
for name, sent_at in CAMPAIGNS:
    audience = [e for e in recipients if e not in unsubscribed and rng.random() < 0.85]
    for e in seed_list + audience:
        t = sent_at + timedelta(seconds=rng.randint(0, 1800))
        if name == "autumn_sale_2024" and e == audience[0]:
            t = sent_at  # exactly on the 90-day edge
        emails.append((t, e, "sent", name))
        if e in seed_list:
            continue
        if rng.random() < 0.38:
            t_open = t + timedelta(minutes=rng.randint(2, 3000))
            emails.append((t_open, e, "open", name))
            if rng.random() < 0.3:
                emails.append((t_open + timedelta(seconds=rng.randint(5, 600)), e, "click", name))
            if rng.random() < 0.03:
                unsubscribed.add(e)
                emails.append((t_open + timedelta(seconds=rng.randint(5, 600)), e,
                               "unsubscribe", name))

# Unsubscribes exactly at T (visible) and one second after T (not yet visible at T).
emails.append((datetime(2024, 12, 1, 0, 0, 0), esp_address(by_id["C0006"]), "unsubscribe",
               "black_friday_2024"))
emails.append((datetime(2024, 12, 1, 0, 0, 1), esp_address(by_id["C0008"]), "unsubscribe",
               "black_friday_2024"))

emails.sort()
with open(os.path.join(HERE, "email_events.csv"), "w", newline="") as f:
    w = csv.writer(f, lineterminator="\n")
    w.writerow(["event_ts", "email", "type", "campaign"])
    for t, e, kind, name in emails:
        w.writerow([ts(t), e, kind, name])

print(f"customers: {len(customers)}, orders: {len(orders)}, web events: {len(web)}, "
      f"email events: {len(emails)}")
