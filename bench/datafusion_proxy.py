#!/usr/bin/env python3
"""The compiled DataFusion program of bench/project on DataFusion's Python binding (the same
DataFusion version as `cdp run`'s embedded engine, configured alike: as many partitions as
threads, sources read into memory first), statement by statement, with --override TABLE=FILE /
--proposal DIR as in duckdb_bench.py (an override file may hold several statements, each ending
with ';' at the end of a line): to measure a SQL shape on the embedded engine without changing
the compiler. Prints each statement's time; --check also compares the outputs of a run
with and without the overrides (every profile column and segment).

  bench/datafusion_proxy.py --data DIR --program DIR [--proposal DIR] [--threads 2] [--check]
                            [--identity STORE]

Needs `datafusion` (55, as the workspace) and `pyarrow` from PyPI; bench/README.md says how.
The program is `cdp compile bench/project --dialect datafusion --out DIR`; its identity part runs
as SQL here (`cdp run --identity sql`), unless --identity STORE takes the identity tables from the
offline store of a `cdp run` (native identity, as `cdp run` does by default).
"""

import argparse
import glob
import json
import os
import re
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq
from datafusion import SessionConfig, SessionContext

SOURCES = ["customers", "orders", "web_events"]


def split(sql):
    """(table, query) of a `CREATE TABLE [IF NOT EXISTS] t AS query` with leading comments."""
    code = "\n".join(l for l in sql.splitlines() if not l.lstrip().startswith("--")).strip().rstrip(";")
    m = re.match(r"CREATE TABLE\s+(?:IF NOT EXISTS\s+)?(\S+)\s+AS\s+(.*)$", code, re.I | re.S)
    if not m:
        raise SystemExit(f"not a CREATE TABLE … AS statement: {code[:80]}")
    return m.group(1).strip('"'), m.group(2)


class Engine:
    def __init__(self, threads):
        self.threads = threads
        self.ctx = SessionContext(SessionConfig().with_target_partitions(threads).with_information_schema(True))
        self.tables = set()

    def register(self, name, table):
        """An Arrow table as an in-memory table spread over the partitions (as cdp's BatchEngine)."""
        batches = table.to_batches(max_chunksize=8192)
        parts = [batches[i::self.threads] for i in range(self.threads)]
        parts = [p for p in parts if p] or [[pa.RecordBatch.from_pylist([], schema=table.schema)]]
        if name in self.tables:
            self.ctx.deregister_table(name)
        self.ctx.register_record_batches(name, parts)
        self.tables.add(name)

    def create(self, sql):
        table, query = split(sql)
        t = time.perf_counter()
        result = self.ctx.sql(query).to_arrow_table()
        self.register(table, result)
        return table, time.perf_counter() - t

    def scalar(self, sql):
        return self.ctx.sql(sql).to_arrow_table().column(0)[0].as_py()


def plain_strings(table):
    """The table with string (and list of string) columns instead of DataFusion's string views,
    which pyarrow cannot sort."""
    def plain(t):
        if t == pa.string_view():
            return pa.string()
        if t == pa.binary_view():
            return pa.binary()
        if pa.types.is_list(t) or pa.types.is_large_list(t):
            return pa.list_(plain(t.value_type))
        return t
    return table.cast(pa.schema([f.with_type(plain(f.type)) for f in table.schema]))


def load_program(path, overrides):
    with open(os.path.join(path, "program.json")) as f:
        program = json.load(f)

    def sql(s):
        """The statement, or those of its override (several, separated by a line ending in ';')."""
        if s["table"] in overrides:
            with open(overrides[s["table"]]) as f:
                text = f.read()
            return [x for x in re.split(r";[ \t]*\n", text + "\n") if "CREATE" in x.upper()]
        return [s["sql"]]

    steps = []
    for step in program["steps"]:
        kind, body = next(iter(step.items()))
        if kind.lower() == "create":
            steps += [("create", x) for x in sql(body)]
        else:
            steps.append(("loop", [x for s in body["body"] for x in sql(s)], body["converged"], body["max_rounds"]))
    return [s["sql"] for s in program.get("initial_state", [])], steps


IDENTITY_TABLES = ["customer_identity", "customer_id_merges", "customer_id_map_next"]


def identity_step(step):
    """Whether a step computes identity (skipped under --identity STORE)."""
    sqls = [step[1]] if step[0] == "create" else step[1]
    return all(split(x)[0].startswith("customer_id") or split(x)[0] == "customer_identity" for x in sqls)


def run(engine, initial, steps, identity_store=None):
    times = []
    for s in initial:
        engine.create(s)
    if identity_store:
        # the identity tables of a `cdp run` (native identity), instead of the SQL rounds
        for table in IDENTITY_TABLES:
            path = glob.glob(os.path.join(identity_store, "offline", table, "*", "*", "part-0.parquet"))
            engine.register(table, pq.read_table(path[0]))
        steps = [s for s in steps if not identity_step(s)]
    for step in steps:
        if step[0] == "create":
            times.append(engine.create(step[1]))
            continue
        _, body, converged, max_rounds = step
        took = {}
        for n in range(1, max_rounds + 1):
            for s in body:
                table, t = engine.create(s)
                took[table] = took.get(table, 0.0) + t
            if not engine.scalar(converged):
                break
        times += [(f"{t} (loop, {n} rounds)", s) for t, s in took.items()]
    return times


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--program", required=True)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--override", action="append", default=[], metavar="TABLE=FILE")
    ap.add_argument("--proposal", action="append", default=[], metavar="DIR")
    ap.add_argument("--check", action="store_true", help="also run without the overrides and compare")
    ap.add_argument("--identity", metavar="STORE",
                    help="take the identity tables from the offline store of a `cdp run` (its native identity) "
                         "instead of running the identity SQL")
    args = ap.parse_args()
    for d in args.proposal:
        args.override += [f"{f[:-4]}={os.path.join(d, f)}" for f in sorted(os.listdir(d)) if f.endswith(".sql")]
    overrides = dict(o.split("=", 1) for o in args.override)

    def one(overrides):
        engine = Engine(args.threads)
        t = time.perf_counter()
        for name in SOURCES:
            engine.register(name, pq.read_table(os.path.join(args.data, f"{name}.parquet")))
        print(f"sources read in {time.perf_counter() - t:.1f} s (not in the total)")
        initial, steps = load_program(args.program, overrides)
        times = run(engine, initial, steps, args.identity)
        for label, t in times:
            print(f"  {label:40s} {t:8.3f} s")
        print(f"  {'total':40s} {sum(t for _, t in times):8.3f} s")
        return engine

    print(f"DataFusion (Python) {args.threads} partitions; overrides: {overrides or 'none'}; "
          f"load average {os.getloadavg()[0]:.2f}")
    engine = one(overrides)
    if not args.check:
        return 0
    print("without the overrides:")
    plain = one({})
    problems = 0
    for table in ["customer_profile", "customer_segments"]:
        a = engine.ctx.table(table).to_arrow_table()
        b = plain.ctx.table(table).to_arrow_table()
        key = ["canonical_id"] + (["segment"] if table.endswith("segments") else [])
        a, b = plain_strings(a), plain_strings(b)
        a, b = a.sort_by([(k, "ascending") for k in key]), b.sort_by([(k, "ascending") for k in key])
        if a.num_rows != b.num_rows:
            print(f"check: {table}: {a.num_rows} rows with the overrides, {b.num_rows} without")
            problems += 1
            continue
        for c in b.column_names:
            x, y = a.column(c).to_pylist(), b.column(c).to_pylist()
            bad = sum(1 for u, v in zip(x, y)
                      if u != v and not (isinstance(u, float) and isinstance(v, float) and abs(u - v) <= 1e-9 * max(abs(u), abs(v))))
            if bad:
                print(f"check: {table}.{c}: {bad} rows differ")
                problems += 1
    print("check: " + ("EQUAL" if not problems else "DIFFERENT"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
