#!/usr/bin/env python3
"""Prepares one cdp batch job for tools/duckdb_job.py and tools/spark_job.py from a project.

Usage: prepare_job.py PROJECT_DIR PROGRAM.json OUT_DIR [JOB_NAME]

Reads the project's cdp.toml (source bindings) and the `source` definitions of its .cdp files
(declared columns and types), re-writes every source's CSV files the way the Rust conformance
harness does (tests/e2e/engines/prepare.rs: declared columns in declared order, every value
checked, an empty field for null, timestamps `YYYY-MM-DD HH:MM:SS[.ffffff]`, durations as integer
milliseconds, lists as JSON arrays), and writes OUT_DIR/JOB_NAME.json (default `job`): the input
tables with DuckDB column types, the program (compiled by `cdp compile --out`, steps in the
runners' lower-case form) and the tables to read (the program's outputs, or every table it builds
when it names none). Prepared CSVs go to OUT_DIR/inputs/ (shared by every job of OUT_DIR).

It also writes OUT_DIR/approximate.json: the output columns that hold estimates (features
computed with approx_count_distinct, directly or through other such features, and metric
measures using it), as tests/e2e/engines.rs `approximate_columns` finds them. Standard library
only; the .cdp reading here is a small tokenizer that understands what those two things need.
"""

import csv
import datetime
import decimal
import glob
import json
import os
import re
import sys
import tomllib

DEFINITION_WORDS = {
    "source",
    "entity",
    "attribute",
    "behavior",
    "feature",
    "segment",
    "journey",
    "metric",
    "activation",
}


class ProjectError(Exception):
    pass


# ------------------------------------------------------------------------------ .cdp reading


def tokenize(text, path):
    """Tokens as (kind, text): word, ident (back-quoted), string, number, punct."""
    tokens = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in " \t\r\n":
            i += 1
        elif c == "#":
            while i < n and text[i] != "\n":
                i += 1
        elif c == '"':
            j = i + 1
            out = []
            while j < n and text[j] != '"':
                if text[j] == "\\" and j + 1 < n:
                    out.append(text[j + 1])
                    j += 2
                else:
                    out.append(text[j])
                    j += 1
            tokens.append(("string", "".join(out)))
            i = j + 1
        elif c == "`":
            j = text.find("`", i + 1)
            if j < 0:
                raise ProjectError("{}: unterminated quoted name".format(path))
            tokens.append(("ident", text[i + 1 : j]))
            i = j + 1
        elif c.isalpha() or c == "_":
            m = re.compile(r"[A-Za-z_][A-Za-z0-9_]*").match(text, i)
            tokens.append(("word", m.group(0)))
            i = m.end()
        elif c.isdigit():
            m = re.compile(r"[0-9]+(\.[0-9]+)?[A-Za-z%]*").match(text, i)
            tokens.append(("number", m.group(0)))
            i = m.end()
        elif text.startswith("->", i):
            tokens.append(("punct", "->"))
            i += 2
        else:
            tokens.append(("punct", c))
            i += 1
    return tokens


def project_files(root):
    """Every .cdp file under the project, sorted, skipping `.cdp/`, `target/` and hidden dirs."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "target")
        for f in filenames:
            if f.endswith(".cdp"):
                found.append(os.path.join(dirpath, f))
    return sorted(found)


def definitions(tokens):
    """(keyword, name, tokens of the definition) of every top-level definition."""
    out = []
    depth = 0
    start = None
    for i, (kind, text) in enumerate(tokens):
        if kind == "punct" and text in "([{":
            depth += 1
        elif kind == "punct" and text in ")]}":
            depth -= 1
        elif depth == 0 and kind == "word" and text in DEFINITION_WORDS:
            nxt = tokens[i + 1] if i + 1 < len(tokens) else None
            if nxt and nxt[0] in ("word", "ident"):
                if start is not None:
                    out.append(start + (tokens[start[2] : i],))
                start = (text, nxt[1], i)
    if start is not None:
        out.append(start + (tokens[start[2] :],))
    return [(kw, name, toks) for kw, name, _, toks in out]


def parse_type(toks, i):
    kind, text = toks[i]
    if kind == "word" and text == "decimal":
        # decimal ( p , s )
        return {"t": "decimal", "p": int(toks[i + 2][1]), "s": int(toks[i + 4][1])}, i + 6
    if kind == "word" and text == "list":
        inner, j = parse_type(toks, i + 2)
        return {"t": "list", "inner": inner}, j + 1  # the closing `>`
    if kind == "word" and text in (
        "string",
        "int",
        "float",
        "bool",
        "date",
        "timestamp",
        "duration",
    ):
        return {"t": text}, i + 1
    raise ProjectError("unknown column type `{}`".format(text))


def source_columns(toks):
    """The declared columns of one `source` definition's tokens."""
    for i in range(len(toks) - 1):
        if toks[i] == ("word", "columns") and toks[i + 1] == ("punct", "{"):
            j = i + 2
            columns = []
            while toks[j] != ("punct", "}"):
                if toks[j] == ("punct", ","):
                    j += 1
                    continue
                name = toks[j][1]
                if toks[j + 1] != ("punct", ":"):
                    raise ProjectError("cannot read column `{}`".format(name))
                ty, j = parse_type(toks, j + 2)
                nullable = False
                if toks[j] == ("punct", "?"):
                    nullable = True
                    j += 1
                if toks[j] == ("word", "pii"):
                    j += 1
                if toks[j][0] == "string":
                    j += 1
                columns.append({"name": name, "ty": ty, "nullable": nullable})
            return columns
    return []


def read_project(root):
    sources = {}
    features = []  # (name, tokens of the expression), in file order
    measures = []  # (name, tokens)
    for path in project_files(root):
        with open(path, encoding="utf-8") as f:
            toks = tokenize(f.read(), path)
        for kw, name, dtoks in definitions(toks):
            if kw == "source":
                sources[name] = source_columns(dtoks)
            elif kw == "feature":
                eq = dtoks.index(("punct", "="))
                features.append((name, dtoks[eq + 1 :]))
            elif kw == "metric":
                depth = 0
                current = None
                for k, (kind, text) in enumerate(dtoks):
                    if kind == "punct" and text in "([{":
                        depth += 1
                    elif kind == "punct" and text in ")]}":
                        depth -= 1
                    if depth == 1 and kind == "word" and text in (
                        "measure",
                        "grain",
                        "segments",
                        "owner",
                        "tags",
                    ):
                        if current:
                            measures.append(current)
                        current = (dtoks[k + 1][1], []) if text == "measure" else None
                    elif current is not None and depth >= 1:
                        current[1].append((kind, text))
                if current:
                    measures.append(current)
    return sources, features, measures


def approximate_columns(features, measures):
    def calls_approx(toks):
        return any(
            toks[i] == ("word", "approx_count_distinct") and toks[i + 1] == ("punct", "(")
            for i in range(len(toks) - 1)
        )

    approx = set()
    changed = True
    while changed:  # features may reference features defined later in another file
        changed = False
        for name, toks in features:
            if name in approx:
                continue
            if calls_approx(toks) or any(k == "word" and t in approx for k, t in toks):
                approx.add(name)
                changed = True
    names = [name for name, _ in features if name in approx]
    names += [name for name, toks in measures if calls_approx(toks)]
    return names


# ------------------------------------------------------------------------------ values


def parse_timestamp_micros(text):
    for fmt in ("%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S.%f",
                "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"):
        try:
            if ".%f" in fmt:
                head, _, frac = text.partition(".")
                if not frac.isdigit() or len(frac) > 9:
                    continue
                if len(frac) > 6 and frac[6:].strip("0"):
                    raise ValueError("is more precise than microseconds")
                t = datetime.datetime.strptime(head + "." + frac[:6], fmt)
            else:
                t = datetime.datetime.strptime(text, fmt)
        except ValueError as e:
            if "more precise" in str(e):
                raise
            continue
        epoch = datetime.datetime(1970, 1, 1)
        delta = t - epoch
        return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds
    raise ValueError("is not a timestamp (like 2024-11-03 14:22:05)")


def timestamp_text(micros):
    secs, frac = divmod(micros, 1_000_000)
    t = datetime.datetime(1970, 1, 1) + datetime.timedelta(seconds=secs)
    base = t.strftime("%Y-%m-%d %H:%M:%S")
    if t.year < 1000:
        base = "{:04d}{}".format(t.year, base[len(str(t.year)) :])
    return base if frac == 0 else "{}.{:06d}".format(base, frac)


DURATION_UNITS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


def parse_duration_ms(text):
    m = re.fullmatch(r"(-?[0-9]+)(ms|s|m|h|d|w)", text)
    if not m:
        raise ValueError("is not a duration (like 95s, 500ms, 15m, 12h, 30d or 2w)")
    return int(m.group(1)) * DURATION_UNITS[m.group(2)]


def check_decimal(text, precision, scale):
    decimal.getcontext().prec = 100
    try:
        d = decimal.Decimal(text.strip())
    except decimal.InvalidOperation:
        raise ValueError("is not a decimal")
    if not d.is_finite():
        raise ValueError("is not a decimal")
    q = d.quantize(decimal.Decimal(1).scaleb(-scale)) if scale >= 0 else d
    if q != d:
        raise ValueError("has more than {} decimal places".format(scale))
    if len(q.as_tuple().digits) - max(0, -q.as_tuple().exponent) > precision - scale and q != 0:
        raise ValueError("does not fit decimal({}, {})".format(precision, scale))


def cell(ty, text):
    t = ty["t"]
    if t == "string":
        return text
    if t == "int":
        if not re.fullmatch(r"[+-]?[0-9]+", text):
            raise ValueError("is not an int")
        v = int(text)
        if not -(2**63) <= v < 2**63:
            raise ValueError("is not an int")
        return str(v)
    if t == "float":
        try:
            f = float(text)
        except ValueError:
            raise ValueError("is not a float")
        if f != f:
            return "NaN"
        if f in (float("inf"), float("-inf")):
            return "Infinity" if f > 0 else "-Infinity"
        return repr(f)
    if t == "decimal":
        check_decimal(text, ty["p"], ty["s"])
        return text
    if t == "bool":
        if text.lower() in ("true", "false"):
            return text.lower()
        raise ValueError("is not a bool")
    if t == "date":
        try:
            datetime.date.fromisoformat(text)
        except ValueError:
            raise ValueError("is not a date (like 2024-11-03)")
        return text
    if t == "timestamp":
        return timestamp_text(parse_timestamp_micros(text))
    if t == "duration":
        return str(parse_duration_ms(text))
    if t == "list":
        try:
            items = json.loads(text)
        except ValueError:
            raise ValueError("is not a JSON array")
        if not isinstance(items, list):
            raise ValueError("is not a JSON array")
        inner = ty["inner"]
        out = []
        for item in items:
            if item is None:
                out.append(None)
                continue
            s = item if isinstance(item, str) else json.dumps(item)
            v = cell(inner, s)
            if inner["t"] in ("int", "float", "decimal", "bool", "duration"):
                try:
                    out.append(json.loads(v))
                except ValueError:
                    out.append(v)
            else:
                out.append(v)
        return json.dumps(out, separators=(",", ":"), ensure_ascii=False)
    raise ValueError("has no value of type {}".format(t))


def duckdb_type(ty):
    t = ty["t"]
    if t == "list":
        if ty["inner"]["t"] == "list":
            raise ProjectError("no DuckDB column type for a list of lists")
        return duckdb_type(ty["inner"]) + "[]"
    if t == "decimal":
        return "DECIMAL({},{})".format(ty["p"], ty["s"])
    return {
        "string": "VARCHAR",
        "int": "BIGINT",
        "duration": "BIGINT",
        "float": "DOUBLE",
        "bool": "BOOLEAN",
        "date": "DATE",
        "timestamp": "TIMESTAMP",
    }[t]


def prepare_csv(columns, files, out):
    rows = 0
    with open(out, "w", newline="", encoding="utf-8") as w:
        writer = csv.writer(w, lineterminator="\n")
        writer.writerow([c["name"] for c in columns])
        for path in files:
            with open(path, newline="", encoding="utf-8") as f:
                reader = csv.reader(f)
                header = [h.lstrip("\ufeff") for h in next(reader, [])]
                positions = []
                for c in columns:
                    if c["name"] not in header:
                        raise ProjectError("{}: no column `{}`".format(path, c["name"]))
                    positions.append(header.index(c["name"]))
                for record in reader:
                    line = reader.line_num
                    if not record:
                        continue
                    fields = []
                    for c, pos in zip(columns, positions):
                        text = record[pos] if pos < len(record) else ""
                        if text == "":
                            if not c["nullable"]:
                                raise ProjectError(
                                    "{}:{}: column `{}` is empty but not nullable".format(
                                        path, line, c["name"]
                                    )
                                )
                            fields.append("")
                            continue
                        try:
                            fields.append(cell(c["ty"], text))
                        except ValueError as e:
                            raise ProjectError(
                                "{}:{}: column `{}`: {!r} {}".format(path, line, c["name"], text, e)
                            )
                    writer.writerow(fields)
                    rows += 1
    return rows


# ------------------------------------------------------------------------------ the job


def runner_steps(program):
    """`cdp compile --out` serializes steps as {"Create": …} / {"Loop": …}; the runners read
    {"create": …} / {"loop": …}."""
    out = []
    for step in program["steps"]:
        ((kind, body),) = step.items()
        out.append({kind.lower(): body})
    return out


def program_tables(steps):
    names = []
    for step in steps:
        statements = [step["create"]] if "create" in step else step["loop"]["body"]
        for s in statements:
            if s["table"] not in names:
                names.append(s["table"])
    return names


def main():
    if len(sys.argv) not in (4, 5):
        sys.exit(__doc__)
    root, program_path, out_dir = sys.argv[1:4]
    job_name = sys.argv[4] if len(sys.argv) == 5 else "job"
    try:
        with open(os.path.join(root, "cdp.toml"), "rb") as f:
            config = tomllib.load(f)
        sources, features, measures = read_project(root)
        os.makedirs(os.path.join(out_dir, "inputs"), exist_ok=True)
        tables = []
        for name, binding in config.get("sources", {}).items():
            if name not in sources:
                raise ProjectError("cdp.toml binds `{}`, which no .cdp file defines".format(name))
            path = binding.get("path")
            if not path:
                raise ProjectError("source `{}` has no `path` in cdp.toml".format(name))
            fmt = binding.get("format") or path.rsplit(".", 1)[-1].lower()
            if fmt != "csv":
                raise ProjectError("source `{}`: this harness loads CSV only, not {}".format(name, fmt))
            full = os.path.join(root, path)
            files = sorted(p for p in glob.glob(full) if os.path.isfile(p))
            if not files:
                raise ProjectError("source `{}`: no file matches `{}`".format(name, path))
            table = binding.get("table") or name
            csv_path = os.path.abspath(os.path.join(out_dir, "inputs", table + ".csv"))
            rows = prepare_csv(sources[name], files, csv_path)
            tables.append(
                {
                    "name": table,
                    "csv": csv_path,
                    "rows": rows,
                    "columns": [
                        {"name": c["name"], "type": duckdb_type(c["ty"]), "nullable": c["nullable"]}
                        for c in sources[name]
                    ],
                }
            )
        missing = sorted(set(sources) - set(config.get("sources", {})))
        if missing:
            raise ProjectError("sources without a binding in cdp.toml: " + ", ".join(missing))
        with open(program_path) as f:
            program = json.load(f)
        steps = runner_steps(program)
        job = {
            "dialect": program.get("dialect"),
            "tables": tables,
            "program": {"initial_state": program.get("initial_state", []), "steps": steps},
            "read": program.get("outputs") or program_tables(steps),
            "threads": 2,
        }
        with open(os.path.join(out_dir, job_name + ".json"), "w") as f:
            json.dump(job, f)
        with open(os.path.join(out_dir, "approximate.json"), "w") as f:
            json.dump(approximate_columns(features, measures), f)
    except (ProjectError, OSError, KeyError, IndexError, ValueError, tomllib.TOMLDecodeError) as e:
        print("prepare_job.py: {}".format(e), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
