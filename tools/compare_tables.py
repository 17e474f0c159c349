#!/usr/bin/env python3
"""Compares the results of two cdp batch jobs (tools/duckdb_job.py, tools/spark_job.py) table by
table, the way the Rust conformance tests do (tests/e2e/engines/canon.rs).

Usage: compare_tables.py BASE_NAME BASE_RESULT.json OTHER_NAME OTHER_RESULT.json [APPROX.json]

Every value is put in canonical form first: ints and decimals exact without redundant zeros,
floats rounded to 9 significant digits, timestamps `YYYY-MM-DD HH:MM:SS[.ffffff]` (UTC), dates
`YYYY-MM-DD`, durations in seconds, bools `true`/`false`, lists `[a, b]`, null `∅`; rows are
sorted and compared exactly, except the columns APPROX.json names (estimates such as
approx_count_distinct), which are masked for the row match and then compared within 2 or 20% of
the larger value. Column names compare case-insensitively.

Prints one line per table (rows on each side, equal or different, with the differing rows below
it), one line for the loop rounds, and a summary line; exits 1 when anything differs or a job
failed, 0 when everything is equal.
"""

import datetime
import json
import re
import sys
from decimal import Decimal, InvalidOperation

NULL = "∅"
APPROX = "≈"
SHOWN_ROWS = 8

# ------------------------------------------------------------------------------ kinds


def kind(ty):
    """The canonical kind of a column type as DuckDB (`str(DuckDBPyType)`) or Spark
    (`DataType.simpleString()`) prints it: ("list", inner) or a name."""
    t = ty.strip()
    low = t.lower()
    if t.endswith("[]"):
        return ("list", kind(t[:-2]))
    if low.startswith("array<") and low.endswith(">"):
        return ("list", kind(t[len("array<") : -1]))
    if low in (
        "tinyint",
        "smallint",
        "integer",
        "int",
        "bigint",
        "hugeint",
        "utinyint",
        "usmallint",
        "uinteger",
        "ubigint",
        "uhugeint",
    ):
        return "int"
    if low in ("float", "double", "real"):
        return "float"
    if low in ("boolean",):
        return "bool"
    if low == "date":
        return "date"
    if low == "interval" or low.startswith("interval day") or low.startswith("interval hour") or low.startswith(
        "interval minute"
    ) or low.startswith("interval second"):
        return "duration"
    if low.startswith("decimal"):
        return "decimal"
    if low.startswith("timestamp"):
        return "timestamp"
    return "text"


# ------------------------------------------------------------------------------ values


def float_text(f):
    if f != f:
        return "NaN"
    if f in (float("inf"), float("-inf")):
        return "Infinity" if f > 0 else "-Infinity"
    if f == 0.0:
        return "0"
    sci = "{:.8e}".format(f)
    mantissa, exponent = sci.split("e")
    exponent = int(exponent)
    negative = mantissa.startswith("-")
    digits = "".join(ch for ch in mantissa if ch.isdigit())
    point = exponent + 1
    if point <= 0:
        text = "0." + "0" * (-point) + digits
    elif point >= len(digits):
        text = digits + "0" * (point - len(digits))
    else:
        text = digits[:point] + "." + digits[point:]
    text = trim_fraction(text)
    return "-" + text if negative else text


def trim_fraction(text):
    return text.rstrip("0").rstrip(".") if "." in text else text


def decimal_text(text):
    t = text.strip()
    negative = t.startswith("-")
    digits = t[1:] if t[:1] in ("-", "+") else t
    int_part, _, frac_part = digits.partition(".")
    if not (int_part or frac_part) or not all(ch.isdigit() for ch in int_part + frac_part):
        raise ValueError("`{}` is not an exact number".format(text))
    int_part = int_part.lstrip("0") or "0"
    frac_part = frac_part.rstrip("0")
    out = int_part + ("." + frac_part if frac_part else "")
    if negative and out != "0":
        out = "-" + out
    return out


def timestamp_micros_of(text):
    t = text.strip()
    for suffix in ("Z", "+00:00", "+00"):
        if t.endswith(suffix):
            t = t[: -len(suffix)]
    head, _, frac = t.replace("T", " ").partition(".")
    try:
        if " " in head:
            base = datetime.datetime.strptime(head, "%Y-%m-%d %H:%M:%S")
        else:
            base = datetime.datetime.strptime(head, "%Y-%m-%d")
    except ValueError:
        raise ValueError("`{}` is not a timestamp".format(text))
    if frac and (not frac.isdigit() or frac[6:].strip("0")):
        raise ValueError("`{}` is not a timestamp in microseconds".format(text))
    micros = int((frac + "000000")[:6]) if frac else 0
    delta = base - datetime.datetime(1970, 1, 1)
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + micros


def timestamp_text(micros):
    secs, frac = divmod(micros, 1_000_000)
    t = datetime.datetime(1970, 1, 1) + datetime.timedelta(seconds=secs)
    base = "{:04d}-{:02d}-{:02d} {:02d}:{:02d}:{:02d}".format(
        t.year, t.month, t.day, t.hour, t.minute, t.second
    )
    return base if frac == 0 else "{}.{:06d}".format(base, frac)


def duration_text(micros):
    sign = "-" if micros < 0 else ""
    s, frac = divmod(abs(micros), 1_000_000)
    if frac == 0:
        return "{}{}s".format(sign, s)
    return "{}{}s".format(sign, trim_fraction("{}.{:06d}".format(s, frac)))


def text_value(k, text):
    if k == "text":
        return text
    if k in ("int", "decimal"):
        return decimal_text(text)
    if k == "float":
        special = {"Infinity": float("inf"), "inf": float("inf"), "-Infinity": float("-inf"), "-inf": float("-inf")}
        return float_text(special[text] if text in special else float(text))
    if k == "bool":
        if text in ("true", "t", "True"):
            return "true"
        if text in ("false", "f", "False"):
            return "false"
        raise ValueError("`{}` is not a bool".format(text))
    if k == "date":
        return text
    if k == "timestamp":
        return timestamp_text(timestamp_micros_of(text))
    if k == "duration":
        return duration_text(int(text))
    if isinstance(k, tuple):
        return json_value(k, json.loads(text))
    raise ValueError("unknown kind {}".format(k))


def json_value(k, value):
    if value is None:
        return NULL
    if isinstance(k, tuple) and isinstance(value, list):
        return "[" + ", ".join(json_value(k[1], v) for v in value) + "]"
    if isinstance(value, str):
        return text_value(k, value)
    if isinstance(value, bool):
        return text_value(k, "true" if value else "false")
    if isinstance(value, (int, float)):
        return text_value(k, json.dumps(value))
    raise ValueError("unexpected {!r} for a {}".format(value, k))


def canon_table(name, table):
    columns = [c["name"].lower() for c in table["columns"]]
    kinds = [kind(c["type"]) for c in table["columns"]]
    rows = []
    for row in table["rows"]:
        try:
            rows.append([json_value(k, v) for k, v in zip(kinds, row)])
        except ValueError as e:
            raise ValueError("reading `{}`: {}".format(name, e))
    rows.sort()
    return {"columns": columns, "rows": rows}


# ------------------------------------------------------------------------------ comparing


def approx_equal(a, b):
    if a == b:
        return True
    try:
        x, y = float(a), float(b)
    except ValueError:
        return False
    return abs(x - y) <= max(2.0, 0.2 * max(abs(x), abs(y)))


def mask(table, columns):
    values = {}
    rows = []
    for row in table["rows"]:
        masked = list(row)
        for c in columns:
            masked[c] = APPROX
        values.setdefault(tuple(masked), []).append([row[c] for c in columns])
        rows.append(masked)
    rows.sort()
    return {"columns": table["columns"], "rows": rows}, values


def exact_diff(out, a, b):
    (an, at), (bn, bt) = a, b
    if at["rows"] == bt["rows"]:
        return
    i = j = 0
    only_a, only_b = [], []
    ra, rb = at["rows"], bt["rows"]
    while i < len(ra) or j < len(rb):
        x = ra[i] if i < len(ra) else None
        y = rb[j] if j < len(rb) else None
        if x is not None and y is not None and x == y:
            i += 1
            j += 1
        elif y is None or (x is not None and x < y):
            only_a.append(x)
            i += 1
        else:
            only_b.append(y)
            j += 1
    out.append(
        "    {} has {} rows, {} has {}; {} rows only on {}, {} only on {}".format(
            an, len(ra), bn, len(rb), len(only_a), an, len(only_b), bn
        )
    )
    paired = 0
    unpaired_a = []
    unpaired_b = list(only_b)
    cols = at["columns"]
    for x in only_a:
        p = next((k for k, y in enumerate(unpaired_b) if y[:1] == x[:1]), None)
        if p is None:
            unpaired_a.append(x)
            continue
        y = unpaired_b.pop(p)
        if paired < SHOWN_ROWS:
            diffs = [
                "{} = {} on {}, {} on {}".format(c, u, an, v, bn)
                for c, u, v in zip(cols, x, y)
                if u != v
            ]
            out.append("    {} = {}: {}".format(cols[0] if cols else "", x[0] if x else "", "; ".join(diffs)))
        paired += 1
    if paired > SHOWN_ROWS:
        out.append("    … {} more rows differ in some columns".format(paired - SHOWN_ROWS))
    if unpaired_a or unpaired_b:
        out.append("    columns: " + " | ".join(cols))
    for engine, rows in ((an, unpaired_a), (bn, unpaired_b)):
        for row in rows[:SHOWN_ROWS]:
            out.append("    only {:>8}: {}".format(engine, " | ".join(row)))
        if len(rows) > SHOWN_ROWS:
            out.append("    only {:>8}: … {} more".format(engine, len(rows) - SHOWN_ROWS))


def table_diff(a, b, approximate):
    """Lines describing how two canonical tables differ; empty when they agree."""
    (an, at), (bn, bt) = a, b
    out = []
    if at["columns"] != bt["columns"]:
        out.append("    columns differ")
        out.append("    {:>8}: {}".format(an, ", ".join(at["columns"])))
        out.append("    {:>8}: {}".format(bn, ", ".join(bt["columns"])))
        return out
    approx = [k for k, c in enumerate(at["columns"]) if c in approximate]
    ma, va = mask(at, approx)
    mb, vb = mask(bt, approx)
    exact_diff(out, (an, ma), (bn, mb))
    if ma["rows"] != mb["rows"] or not approx:
        return out
    off = []
    for row, xs in sorted(va.items()):
        ys = vb.get(row)
        if ys is None:
            continue
        for x, y in zip(sorted(xs), sorted(ys)):
            for k, c in enumerate(approx):
                if not approx_equal(x[k], y[k]):
                    off.append(
                        "    {}: {} = {} on {}, {} on {}".format(
                            row[0] if row else "", at["columns"][c], x[k], an, y[k], bn
                        )
                    )
    if off:
        out.append("    {} approximate values differ by more than the tolerance".format(len(off)))
        out.extend(off[:SHOWN_ROWS])
    return out


def approximate_spread(a, b, approximate):
    """(compared values, values not identical) of the approximate columns of two equal tables."""
    cols = [k for k, c in enumerate(a["columns"]) if c in approximate]
    if not cols:
        return 0, 0
    ma, va = mask(a, cols)
    _, vb = mask(b, cols)
    n = inexact = 0
    for row, xs in va.items():
        for x, y in zip(sorted(xs), sorted(vb.get(row, []))):
            for u, v in zip(x, y):
                n += 1
                inexact += u != v
    return n, inexact


def main():
    if len(sys.argv) not in (5, 6):
        sys.exit(__doc__)
    an, ap, bn, bp = sys.argv[1:5]
    approximate = []
    if len(sys.argv) == 6:
        with open(sys.argv[5]) as f:
            approximate = [c.lower() for c in json.load(f)]
    results = {}
    for name, path in ((an, ap), (bn, bp)):
        with open(path) as f:
            results[name] = json.load(f)
    failed = [n for n, r in results.items() if "error" in r]
    for n in failed:
        print("{} failed: {}".format(n, results[n]["error"]))
    if failed:
        print("summary: FAILED — {} did not run the program".format(" and ".join(failed)))
        sys.exit(1)
    a, b = results[an], results[bn]
    names = list(a["tables"]) + [t for t in b["tables"] if t not in a["tables"]]
    width = max([len(t) for t in names] + [5])
    differing = []
    print("{:<{w}}  {:>8}  {:>8}  result".format("table", an, bn, w=width))
    for table in names:
        if table not in a["tables"] or table not in b["tables"]:
            missing = an if table not in a["tables"] else bn
            print("{:<{w}}  {:>8}  {:>8}  different: missing on {}".format(table, "-", "-", missing, w=width))
            differing.append(table)
            continue
        try:
            ta = canon_table(table, a["tables"][table])
            tb = canon_table(table, b["tables"][table])
        except ValueError as e:
            print("{:<{w}}  {:>8}  {:>8}  different: {}".format(table, "?", "?", e, w=width))
            differing.append(table)
            continue
        lines = table_diff((an, ta), (bn, tb), approximate)
        if lines:
            print("{:<{w}}  {:>8}  {:>8}  DIFFERENT".format(table, len(ta["rows"]), len(tb["rows"]), w=width))
            for line in lines:
                print(line)
            differing.append(table)
        else:
            n, inexact = approximate_spread(ta, tb, approximate)
            note = ""
            if n:
                note = " ({} of {} estimates not identical, within tolerance)".format(inexact, n) if inexact else (
                    " ({} estimates identical)".format(n)
                )
            print("{:<{w}}  {:>8}  {:>8}  equal{}".format(table, len(ta["rows"]), len(tb["rows"]), note, w=width))
    rounds_equal = a.get("rounds") == b.get("rounds")
    print(
        "loop rounds: {} {}, {} {} — {}".format(
            an, a.get("rounds"), bn, b.get("rounds"), "equal" if rounds_equal else "DIFFERENT"
        )
    )
    total = len(names)
    if differing or not rounds_equal:
        what = ["{} of {} tables differ ({})".format(len(differing), total, ", ".join(differing))] if differing else []
        if not rounds_equal:
            what.append("loop rounds differ")
        print("summary: DIFFERENT — " + "; ".join(what))
        sys.exit(1)
    print("summary: OK — all {} tables equal, loop rounds equal".format(total))


if __name__ == "__main__":
    main()
