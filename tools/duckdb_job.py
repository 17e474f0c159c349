#!/usr/bin/env python3
"""Runs one cdp batch job on DuckDB (the `duckdb` wheel) for the cross-engine tests.

Usage: duckdb_job.py JOB.json RESULT.json

The job names the input tables (columns with DuckDB types, a prepared CSV file) and the program
(CREATE TABLE AS statements and convergence loops); the result holds the rounds each loop took
and every output table, each value as a JSON string (or an array for a list, or null), so the
caller can compare them exactly. On failure the result holds {"error": ...} and the exit code is 1.

Input CSVs are prepared by the caller: the declared columns in declared order, an empty field for
null, lists as JSON arrays, durations as integer milliseconds.
"""

import datetime
import decimal
import json
import sys

import duckdb


def quote(name):
    return '"' + name.replace('"', '""') + '"'


def literal(text):
    return "'" + text.replace("'", "''") + "'"


def load_table(con, table):
    name = quote(table["name"])
    columns = table["columns"]
    con.execute(
        "CREATE TABLE {} ({})".format(
            name,
            ", ".join(
                "{} {}{}".format(quote(c["name"]), c["type"], "" if c["nullable"] else " NOT NULL")
                for c in columns
            ),
        )
    )
    # Lists arrive as JSON text: read them as such, then convert.
    staging = {}
    select = []
    for c in columns:
        col = quote(c["name"])
        if c["type"].endswith("[]"):
            staging[c["name"]] = "VARCHAR"
            select.append("CAST(CAST({0} AS JSON) AS {1}) AS {0}".format(col, c["type"]))
        else:
            staging[c["name"]] = c["type"]
            select.append(col)
    spec = "{" + ", ".join("{}: {}".format(literal(k), literal(v)) for k, v in staging.items()) + "}"
    con.execute(
        "INSERT INTO {} SELECT {} FROM read_csv({}, header = true, columns = {}, "
        "nullstr = '', allow_quoted_nulls = true, auto_detect = false, quote = '\"', "
        "escape = '\"', delim = ',')".format(name, ", ".join(select), literal(table["csv"]), spec)
    )


def short(sql):
    flat = " ".join(sql.split())
    return flat if len(flat) <= 300 else flat[:300] + "…"


def create(con, statement):
    con.execute("DROP TABLE IF EXISTS {}".format(quote(statement["table"])))
    try:
        con.execute(statement["sql"])
    except duckdb.Error as e:
        raise RuntimeError(
            "building table `{}` failed: {}\n  statement: {}".format(
                statement["table"], e, short(statement["sql"])
            )
        )


def changes(con, sql):
    rows = con.execute(sql).fetchall()
    if len(rows) != 1 or len(rows[0]) != 1:
        raise RuntimeError("convergence query must return one row with one integer: " + sql)
    value = rows[0][0]
    return 0 if value is None else int(value)


def run_program(con, program):
    # State kept between runs: created when missing, never dropped; after the run each state
    # table takes the contents of its `<table>_next` output.
    for state in program.get("initial_state", []):
        con.execute(state["sql"])
    rounds = []
    for step in program["steps"]:
        if "create" in step:
            create(con, step["create"])
            continue
        loop = step["loop"]
        n = 0
        while True:
            if n == loop["max_rounds"]:
                raise RuntimeError(
                    "loop did not converge in {} rounds ({} changes in the last round)".format(
                        n, changes(con, loop["converged"])
                    )
                )
            n += 1
            for statement in loop["body"]:
                create(con, statement)
            if changes(con, loop["converged"]) == 0:
                break
        rounds.append(n)
    for state in program.get("initial_state", []):
        table = state["table"]
        replace = "CREATE TABLE {} AS SELECT * FROM {}".format(quote(table), quote(table + "_next"))
        create(con, {"table": table, "sql": replace})
    return rounds


def encode(value):
    """A value as text the caller canonicalizes with the column's type."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, datetime.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(datetime.timezone.utc).replace(tzinfo=None)
        return value.isoformat(sep=" ")
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return str((value.days * 86400 + value.seconds) * 1000000 + value.microseconds)
    if isinstance(value, decimal.Decimal):
        return format(value, "f")
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    return str(value)


def read_table(con, name):
    relation = con.sql("SELECT * FROM {}".format(quote(name)))
    columns = [{"name": c, "type": str(t)} for c, t in zip(relation.columns, relation.types)]
    rows = [[encode(v) for v in row] for row in relation.fetchall()]
    return {"columns": columns, "rows": rows}


def main():
    job_path, result_path = sys.argv[1], sys.argv[2]
    with open(job_path) as f:
        job = json.load(f)
    try:
        con = duckdb.connect(":memory:")
        con.execute("SET TimeZone = 'UTC'")
        threads = job.get("threads")
        if threads:
            con.execute("SET threads = {}".format(int(threads)))
        for table in job["tables"]:
            load_table(con, table)
        rounds = run_program(con, job["program"])
        tables = {name: read_table(con, name) for name in job["read"]}
        result = {"rounds": rounds, "tables": tables, "version": duckdb.__version__}
        code = 0
    except (duckdb.Error, RuntimeError) as e:
        result = {"error": str(e)}
        code = 1
    with open(result_path, "w") as f:
        json.dump(result, f)
    sys.exit(code)


if __name__ == "__main__":
    main()
