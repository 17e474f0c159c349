#!/usr/bin/env python3
"""Runs one cdp batch job on Apache Spark (pyspark, local mode): the Spark counterpart of
tools/duckdb_job.py, with the same job and result JSON.

Usage: spark_job.py JOB.json RESULT.json

The job names the input tables (columns with DuckDB types, which are mapped to Spark types here,
and a CSV prepared by tools/prepare_job.py: an empty field for null, lists as JSON arrays,
durations as integer milliseconds, timestamps in UTC) and the program (CREATE TABLE AS statements
and convergence loops, compiled with `cdp compile --dialect spark`); the result holds the rounds
each loop took, every table of `read` (each value as a JSON string, an array for a list, or null;
column types as Spark prints them) and the seconds each step took. On failure the result holds
{"error": ...} and the exit code is 1.

The SQL runs as compiled: each statement is preceded by `DROP TABLE IF EXISTS <table>` as in the
other runners, nothing is rewritten. Tables are managed tables of an in-memory catalog whose
warehouse is a fresh temporary directory (SPARK_JOB_TMP, default the system's temporary
directory). Session: time zone UTC, ANSI mode as Spark 4 ships it (on; SPARK_JOB_ANSI=false turns
it off), local[2], 4 shuffle partitions, adaptive execution. Needs Java 17+ and `pip install
pyspark` (4.x).
"""

import datetime
import decimal
import json
import os
import shutil
import sys
import tempfile
import time

# Timestamps come back to Python as naive datetimes in the process's time zone: make that UTC
# before pyspark reads the clock, so that values are the session's UTC values.
os.environ["TZ"] = "UTC"
if hasattr(time, "tzset"):
    time.tzset()


def quote(name):
    return "`" + name.replace("`", "``") + "`"


def spark_type(duckdb_type):
    t = duckdb_type.strip().upper()
    if t.endswith("[]"):
        return "ARRAY<{}>".format(spark_type(t[:-2]))
    if t.startswith("DECIMAL"):
        return t.replace(" ", "")
    return {
        "VARCHAR": "STRING",
        "TEXT": "STRING",
        "BIGINT": "BIGINT",
        "INTEGER": "INT",
        "DOUBLE": "DOUBLE",
        "BOOLEAN": "BOOLEAN",
        "DATE": "DATE",
        "TIMESTAMP": "TIMESTAMP",
    }[t]


def column_expr(c):
    """The Spark expression that turns the staged text column into the declared type."""
    col = quote(c["name"])
    t = spark_type(c["type"])
    if t == "STRING":
        return col
    if t.startswith("ARRAY<"):
        element = t[len("ARRAY<") : -1]
        if element in ("STRING", "DATE", "TIMESTAMP"):
            parsed = "from_json({}, 'ARRAY<STRING>')".format(col)
            if element == "STRING":
                return parsed
            return "transform({}, x -> CAST(x AS {}))".format(parsed, element)
        return "from_json({}, '{}')".format(col, t)
    return "CAST({} AS {})".format(col, t)


def load_table(spark, table):
    import csv

    from pyspark.sql.types import StringType, StructField, StructType

    columns = table["columns"]
    with open(table["csv"], newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader)
        names = [c["name"] for c in columns]
        if header != names:
            raise RuntimeError(
                "{}: header {} is not the declared columns {}".format(table["csv"], header, names)
            )
        rows = [[None if v == "" else v for v in record] for record in reader if record]
    schema = StructType([StructField(c["name"], StringType(), True) for c in columns])
    staged = "cdp_staged_" + table["name"]
    spark.createDataFrame(rows, schema).createOrReplaceTempView(staged)
    spark.sql("DROP TABLE IF EXISTS {}".format(quote(table["name"])))
    spark.sql(
        "CREATE TABLE {} AS SELECT {} FROM {}".format(
            quote(table["name"]),
            ", ".join("{} AS {}".format(column_expr(c), quote(c["name"])) for c in columns),
            quote(staged),
        )
    )
    spark.catalog.dropTempView(staged)
    # Inputs must not lose rows or values on the way (a cast that gives null, a bad list).
    loaded = spark.sql(
        "SELECT count(*) AS n, {} FROM {}".format(
            ", ".join("count({}) AS {}".format(quote(c["name"]), quote(c["name"])) for c in columns),
            quote(table["name"]),
        )
    ).collect()[0]
    if loaded[0] != len(rows):
        raise RuntimeError("table `{}`: {} rows loaded of {}".format(table["name"], loaded[0], len(rows)))
    for k, c in enumerate(columns):
        expected = sum(1 for r in rows if r[k] is not None)
        if loaded[k + 1] != expected:
            raise RuntimeError(
                "table `{}`: column `{}` has {} values after loading, {} in the CSV".format(
                    table["name"], c["name"], loaded[k + 1], expected
                )
            )


def short(sql):
    flat = " ".join(sql.split())
    return flat if len(flat) <= 300 else flat[:300] + "…"


def first_line(message):
    lines = [l for l in str(message).strip().splitlines() if l.strip()]
    return "\n".join(lines[:12])


class Runner:
    def __init__(self, spark):
        self.spark = spark
        self.timings = []

    def sql(self, text):
        return self.spark.sql(text)

    def create(self, statement):
        start = time.monotonic()
        self.sql("DROP TABLE IF EXISTS {}".format(quote(statement["table"])))
        try:
            self.sql(statement["sql"])
        except Exception as e:  # pyspark's AnalysisException, ParseException, Py4JJavaError…
            raise RuntimeError(
                "building table `{}` failed: {}\n  statement: {}".format(
                    statement["table"], first_line(e), short(statement["sql"])
                )
            )
        self.timings.append([statement["table"], round(time.monotonic() - start, 3)])

    def changes(self, sql):
        try:
            rows = self.sql(sql).collect()
        except Exception as e:
            raise RuntimeError("convergence query failed: {}\n  query: {}".format(first_line(e), short(sql)))
        if len(rows) != 1 or len(rows[0]) != 1:
            raise RuntimeError("convergence query must return one row with one integer: " + sql)
        value = rows[0][0]
        return 0 if value is None else int(value)

    def run_program(self, program):
        # State kept between runs: created when missing, never dropped; after the run each state
        # table takes the contents of its `<table>_next` output.
        for state in program.get("initial_state", []):
            try:
                self.sql(state["sql"])
            except Exception as e:
                raise RuntimeError(
                    "creating state table `{}` failed: {}\n  statement: {}".format(
                        state["table"], first_line(e), short(state["sql"])
                    )
                )
        rounds = []
        for step in program["steps"]:
            step = {k.lower(): v for k, v in step.items()}
            if "create" in step:
                self.create(step["create"])
                continue
            loop = step["loop"]
            n = 0
            while True:
                if n == loop["max_rounds"]:
                    raise RuntimeError(
                        "loop did not converge in {} rounds ({} changes in the last round)".format(
                            n, self.changes(loop["converged"])
                        )
                    )
                n += 1
                for statement in loop["body"]:
                    self.create(statement)
                if self.changes(loop["converged"]) == 0:
                    break
            rounds.append(n)
        for state in program.get("initial_state", []):
            table = state["table"]
            # Spark cannot overwrite a table it reads from: copy through a fresh table.
            replace = "CREATE TABLE {} AS SELECT * FROM {}".format(quote(table), quote(table + "_next"))
            self.create({"table": table, "sql": replace})
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


def read_table(spark, name):
    df = spark.table(quote(name))
    columns = [{"name": f.name, "type": f.dataType.simpleString()} for f in df.schema.fields]
    rows = [[encode(v) for v in row] for row in df.collect()]
    return {"columns": columns, "rows": rows}


def session(scratch, threads):
    from pyspark.sql import SparkSession

    ansi = os.environ.get("SPARK_JOB_ANSI", "true")
    builder = (
        SparkSession.builder.master("local[{}]".format(threads))
        .appName("cdp-spark-job")
        .config("spark.sql.catalogImplementation", "in-memory")
        .config("spark.sql.warehouse.dir", os.path.join(scratch, "warehouse"))
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.ansi.enabled", ansi)
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.default.parallelism", str(threads))
        .config("spark.sql.adaptive.enabled", "true")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.memory", os.environ.get("SPARK_JOB_DRIVER_MEMORY", "2g"))
        .config("spark.driver.extraJavaOptions", "-Duser.timezone=UTC")
        .config("spark.executor.extraJavaOptions", "-Duser.timezone=UTC")
        .config("spark.local.dir", os.path.join(scratch, "local"))
    )
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def main():
    job_path, result_path = sys.argv[1], sys.argv[2]
    with open(job_path) as f:
        job = json.load(f)
    scratch = tempfile.mkdtemp(prefix="cdp-spark-", dir=os.environ.get("SPARK_JOB_TMP"))
    os.makedirs(os.path.join(scratch, "local"))
    spark = None
    code = 1
    try:
        t0 = time.monotonic()
        spark = session(scratch, int(job.get("threads") or 2))
        t1 = time.monotonic()
        for table in job["tables"]:
            load_table(spark, table)
        t2 = time.monotonic()
        runner = Runner(spark)
        rounds = runner.run_program(job["program"])
        t3 = time.monotonic()
        tables = {name: read_table(spark, name) for name in job["read"]}
        t4 = time.monotonic()
        result = {
            "rounds": rounds,
            "tables": tables,
            "version": spark.version,
            "ansi": spark.conf.get("spark.sql.ansi.enabled"),
            "seconds": {
                "startup": round(t1 - t0, 1),
                "load": round(t2 - t1, 1),
                "program": round(t3 - t2, 1),
                "read": round(t4 - t3, 1),
            },
            "steps": runner.timings,
        }
        code = 0
    except Exception as e:
        result = {"error": "{}: {}".format(type(e).__name__, e) if not isinstance(e, RuntimeError) else str(e)}
    finally:
        if spark is not None:
            spark.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    with open(result_path, "w") as f:
        json.dump(result, f)
    sys.exit(code)


if __name__ == "__main__":
    main()
