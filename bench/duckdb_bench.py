#!/usr/bin/env python3
"""Generated SQL vs hand-written SQL on DuckDB: run time, peak memory, and equality of results.

Usage (bench/run.sh and bench/cdp_run.sh prepare the arguments; see bench/README.md):

  duckdb_bench.py --data DIR --program DIR [--sql FILE] [--repeat 3] [--json OUT]
                  [--override TABLE=FILE ...] [--proposal DIR ...] [--explain DIR]
                  [--no-memory] [--threads N]
  duckdb_bench.py --once hand|gen --data DIR [--program DIR] [--sql FILE] [--out DIR]
  duckdb_bench.py --compare STORE HAND_OUT --data DIR

--data     the Parquet files of bench/gen_data.py (customers, orders, web_events)
--program  the output of `cdp compile --dialect duckdb --out DIR` (program.json) of bench/project
--sql      the hand-written equivalent (default: bench/sql/retail.sql)

One process, one in-memory DuckDB database: the three Parquet files are loaded into DuckDB tables
first (outside the timing; both sides read the same tables). Then:

  1. one run of each side, untimed (warm-up), whose outputs are compared (see `check`): the same
     profiles (each named by its smallest identifier, `key:value`), the same value of every
     column of the generated profile table (floating point within 1e-9 relative), the same
     members of every segment;
  2. --repeat timed runs of each side, alternating (gen, hand / hand, gen / ...), each from the
     same starting point (the generated program's state table is dropped: a first run);
  3. memory: each side once more in a child process that attaches the same tables from a DuckDB
     database file (sources.duckdb next to the Parquet files, made once) and reports its peak RSS
     (VmHWM) and DuckDB's peak buffer memory (profiling's system_peak_buffer_memory, the largest
     over the side's statements).

The generated side is the whole compiled program: identity (records, nodes, edges, the connected
components loop, canonical ids), values, profile and segments, plus the state hand-over at the end.
The hand-written side is the statements of retail.sql, its loop run until it converges.

--override TABLE=FILE replaces the SQL of the generated statement that creates TABLE by the
contents of FILE (a complete CREATE TABLE statement; a FILE without one, e.g. only a comment,
removes the statement, and a loop whose statements are all removed): for measuring a different
SQL shape without touching the compiler. --proposal DIR is --override for every DIR/TABLE.sql.

--explain DIR writes EXPLAIN ANALYZE (JSON, and as an indented list of operators with their time
and rows) of every statement of both sides (loops: their first round) into DIR.

--once SIDE runs one side once in a fresh database whose sources are views over the Parquet files
(so the time includes reading them), writes its output tables to Parquet files under --out (as
`cdp run` commits its outputs), and prints one JSON line with the seconds. bench/cdp_run.sh runs it
under /usr/bin/time -v beside `cdp run`; --compare STORE HAND_OUT then checks that the outputs
`cdp run` committed to the offline store STORE equal those written by `--once hand --out HAND_OUT`.
"""

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time

import duckdb

SOURCES = ["customers", "orders", "web_events"]
HERE = os.path.dirname(os.path.abspath(__file__))
REL_TOL = 1e-9
# Estimates (approx_count_distinct): each engine has its own sketch, so DataFusion's (cdp run) and
# DuckDB's differ (by up to 2x for a handful of values); on one engine both sides must agree.
APPROXIMATE = {"pages_30d_approx"}
ENTITY = "customer"


def quote(name):
    return '"' + name.replace('"', '""') + '"'


def connect(threads, path=":memory:"):
    con = duckdb.connect(path)
    con.execute("SET TimeZone = 'UTC'")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    return con


def load_sources(con, data):
    """The Parquet files as DuckDB tables named after the sources; returns their row counts."""
    rows = {}
    for name in SOURCES:
        path = os.path.join(data, f"{name}.parquet")
        con.execute(f"CREATE TABLE {quote(name)} AS SELECT * FROM read_parquet('{path}')")
        rows[name] = con.execute(f"SELECT count(*) FROM {quote(name)}").fetchone()[0]
    return rows


def parquet_views(con, data):
    for name in SOURCES:
        path = os.path.join(data, f"{name}.parquet")
        con.execute(f"CREATE VIEW {quote(name)} AS SELECT * FROM read_parquet('{path}')")


# ------------------------------------------------------------------------------ the programs
#
# Both sides are lists of steps: ("create", statement) or ("loop", [statement], converged query,
# max rounds); a statement is {"table", "sql", "part"}. A generated statement's table is dropped
# before it runs (the runner's contract); a hand-written statement runs as written.


def group_of(table):
    if table.endswith("_values"):
        return "values"
    if table.endswith("_profile"):
        return "profile"
    if table.endswith("_segments"):
        return "segments"
    if "_id_" in table or table.endswith("_identity"):
        return "identity"
    return "other"


def load_program(program_dir, overrides):
    """program.json as {"steps", "initial_state", "outputs"}."""
    with open(os.path.join(program_dir, "program.json")) as f:
        program = json.load(f)
    used = set()

    def statement(s):
        table = s["table"]
        if table in overrides:
            used.add(table)
            with open(overrides[table]) as f:
                sql = f.read().strip().rstrip(";")
            return {"table": table, "sql": sql, "part": group_of(table), "override": overrides[table]}
        return {"table": table, "sql": s["sql"], "part": group_of(table)}

    steps = []
    skipped = lambda s: "CREATE" not in s["sql"].upper()  # an override without a statement: skip it
    for step in program["steps"]:
        # serde's externally tagged enum (`Create` / `Loop`)
        kind, body = next(iter(step.items()))
        if kind.lower() == "create":
            s = statement(body)
            if not skipped(s):
                steps.append(("create", s))
        else:
            loop = [dict(s, part="identity loop") for s in map(statement, body["body"]) if not skipped(s)]
            if loop:
                steps.append(("loop", loop, body["converged"], body["max_rounds"]))
    missing = set(overrides) - used
    if missing:
        raise SystemExit(f"--override: no generated statement creates {sorted(missing)}")
    initial = [{"table": s["table"], "sql": s["sql"], "part": "state"} for s in program.get("initial_state", [])]
    return {"steps": steps, "initial_state": initial, "outputs": program.get("outputs", []), "generated": True}


def hand_part(table):
    if table.startswith("hw_labels"):
        return "identity loop"
    return {"hw_profiles": "profile", "hw_segments": "segments"}.get(table, "identity")


def load_hand(path):
    """retail.sql: statements ending with ';' at the end of a line; `-- @loop converged: <query>`
    … `-- @end` around the statements of a loop."""
    with open(path) as f:
        text = f.read()
    steps, loop, pending = [], None, []

    def flush():
        sql = "\n".join(pending).strip()
        pending.clear()
        body = "\n".join(l for l in sql.splitlines() if not l.lstrip().startswith("--")).strip()
        if not body:
            return
        m = re.match(r"(?:CREATE TABLE|DROP TABLE IF EXISTS|ALTER TABLE)\s+(\w+)", body, re.I)
        table = m.group(1) if m else "?"
        s = {"table": table, "sql": body.rstrip(";"), "part": hand_part(table)}
        if loop is not None:
            loop[1].append(s)
        else:
            steps.append(("create", s))

    for line in text.splitlines():
        m = re.match(r"\s*-- @loop converged:\s*(.+)$", line)
        if m:
            flush()
            loop = ["loop", [], m.group(1).strip(), 100]
            continue
        if re.match(r"\s*-- @end\b", line):
            flush()
            steps.append(tuple(loop))
            loop = None
            continue
        pending.append(line)
        if line.rstrip().endswith(";") and not line.lstrip().startswith("--"):
            flush()
    flush()
    tables = [s["table"] for st in steps for s in ([st[1]] if st[0] == "create" else st[1])]
    tables += ["hw_labels_prev"]
    return {"steps": steps, "initial_state": [], "outputs": ["hw_identity", "hw_profiles", "hw_segments"],
            "generated": False, "tables": list(dict.fromkeys(t for t in tables if t != "?"))}


def program_tables(program):
    if not program["generated"]:
        return program["tables"]
    tables = []
    for s in program["initial_state"]:
        tables += [s["table"], s["table"] + "_next"]
    for step in program["steps"]:
        if step[0] == "create":
            tables.append(step[1]["table"])
        else:
            tables += [s["table"] for s in step[1]]
    return list(dict.fromkeys(tables))


def drop_all(con, tables):
    for t in tables:
        con.execute(f"DROP TABLE IF EXISTS {quote(t)}")


def timed(con, sql):
    t = time.perf_counter()
    con.execute(sql)
    return time.perf_counter() - t


def execute(con, statement, generated, explain=None, observe=None):
    """Runs one statement; returns its seconds (0 under --explain, which profiles it instead)."""
    if generated:
        con.execute(f"DROP TABLE IF EXISTS {quote(statement['table'])}")
    sql = statement["sql"]
    code = "\n".join(l for l in sql.splitlines() if not l.lstrip().startswith("--")).strip()
    is_query = code.upper().startswith(("CREATE", "WITH", "SELECT"))
    if explain is not None and is_query:
        m = re.match(r"CREATE TABLE\s+(?:IF NOT EXISTS\s+)?(\S+)\s+AS\s+(.*)$", code, re.I | re.S)
        if m:  # EXPLAIN ANALYZE of the query, then the statement itself
            rows = con.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + m.group(2)).fetchall()
            explain(statement["table"], sql, rows)
        con.execute(sql)
        return 0.0
    took = timed(con, statement["sql"])
    if observe is not None and is_query:
        observe(statement["table"])
    return took


def run_program(con, program, explain=None, observe=None):
    """Runs a side as a first run (no state from an earlier run). Returns
    ([(label, seconds, part)], rounds) in execution order; a loop is one entry per body statement
    (summed over its rounds) plus one for its convergence queries."""
    generated = program["generated"]
    drop_all(con, program_tables(program) if not generated else [s["table"] for s in program["initial_state"]])
    out = []
    if generated:
        t = sum(timed(con, s["sql"]) for s in program["initial_state"])
        out.append(("initial state", t, "state"))
    rounds = []
    for step in program["steps"]:
        if step[0] == "create":
            s = step[1]
            out.append((s["table"], execute(con, s, generated, explain, observe), s["part"]))
            continue
        _, body, converged, max_rounds = step
        took = [0.0] * len(body)
        conv = 0.0
        n = 0
        while True:
            if n == max_rounds:
                raise RuntimeError(f"loop did not converge in {n} rounds")
            n += 1
            for i, s in enumerate(body):
                took[i] += execute(con, s, generated, explain if n == 1 else None, observe)
            t0 = time.perf_counter()
            changed = con.execute(converged).fetchone()[0]
            conv += time.perf_counter() - t0
            if not changed:
                break
        rounds.append(n)
        for i, (s, t) in enumerate(zip(body, took)):
            verb = "create" if generated else s["sql"].split()[0].lower()
            label = s["table"] if verb == "create" else f"{verb} {s['table']}"
            out.append((f"{label} (loop)", t, "identity loop"))
        out.append(("converged? (loop)", conv, "identity loop"))
    if generated:
        # after the run, each state table takes the contents of its `<table>_next` output
        t = 0.0
        for s in program["initial_state"]:
            table = s["table"]
            t += timed(con, f"DROP TABLE IF EXISTS {quote(table)}")
            t += timed(con, f"CREATE TABLE {quote(table)} AS SELECT * FROM {quote(table + '_next')}")
        out.append(("state hand-over", t, "state"))
    return out, rounds


def render_plan(node, depth=0):
    """A profiled plan (EXPLAIN (ANALYZE, FORMAT JSON)) as an indented list of operators with
    their own time, output rows and the details that matter (join keys, groups, filters)."""
    out = ""
    name = node.get("operator_name") or node.get("operator_type")
    if name and name not in ("EXPLAIN_ANALYZE",):
        info = node.get("extra_info", {}) or {}
        keep = []
        for k in ["Table", "Join Type", "Conditions", "Groups", "Aggregates", "Filters", "Partition By", "Order By",
                  "Function", "Estimated Cardinality"]:
            if k in info:
                v = info[k]
                v = "; ".join(v) if isinstance(v, list) else str(v)
                v = " ".join(v.split())
                keep.append(f"{k}: {v[:200]}")
        out += (f"{'  ' * depth}{name}  {node.get('operator_timing', 0):.3f} s  "
                f"{node.get('operator_cardinality', 0):,} rows" + (f"  [{' | '.join(keep)}]" if keep else "") + "\n")
        depth += 1
    for child in node.get("children", []):
        out += render_plan(child, depth)
    return out


# ------------------------------------------------------------------------------ equality


def check(con, approximate=False):
    """Compares the generated outputs with the hand-written ones (both still in the database).

    A profile is named on both sides by its smallest identifier ('cookie_id:…' < 'customer_id:…'
    < 'email:…'): the generated canonical ids are hashes, the hand-written labels integers.
    With `approximate` (two engines), estimates are not compared (only counted by `compare`)."""
    profile, identity, segments = f"{ENTITY}_profile", f"{ENTITY}_identity", f"{ENTITY}_segments"
    q = lambda sql: con.execute(sql).fetchall()
    one = lambda sql: con.execute(sql).fetchone()[0]
    problems = []
    r = {}
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE gen_names AS
        SELECT canonical_id, min(key_name || ':' || key_value) AS name FROM {identity} GROUP BY canonical_id""")
    con.execute("""
        CREATE OR REPLACE TEMP TABLE hand_names AS
        SELECT label, min(k || ':' || v) AS name FROM hw_identity GROUP BY label""")
    r["identifiers"] = {"generated": one(f"SELECT count(*) FROM {identity}"), "hand": one("SELECT count(*) FROM hw_identity")}
    r["identifiers_in_another_profile"] = one(f"""
        SELECT count(*) FROM (
          SELECT i.key_name, i.key_value, g.name FROM {identity} i JOIN gen_names g USING (canonical_id)
        ) g FULL OUTER JOIN (
          SELECT i.k, i.v, h.name FROM hw_identity i JOIN hand_names h USING (label)
        ) h ON h.k = g.key_name AND h.v = g.key_value
        WHERE g.name IS DISTINCT FROM h.name""")
    r["profiles"] = {"generated": one(f"SELECT count(*) FROM {profile}"), "hand": one("SELECT count(*) FROM hw_profiles")}
    r["merged_profiles"] = one(f"SELECT count(*) FROM (SELECT canonical_id FROM {identity} WHERE key_name = 'customer_id' "
                               "GROUP BY canonical_id HAVING count(*) > 1)")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE gen_by_name AS
        SELECT n.name, p.* EXCLUDE (canonical_id) FROM {profile} p LEFT JOIN gen_names n USING (canonical_id)""")
    con.execute("""
        CREATE OR REPLACE TEMP TABLE hand_by_name AS
        SELECT n.name, p.* EXCLUDE (label) FROM hw_profiles p LEFT JOIN hand_names n USING (label)""")
    types = lambda t: dict(q(f"SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = '{t}'"))
    gen_types, hand_types = types("gen_by_name"), types("hand_by_name")
    columns = [c for c in gen_types if c != "name" and c in hand_types]
    # the profile's segment flags are compared as memberships (hw_segments) below
    flags = [c for c in gen_types if c not in hand_types and gen_types[c] == "BOOLEAN"]
    missing = [c for c in gen_types if c != "name" and c not in hand_types and c not in flags]
    if missing:
        problems.append(f"retail.sql computes no {missing}")
    r["columns_compared"] = len(columns)
    r["types_differing"] = {c: [gen_types[c], hand_types[c]] for c in columns if gen_types[c] != hand_types[c]}

    def differs(c):
        if c in APPROXIMATE and approximate:
            return "false"
        if {"DOUBLE", "FLOAT"} & {gen_types[c], hand_types[c]}:
            return (f"NOT (g.{c} IS NOT DISTINCT FROM h.{c} OR "
                    f"abs(g.{c} - h.{c}) <= {REL_TOL} * greatest(abs(g.{c}), abs(h.{c})))")
        return f"g.{c} IS DISTINCT FROM h.{c}"

    counts = ", ".join(f"count(*) FILTER (WHERE g.name IS NOT NULL AND h.name IS NOT NULL AND {differs(c)})"
                       for c in columns)
    row = con.execute(f"""
        SELECT count(*) FILTER (WHERE h.name IS NULL), count(*) FILTER (WHERE g.name IS NULL),
               count(*) FILTER (WHERE g.name IS NOT NULL AND h.name IS NOT NULL), {counts}
        FROM gen_by_name g FULL OUTER JOIN hand_by_name h ON h.name = g.name""").fetchone()
    r["only_generated"], r["only_hand"], r["matched"] = row[0], row[1], row[2]
    r["mismatches"] = {c: n for c, n in zip(columns, row[3:]) if n}
    for c, n in r["mismatches"].items():
        sample = q(f"""SELECT g.name, g.{c}, h.{c} FROM gen_by_name g JOIN hand_by_name h USING (name)
                      WHERE {differs(c)} LIMIT 3""")
        problems.append(f"{c}: {n} profiles differ, e.g. {sample}")
    for k in ["identifiers_in_another_profile", "only_generated", "only_hand"]:
        if r[k]:
            problems.append(f"{k}: {r[k]}")
    # A sum of floats depends in its last bits on the order of addition, which no engine fixes: a
    # profile whose floating-point values differ within the tolerance may fall on either side of a
    # segment's threshold (lifetime_value >= 500). Such memberships are counted, not a difference.
    floats = [c for c in columns if {"DOUBLE", "FLOAT"} & {gen_types[c], hand_types[c]}]
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE rounded AS
        SELECT name FROM gen_by_name g JOIN hand_by_name h USING (name)
        WHERE {" OR ".join(f"g.{c} IS DISTINCT FROM h.{c}" for c in floats) or "false"}""")
    r["profiles_with_rounding_differences"] = one("SELECT count(*) FROM rounded")
    gen_members = dict(q(f"SELECT segment, count(*) FROM {segments} GROUP BY segment"))
    hand_members = dict(q("SELECT segment, count(*) FROM hw_segments GROUP BY segment"))
    differing = dict(q(f"""
        SELECT segment, count(*) FROM (
          (SELECT n.name, s.segment FROM {segments} s JOIN gen_names n USING (canonical_id)
           EXCEPT ALL SELECT n.name, s.segment FROM hw_segments s JOIN hand_names n USING (label))
          UNION ALL
          (SELECT n.name, s.segment FROM hw_segments s JOIN hand_names n USING (label)
           EXCEPT ALL SELECT n.name, s.segment FROM {segments} s JOIN gen_names n USING (canonical_id))
        ) WHERE name NOT IN (SELECT name FROM rounded) GROUP BY segment"""))
    rounding = dict(q(f"""
        SELECT segment, count(*) FROM (
          (SELECT n.name, s.segment FROM {segments} s JOIN gen_names n USING (canonical_id)
           EXCEPT ALL SELECT n.name, s.segment FROM hw_segments s JOIN hand_names n USING (label))
          UNION ALL
          (SELECT n.name, s.segment FROM hw_segments s JOIN hand_names n USING (label)
           EXCEPT ALL SELECT n.name, s.segment FROM {segments} s JOIN gen_names n USING (canonical_id))
        ) WHERE name IN (SELECT name FROM rounded) GROUP BY segment"""))
    r["segments"] = {s: {"generated": gen_members.get(s, 0), "hand": hand_members.get(s, 0),
                         "members_differing": differing.get(s, 0), "by_rounding": rounding.get(s, 0)}
                     for s in sorted(set(gen_members) | set(hand_members) | set(flags))}
    for s, v in r["segments"].items():
        if v["members_differing"]:
            problems.append(f"segment {s}: {v['members_differing']} profiles are members on one side only")
    for flag in flags:  # the generated profile's flags agree with its segment table
        n = one(f"""
            SELECT count(*) FROM (
              (SELECT canonical_id FROM {profile} WHERE {flag}
               EXCEPT ALL SELECT canonical_id FROM {segments} WHERE segment = '{flag}')
              UNION ALL
              (SELECT canonical_id FROM {segments} WHERE segment = '{flag}'
               EXCEPT ALL SELECT canonical_id FROM {profile} WHERE {flag}))""")
        if n:
            problems.append(f"profile column {flag}: {n} profiles differ from the segment table")
    r["segment_flags_compared"] = len(flags)
    return r, problems


# ------------------------------------------------------------------------------ memory


def rss_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def sources_database(data):
    """The sources as a DuckDB database file next to the Parquet files (made once, untimed)."""
    path = os.path.join(data, "sources.duckdb")
    if not os.path.exists(path):
        con = duckdb.connect(path + ".tmp")
        load_sources(con, data)
        con.close()
        os.replace(path + ".tmp", path)
    return path


def side_program(args, side):
    if side == "gen":
        return load_program(args.program, parse_overrides(args.override))
    return load_hand(args.sql)


def probe(args):
    """Child process: run one side once over the sources of a database file (attached read-only,
    so the process starts small and reads the tables it needs), with DuckDB's profiling on; reports
    the peak RSS and DuckDB's peak buffer memory (the largest of its statements)."""
    con = connect(args.threads)
    con.execute(f"ATTACH '{sources_database(args.data)}' AS src (READ_ONLY)")
    con.execute("SET search_path = 'memory.main,src.main'")
    con.execute("PRAGMA enable_profiling = 'no_output'")
    baseline = rss_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
    peaks = {}

    def observe(table):
        info = json.loads(con.get_profiling_information(format="json"))
        peaks[table] = max(peaks.get(table, 0), info.get("system_peak_buffer_memory", 0))

    t = time.perf_counter()
    run_program(con, side_program(args, args.probe), observe=observe)
    seconds = time.perf_counter() - t
    peak = rss_kib("VmHWM")
    # system_peak_buffer_memory never decreases within a process: name the statement that reached it
    top = next(t for t, v in peaks.items() if v == max(peaks.values()))
    json.dump({"side": args.probe, "baseline_rss_mib": baseline / 1024, "peak_rss_mib": peak / 1024,
               "peak_buffer_mib": peaks[top] / 2**20, "peak_buffer_statement": top,
               "buffer_mib_by_statement": {k: v / 2**20 for k, v in peaks.items()}, "seconds": seconds},
              sys.stdout)


def measure_memory(args, side):
    sources_database(args.data)
    cmd = [sys.executable, os.path.abspath(__file__), "--probe", side, "--data", args.data,
           "--program", args.program, "--sql", args.sql]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    for o in args.override:
        cmd += ["--override", o]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def once(args):
    """One run of one side from the Parquet files, its outputs written to Parquet (bench/cdp_run.sh)."""
    con = connect(args.threads)
    t0 = time.perf_counter()
    parquet_views(con, args.data)
    program = side_program(args, args.once)
    steps, rounds = run_program(con, program)
    t1 = time.perf_counter()
    written = {}
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        for table in program["outputs"]:
            path = os.path.join(args.out, f"{table}.parquet")
            con.execute(f"COPY {quote(table)} TO '{path}' (FORMAT parquet)")
            written[table] = con.execute(f"SELECT count(*) FROM {quote(table)}").fetchone()[0]
    t2 = time.perf_counter()
    parts = {}
    for _, t, part in steps:
        parts[part] = parts.get(part, 0.0) + t
    print(json.dumps({"side": args.once, "seconds": t2 - t0, "run_s": t1 - t0, "write_s": t2 - t1,
                      "rounds": rounds, "parts_s": parts, "rows": written, "duckdb": duckdb.__version__,
                      "threads": con.execute("SELECT current_setting('threads')").fetchone()[0]}))


def compare(args):
    """`cdp run`'s committed outputs (the offline store under --compare) vs the tables of
    `--once hand --out DIR` (--hand-out): the same check as for the generated SQL on DuckDB."""
    con = connect(args.threads)
    store, hand_out = args.compare
    for table in [f"{ENTITY}_identity", f"{ENTITY}_profile", f"{ENTITY}_segments"]:
        con.execute(f"CREATE TABLE {table} AS SELECT * FROM "
                    f"read_parquet('{store}/offline/{table}/*/*/part-0.parquet', hive_partitioning = false)")
    for table in ["hw_identity", "hw_profiles", "hw_segments"]:
        con.execute(f"CREATE TABLE {table} AS SELECT * FROM read_parquet('{hand_out}/{table}.parquet')")
    result, problems = check(con, approximate=True)
    for c in sorted(APPROXIMATE):
        result[f"{c}_differing"] = con.execute(f"""
            SELECT count(*) FILTER (WHERE g.{c} <> h.{c}), max(abs(g.{c} - h.{c}) / greatest(h.{c}, 1))
            FROM gen_by_name g JOIN hand_by_name h USING (name)""").fetchone()
    print(json.dumps({"equal": not problems, "problems": problems, "profiles": result["profiles"],
                      "segments_by_rounding": {s: v["by_rounding"] for s, v in result["segments"].items()
                                               if v["by_rounding"]},
                      "columns_compared": result["columns_compared"], "types_differing": result["types_differing"],
                      "segment_flags_compared": result["segment_flags_compared"],
                      "estimates_differing (profiles, max relative)": {
                          c: result[f"{c}_differing"] for c in sorted(APPROXIMATE)}}, default=str))
    return 1 if problems else 0


# ------------------------------------------------------------------------------ main


def parse_overrides(items):
    out = {}
    for item in items:
        table, _, path = item.partition("=")
        if not path:
            raise SystemExit(f"--override {item}: write TABLE=FILE")
        out[table] = path
    return out


def cpu_seconds():
    """User + system CPU time of this process so far (every DuckDB thread)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def by_part(run):
    per = {}
    for _, t, part in run:
        per[part] = per.get(part, 0.0) + t
    return per


PARTS = ["identity", "identity loop", "values", "profile", "segments", "state"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--program")
    ap.add_argument("--sql", default=os.path.join(HERE, "sql", "retail.sql"))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--override", action="append", default=[], metavar="TABLE=FILE")
    ap.add_argument("--proposal", action="append", default=[], metavar="DIR")
    ap.add_argument("--explain", metavar="DIR")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--json", metavar="OUT", help="write the figures as JSON")
    ap.add_argument("--once", choices=["gen", "hand"])
    ap.add_argument("--out", metavar="DIR", help="--once: where to write the output tables")
    ap.add_argument("--compare", nargs=2, metavar=("STORE", "HAND_OUT"),
                    help="check cdp run's committed outputs against those of --once hand")
    ap.add_argument("--probe", choices=["gen", "hand"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.compare:
        return compare(args)
    for d in args.proposal:
        args.override += [f"{f[:-4]}={os.path.join(d, f)}" for f in sorted(os.listdir(d)) if f.endswith(".sql")]
    if args.once:
        return once(args)
    if not args.program:
        ap.error("--program is needed")
    if args.probe:
        return probe(args)

    program = side_program(args, "gen")
    hand = load_hand(args.sql)
    gen_tables, hand_tables = program_tables(program), program_tables(hand)
    con = connect(args.threads)
    threads = con.execute("SELECT current_setting('threads')").fetchone()[0]
    print(f"DuckDB {duckdb.__version__}, {threads} threads; data {args.data}; program {args.program}; "
          f"hand-written {args.sql}")
    for t, path in parse_overrides(args.override).items():
        print(f"  override: {t} <- {path}")
    t0 = time.perf_counter()
    rows = load_sources(con, args.data)
    con.execute("CHECKPOINT")
    print(f"loaded {', '.join(f'{k} {v:,}' for k, v in rows.items())} rows in {time.perf_counter() - t0:.1f} s "
          "(not timed)")

    # 1. warm-up runs, whose outputs are compared
    _, rounds = run_program(con, program)
    _, hand_rounds = run_program(con, hand)
    result, problems = check(con)
    print(f"identity loop rounds: generated {rounds}, hand-written {hand_rounds}")
    print(f"check: {result['profiles']['generated']:,} profiles generated / {result['profiles']['hand']:,} "
          f"hand-written ({result['matched']:,} matched by name, {result['merged_profiles']:,} generated profiles "
          f"hold several customer ids); {result['identifiers']['generated']:,} identifiers, "
          f"{result['identifiers_in_another_profile']} in another profile")
    print(f"check: {result['columns_compared']} profile columns and {result['segment_flags_compared']} segment flags "
          f"compared; differing: {result['mismatches'] or 'none'}"
          + (f"; types differ: {result['types_differing']}" if result["types_differing"] else ""))
    print("check: segments (members generated / hand-written / differing / differing where a float differs "
          "in its last bits) " + ", ".join(
              f"{s} {v['generated']:,}/{v['hand']:,}/{v['members_differing']}/{v['by_rounding']}"
              for s, v in result["segments"].items()))
    print(f"check: {result['profiles_with_rounding_differences']:,} profiles have a floating-point value that "
          "differs within the tolerance (the order of a sum)")
    print("check: " + ("EQUAL" if not problems else "DIFFERENT\n  " + "\n  ".join(problems)))
    if args.explain:
        os.makedirs(args.explain, exist_ok=True)
        n = [0]

        def write(table, sql, rows_):
            n[0] += 1
            plan = json.loads(rows_[0][-1])
            path = os.path.join(args.explain, f"{n[0]:02d}_{table}")
            with open(path + ".json", "w") as f:
                json.dump(plan, f, indent=1)
            with open(path + ".txt", "w") as f:
                f.write(sql + "\n\n")
                f.write(f"-- latency {plan.get('latency', 0):.3f} s, cpu {plan.get('cpu_time', 0):.3f} s, "
                        f"peak buffer memory {plan.get('system_peak_buffer_memory', 0) / 2**20:.0f} MiB\n")
                f.write(render_plan(plan))

        drop_all(con, gen_tables + hand_tables)
        run_program(con, program, explain=write)
        run_program(con, hand, explain=write)
        print(f"EXPLAIN ANALYZE of every statement written to {args.explain}")
    drop_all(con, gen_tables + hand_tables)

    # 2. timed runs, alternating
    load_before = loadavg()
    print(f"timed runs (load average before: {load_before}; the machine's other work slows both sides)")
    runs = {"gen": [], "hand": []}
    cpu = {"gen": [], "hand": []}
    for i in range(args.repeat):
        for side in (["gen", "hand"] if i % 2 == 0 else ["hand", "gen"]):
            c0 = cpu_seconds()
            steps, _ = run_program(con, program if side == "gen" else hand)
            runs[side].append(steps)
            cpu[side].append(cpu_seconds() - c0)
            drop_all(con, gen_tables if side == "gen" else hand_tables)
        print(f"  run {i + 1}: generated {sum(t for _, t, _ in runs['gen'][-1]):.3f} s ({cpu['gen'][-1]:.2f} s CPU), "
              f"hand-written {sum(t for _, t, _ in runs['hand'][-1]):.3f} s ({cpu['hand'][-1]:.2f} s CPU)")
    load_after = loadavg()
    print(f"load average after: {load_after}")

    total = {s: median([sum(t for _, t, _ in r) for r in runs[s]]) for s in runs}
    steps = {s: {label: median([r[i][1] for r in runs[s]]) for i, (label, _, _) in enumerate(runs[s][0])}
             for s in runs}
    parts = {s: {p: median([by_part(r).get(p, 0.0) for r in runs[s]]) for p in PARTS if p in by_part(runs[s][0])}
             for s in runs}
    # profile only: the generated values + profile statements vs the hand-written hw_profiles
    profile = {"gen": median([sum(t for _, t, p in r if p in ("values", "profile")) for r in runs["gen"]]),
               "hand": median([sum(t for _, t, p in r if p == "profile") for r in runs["hand"]])}
    identity = {s: median([sum(t for _, t, p in r if p.startswith("identity")) for r in runs[s]]) for s in runs}
    for side, name in [("gen", "generated program"), ("hand", "hand-written")]:
        print(f"\n{name}, median of {args.repeat} (per statement):")
        for label, t in steps[side].items():
            print(f"  {label:34s} {t:8.3f} s")
        print(f"{name}, by part:")
        for p, t in parts[side].items():
            print(f"  {p:34s} {t:8.3f} s  {100 * t / total[side]:5.1f} %")

    memory = {}
    if not args.no_memory:
        for side in ["gen", "hand"]:
            memory[side] = measure_memory(args, side)
        print("\nmemory (one run per side in a child process that reads the sources from a DuckDB file):")
        for side, m in memory.items():
            name = "generated" if side == "gen" else "hand-written"
            print(f"  {name:13s} peak RSS {m['peak_rss_mib']:7.0f} MiB (at start {m['baseline_rss_mib']:.0f} MiB); "
                  f"DuckDB peak buffer memory {m['peak_buffer_mib']:7.0f} MiB (reached in {m['peak_buffer_statement']}); "
                  f"{m['seconds']:.2f} s with profiling")

    ratio = total["gen"] / total["hand"]
    ratio_profile = profile["gen"] / profile["hand"]
    ratio_identity = identity["gen"] / identity["hand"]
    print(f"\ntotal: generated {total['gen']:.3f} s, hand-written {total['hand']:.3f} s, ratio {ratio:.2f}x "
          f"(goal <= 1.3x: {'met' if ratio <= 1.3 else 'NOT met'})")
    print(f"identity only: generated {identity['gen']:.3f} s vs hand-written {identity['hand']:.3f} s, "
          f"ratio {ratio_identity:.2f}x")
    print(f"profile only: generated values + profile {profile['gen']:.3f} s vs hand-written hw_profiles "
          f"{profile['hand']:.3f} s, ratio {ratio_profile:.2f}x")
    cpu_gen, cpu_hand = median(cpu["gen"]), median(cpu["hand"])
    print(f"CPU time (user + system, all threads; less sensitive to other load on the machine): "
          f"generated {cpu_gen:.2f} s, hand-written {cpu_hand:.2f} s, ratio {cpu_gen / cpu_hand:.2f}x")
    print("results " + ("EQUAL" if not problems else "DIFFERENT"))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({
                "duckdb": duckdb.__version__, "threads": threads, "data": args.data, "rows": rows,
                "repeat": args.repeat, "overrides": parse_overrides(args.override),
                "loadavg": [load_before, load_after], "identity_rounds": {"generated": rounds, "hand": hand_rounds},
                "generated_total_s": total["gen"], "hand_total_s": total["hand"], "ratio": ratio,
                "identity_s": identity, "ratio_identity": ratio_identity,
                "profile_s": profile, "ratio_profile": ratio_profile,
                "cpu_generated_s": cpu_gen, "cpu_hand_s": cpu_hand, "cpu_ratio": cpu_gen / cpu_hand,
                "steps_s": steps, "parts_s": parts,
                "runs": {s: [[list(x) for x in r] for r in runs[s]] for s in runs},
                "memory": memory, "check": result, "problems": problems,
            }, f, indent=1, default=str)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
