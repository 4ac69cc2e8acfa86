#!/usr/bin/env python3
"""sluice against DuckDB (its CLI and its Python package), Polars and DataFusion's Python package, on the same
files in the same run, every tool writing zstd Parquet at the same level.

    python3 benches/run.py                   # 1M and 10M order rows, zstd level 1 and each tool's default
    python3 benches/run.py --size small      # 1M rows only: a few minutes
    python3 benches/run.py --size full       # 1M, 10M and 30M rows
    python3 benches/run.py --only w1 --levels 1 --runs 1     # a quick look at one workload

It builds sluice and bench-log (`cargo build --release -p sluice-workers -p sluice-benches`), installs the peers pinned in
benches/requirements.txt into benches/.venv (DuckDB's CLI from the `duckdb-cli` package), generates seeded data
into benches/data/ (once; `.complete` marks a finished set), then runs each workload --runs times (default 3),
alternating sluice and each peer, each run a fresh process with a new output folder (and, for sluice, a new
checkpoint log). Output folders are removed only at the end: on a file system that slows down creating files
soon after many were removed (ext4 without a journal searches past recently freed inodes), removing one run's
thousands of files would slow whichever tool runs next. For each tool it reports the median wall time, the peak
RSS (the process's own and its children's, from wait4), the CPU time and the bytes written; for sluice, its time
÷ the fastest peer's and its peak RSS ÷ the median peer's. One table per level: `1` (every tool told
`zstd` level 1) and `default` (every tool told `zstd` and nothing else: DuckDB 3, Polars 3, DataFusion 4,
sluice 1). It prints the tables and writes them into benches/README.md between the `peers:` markers, with the
date and the machine; the raw figures go to benches/data/results.json.

Workloads (every tool gets the same declared column types, the same SQL and zstd Parquet out):
  W1  CSV -> Parquet
  W2  CSV -> filter + derived decimal column -> Parquet
  W3  NDJSON -> group by country, status -> Parquet (one global aggregate: one sluice batch)
  W4  2,000 small CSV files (500 rows each) -> one Parquet each (the per-file trigger case)
  cold start: one 10-row CSV, process start to commit
  log overhead: bench-log, the checkpoint log's records of 2,000 one-file batches on the same disk

The orders: 10 columns (id, customer "Last, First" with accents and quotes, country, decimal amount, status,
two timestamps (shipped_at empty for the 4 in 7 not shipped), a float unit price, a short note, and free text of 0-60
characters with commas and quotes, a third of it empty), as CSV (RFC 4180 quoting) and as NDJSON.
"""

import argparse
import datetime
import json
import os
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from peers import COLUMNS, W2_SQL, W3_SQL, duckdb_statements  # noqa: E402

VENV = os.path.join(HERE, ".venv")
SLUICE = os.path.join(ROOT, "target", "release", "sluice")
BENCH_LOG = os.path.join(ROOT, "target", "release", "bench-log")
DUCKDB_CLI = os.path.join(VENV, "bin", "duckdb")
PEERS = ["duckdb-cli", "duckdb", "polars", "datafusion"]
NAMES = {"sluice": "sluice", "duckdb-cli": "DuckDB CLI", "duckdb": "DuckDB (Python)", "polars": "Polars",
         "datafusion": "DataFusion (Python)"}
ROWS_PER_FILE = 1_000_000
SIZES = {"small": ["1m"], "default": ["1m", "10m"], "full": ["1m", "10m", "30m"]}

SCHEMA = "[source.schema]\n" + "".join(
    f'{name} = "{"decimal(10,2)" if kind == "decimal" else kind}"\n' for name, kind in COLUMNS)


def pipeline(name, inbox, out, fmt, level, sql=None, one_batch=False, per_file=False):
    trigger = ""
    if one_batch:
        trigger = '[trigger]\nmax_files_per_batch = 100000\nmax_bytes_per_batch = "64GiB"\n'
    elif per_file:
        trigger = "[trigger]\nmax_files_per_batch = 1\n"
    transform = f'[transform]\nsql = "{sql}"\n' if sql else ""
    level_line = "" if level == "default" else f"compression_level = {level}\n"
    return (f'[pipeline]\nname = "{name}"\n[source]\ntype = "files"\nurl = "{inbox}"\npattern = "*.{fmt}"\n'
            f'format = "{fmt}"\n{SCHEMA}{trigger}{transform}'
            f'[sink]\ntype = "files"\nurl = "{out}"\ncompression = "zstd"\n{level_line}')


# --- data ---------------------------------------------------------------------------------------------

COUNTRIES = ["FR", "DE", "US", "JP", "BR", "IN", "ES", "IT"]
STATUSES = ["paid", "paid", "paid", "shipped", "shipped", "cancelled", "refunded"]
FIRST = ["Ada", "Grace", "Émile", "Zoë", "Björn", "Chloé", "Sørina", "Jürgen", "Mária", "Łukasz", "Kenji", "Ana"]
LAST = ["Lovelace", "Hopper", "O'Brien", "Núñez", "Dvořák", "Søndergaard", "Okafor", "Nakamura", "Ferreira"]
NOTES = ["", "", "fragile", "leave at door, please", 'gift: "happy birthday"', "appel avant livraison — merci",
         "Lieferung ab 18 Uhr", "置き配希望", "call, then ring twice"]
WORDS = ["box", "arrived", "late", "damaged", "great", "thanks", "door", "\"urgent\"", "colour", "size", "M,", "L",
         "refund?", "ok", "résumé", "wrong", "item", "please", "call", "me", "before", "5pm,", "said \"fine\"", "again",
         "gift", "wrap", "no", "invoice", "needed", "Größe", "42", "x2", "see", "note:", "its", "fine", "a", "the"]


def pools(rng):
    """Values drawn from per column: whole columns are drawn at once (random.choices), which keeps generating
    10M rows to a couple of minutes."""
    customers = [f"{last}, {first}" for last in LAST for first in FIRST]
    times = [f"2026-{rng.randint(1, 12):02}-{rng.randint(1, 28):02}T{rng.randint(0, 23):02}:"
             f"{rng.randint(0, 59):02}:{rng.randint(0, 59):02}" for _ in range(50_000)]
    comments = []
    for _ in range(100_000):
        if rng.random() < 1 / 3:
            comments.append("")
            continue
        text = " ".join(rng.choices(WORDS, k=rng.randint(1, 12)))[:60].strip()
        comments.append(text)
    amounts = [f"{cents / 100:.2f}" for cents in range(100, 250_001)]
    prices = [repr(round(rng.uniform(0.5, 400.0), rng.choice([2, 3, 6]))) for _ in range(20_000)]
    return customers, times, comments, amounts, prices


def order_columns(rng, values, first_id, n):
    customers, times, comments, amounts, prices = values
    statuses = rng.choices(STATUSES, k=n)
    shipped = [at if status in ("shipped", "refunded") else "" for status, at in zip(statuses, rng.choices(times, k=n))]
    return (range(first_id, first_id + n), rng.choices(customers, k=n), rng.choices(COUNTRIES, k=n),
            rng.choices(amounts, k=n), statuses, rng.choices(times, k=n), shipped, rng.choices(prices, k=n),
            rng.choices(NOTES, k=n), rng.choices(comments, k=n))


def csv_field(text):
    if any(c in text for c in ',"\n'):
        return '"' + text.replace('"', '""') + '"'
    return text


def write_csv(path, columns):
    ids, customers, countries, amounts, statuses, ordered, shipped, prices, notes, comments = columns
    with open(path, "w", encoding="utf-8", newline="") as out:
        out.write(",".join(name for name, _ in COLUMNS) + "\n")
        out.writelines(f"{i},{csv_field(customer)},{country},{amount},{status},{at},{sent},{price},"
                       f"{csv_field(note)},{csv_field(comment)}\n"
                       for i, customer, country, amount, status, at, sent, price, note, comment
                       in zip(ids, customers, countries, amounts, statuses, ordered, shipped, prices, notes, comments))


def write_json(path, columns):
    ids, customers, countries, amounts, statuses, ordered, shipped, prices, notes, comments = columns
    text = lambda value: json.dumps(value, ensure_ascii=False) if value else "null"
    with open(path, "w", encoding="utf-8") as out:
        out.writelines(f'{{"order_id":{i},"customer":{text(customer)},"country":"{country}","amount":{amount},'
                       f'"status":"{status}","ordered_at":"{at}","shipped_at":{text(sent)},"unit_price":{price},'
                       f'"note":{text(note)},"comment":{text(comment)}}}\n'
                       for i, customer, country, amount, status, at, sent, price, note, comment
                       in zip(ids, customers, countries, amounts, statuses, ordered, shipped, prices, notes, comments))


def new_set(data, subs):
    """False if `data` holds a finished set (`.complete`); else empties it, makes `subs` in it and says True."""
    if os.path.exists(os.path.join(data, ".complete")):
        return False
    shutil.rmtree(data, ignore_errors=True)
    for sub in subs:
        os.makedirs(os.path.join(data, sub))
    return True


def generate_orders(data, files):
    """`files` CSV and NDJSON files of 1M rows each into data/csv and data/json."""
    if not new_set(data, ("csv", "json")):
        return
    rng = random.Random(20261202)
    values = pools(rng)
    print(f"generating {files} x {ROWS_PER_FILE:,} rows of CSV and NDJSON into {data} ...", flush=True)
    for f in range(files):
        columns = order_columns(rng, values, f * ROWS_PER_FILE, ROWS_PER_FILE)
        write_csv(os.path.join(data, "csv", f"orders-{f:03}.csv"), columns)
        write_json(os.path.join(data, "json", f"orders-{f:03}.json"), columns)
    open(os.path.join(data, ".complete"), "w").close()


def generate_small(data):
    """2,000 CSV files of 500 rows, and one of 10 rows for the cold start."""
    if not new_set(data, ("small", "tiny")):
        return
    rng = random.Random(20261203)
    values = pools(rng)
    print("generating 2,000 small CSV files ...", flush=True)
    for f in range(2000):
        write_csv(os.path.join(data, "small", f"orders-{f:04}.csv"), order_columns(rng, values, f * 500, 500))
    write_csv(os.path.join(data, "tiny", "orders.csv"), order_columns(rng, values, 0, 10))
    open(os.path.join(data, ".complete"), "w").close()


# --- running ------------------------------------------------------------------------------------------

def timed(command, cwd=None):
    """Wall seconds, peak RSS (MB), CPU seconds and printed output of one process (its children included);
    fails loudly if it fails. Its output goes to files, not pipes, so that a chatty process never waits on a
    full pipe."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=cwd, stdout=out, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)
        took = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        printed, complained = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{printed}\n{complained[-4000:]}")
    return took, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime, printed


def output_bytes(folder):
    """Bytes of the Parquet files below `folder` (sluice's checkpoint log and staging excluded)."""
    total = 0
    for parent, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(("_", "."))]
        total += sum(os.path.getsize(os.path.join(parent, name)) for name in names if name.endswith(".parquet"))
    return total


def fresh(folder):
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    return folder


def setup(sizes, build):
    """Builds sluice, installs the peers and generates the data; returns the venv's python and the data folder."""
    if build:
        print("building sluice (cargo build --release -p sluice-workers -p sluice-benches) ...", flush=True)
        subprocess.run(["cargo", "build", "--release", "--locked", "-p", "sluice-workers", "-p", "sluice-benches"],
                       cwd=ROOT, check=True)
    for binary in (SLUICE, BENCH_LOG):
        if not os.access(binary, os.X_OK):
            raise SystemExit(f"no binary at {binary}; run without --no-build")
    python = os.path.join(VENV, "bin", "python")
    if not os.path.exists(python):
        print("installing the peers into benches/.venv ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
    subprocess.run([python, "-m", "pip", "install", "-q", "-r", os.path.join(HERE, "requirements.txt")], check=True)
    data = os.path.join(HERE, "data")
    for size in sizes:
        generate_orders(os.path.join(data, size), int(size[:-1]))
    if sizes:
        generate_small(os.path.join(data, "small-files"))
    return python, data


def command_for(tool, key, inbox, out, level, work, options):
    """The command one run of `tool` is; writes sluice's pipeline file or DuckDB CLI's script first."""
    if tool == "sluice":
        toml = os.path.join(work, f"{key}.toml")
        with open(toml, "w") as f:
            f.write(pipeline(key, inbox, out, level=level, **options))
        return [SLUICE, "run", toml, "--until-caught-up"]
    if tool == "duckdb-cli":
        script = os.path.join(work, f"{key}.sql")
        with open(script, "w") as f:
            f.write("\n".join(duckdb_statements(key, inbox, out, level)) + "\n")
        return [DUCKDB_CLI, "-bail", "-f", script]
    return [os.path.join(VENV, "bin", "python"), os.path.join(HERE, "peers.py"), tool, key, inbox, out, level]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=list(SIZES), default="default",
                        help="small: 1M rows; default: 1M and 10M; full: 1M, 10M and 30M")
    parser.add_argument("--levels", default="1,default", help="comma-separated zstd levels, `default` for each "
                        "tool's own (default: 1,default)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", help="comma-separated workloads, e.g. w1,w2")
    parser.add_argument("--no-readme", action="store_true", help="print the tables only")
    parser.add_argument("--no-build", action="store_true", help="use target/release/sluice as it is")
    args = parser.parse_args()
    sizes = SIZES[args.size]
    levels = args.levels.split(",")
    _, data = setup(sizes, not args.no_build)
    work = fresh(os.path.join(data, "work"))

    workloads = {
        "w1": ("W1 CSV → Parquet", "csv", dict(fmt="csv")),
        "w2": ("W2 CSV → filter + derived column → Parquet", "csv", dict(fmt="csv", sql=W2_SQL)),
        "w3": ("W3 NDJSON → group by → Parquet", "json", dict(fmt="json", sql=W3_SQL, one_batch=True)),
        "w4": ("W4 2,000 small CSV → one Parquet each", "small", dict(fmt="csv", per_file=True)),
    }
    chosen = args.only.split(",") if args.only else list(workloads)
    results = []
    for level in levels:
        for key in chosen:
            title, folder, options = workloads[key]
            for size in (["2,000 × 500"] if key == "w4" else sizes):
                inbox = (os.path.join(data, "small-files", "small") if key == "w4"
                         else os.path.join(data, size, folder))
                runs = {tool: [] for tool in ["sluice"] + PEERS}
                for run in range(args.runs):
                    for tool in runs:
                        out = fresh(os.path.join(work, f"{key}-{size}-{level}-{tool}-{run + 1}"))
                        command = command_for(tool, key, inbox, out, level, work, options)
                        took, rss, cpu, printed = timed(command)
                        written = output_bytes(out)
                        runs[tool].append((took, rss, cpu, written))
                        print(f"{key} {size:>4} level {level:7} run {run + 1} {tool:10} {took:7.2f} s {rss:6.0f} MB "
                              f"{cpu:6.2f} s CPU {written / 1e6:8.1f} MB out  {printed.strip()[:80]}", flush=True)
                results.append(dict(workload=key, title=title, size=size, level=level, tools={
                    tool: dict(wall_s=statistics.median(r[0] for r in rs), rss_mb=max(r[1] for r in rs),
                               cpu_s=statistics.median(r[2] for r in rs), bytes=statistics.median(r[3] for r in rs),
                               walls=[r[0] for r in rs])
                    for tool, rs in runs.items()}))

    tiny = os.path.join(work, "tiny.toml")
    cold = []
    for run in range(max(5, args.runs)):
        with open(tiny, "w") as f:
            f.write(pipeline("tiny", os.path.join(data, "small-files", "tiny"),
                             fresh(os.path.join(work, f"tiny-{run + 1}")), "csv", "default"))
        cold.append(timed([SLUICE, "run", tiny, "--until-caught-up"])[0])
    cold_ms = statistics.median(cold) * 1000
    print(f"cold start: {cold_ms:.0f} ms", flush=True)

    logged = [json.loads(timed([BENCH_LOG, "--batches", "2000", "--dir", work])[3]) for _ in range(args.runs)]
    log_cost = {key: statistics.median(run[key] for run in logged)
                for key in ("plan_ms", "lease_commit_median_us", "lease_commit_p90_us")}
    print(f"log overhead: {log_cost}", flush=True)

    shutil.rmtree(work, ignore_errors=True)
    with open(os.path.join(data, "results.json"), "w") as f:
        json.dump(dict(commit=git_head(), date=str(datetime.date.today()), results=results, cold_ms=cold,
                       log=log_cost), f, indent=1)

    table = render(results, cold_ms, cold, log_cost, args)
    print("\n" + table)
    if not args.no_readme:
        write_into_readme("peers", table)


def write_into_readme(marker, table):
    """Puts `table` between the `<marker>:start` and `<marker>:end` comments of benches/README.md."""
    readme = os.path.join(HERE, "README.md")
    text = open(readme, encoding="utf-8").read()
    block = f"<!-- {marker}:start -->\n{table}\n<!-- {marker}:end -->"
    if f"<!-- {marker}:start -->" in text:
        text = re.sub(f"<!-- {marker}:start -->.*<!-- {marker}:end -->", lambda _: block, text, flags=re.S)
    else:
        text += "\n" + block + "\n"
    open(readme, "w", encoding="utf-8").write(text)
    print("written into benches/README.md")


def render(results, cold_ms, cold, log_cost, args):
    cores = os.cpu_count()
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor() or "unknown CPU"
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    versions = open(os.path.join(HERE, "requirements.txt")).read()
    pinned = ", ".join(line for line in versions.splitlines() if line and not line.startswith("#"))
    lines = [
        f"Measured {datetime.date.today()} on {cores} cores ({model}), {memory:.0f} GiB, {platform.system()}; "
        f"median of {args.runs} runs, alternating; {pinned}; sluice release build of {git_head()}. "
        "Each cell: median wall time · peak RSS · Parquet bytes written. **sluice ÷ fastest**: sluice's time ÷ the "
        "fastest peer's (below 1.00× sluice is faster); **RSS ÷ median**: sluice's peak RSS ÷ the median peer's; "
        "**cores busy**: CPU time ÷ wall time, sluice's and the fastest peer's.",
    ]
    for level in dict.fromkeys(r["level"] for r in results):
        told = "every tool told zstd level 1" if level == "1" else (
            f"zstd level {level}" if level != "default" else
            "every tool told `zstd` and no level: DuckDB 3, Polars 3, DataFusion 4, sluice 1")
        lines += ["", f"**Level {level}** ({told})", "",
                  "| workload | rows | " + " | ".join(NAMES[t] for t in ["sluice"] + PEERS) +
                  " | sluice ÷ fastest | fastest | RSS ÷ median | cores busy |",
                  "| --- | --- | " + " | ".join("---" for _ in ["sluice"] + PEERS) + " | --- | --- | --- | --- |"]
        for result in (r for r in results if r["level"] == level):
            tools = result["tools"]
            fastest = min(PEERS, key=lambda tool: tools[tool]["wall_s"])
            cell = lambda t: f"{tools[t]['wall_s']:.2f} s · {tools[t]['rss_mb']:.0f} MB · {size_text(tools[t]['bytes'])}"
            median_rss = statistics.median(tools[t]["rss_mb"] for t in PEERS)
            busy = lambda t: tools[t]["cpu_s"] / tools[t]["wall_s"]
            rows = result["size"].upper() if result["size"].endswith("m") else result["size"]
            lines.append(f"| {result['title']} | {rows} | " + " | ".join(cell(t) for t in ["sluice"] + PEERS) +
                         f" | {tools['sluice']['wall_s'] / tools[fastest]['wall_s']:.2f}× | {NAMES[fastest]} | "
                         f"{tools['sluice']['rss_mb'] / median_rss:.2f}× | {busy('sluice'):.1f}, {busy(fastest):.1f} |")
    lines.append("")
    lines.append(f"Cold start (one 10-row CSV, `sluice run --until-caught-up`, process start to exit after the commit): "
                 f"median **{cold_ms:.0f} ms** ({', '.join(f'{t * 1000:.0f}' for t in cold)} ms).")
    lines.append("")
    lines.append(f"Log overhead per batch (`bench-log`, 2,000 one-file batches in a log on the same disk, median of "
                 f"{args.runs} runs): its lease and commit records **{log_cost['lease_commit_median_us']:.0f} µs** "
                 f"(90th percentile {log_cost['lease_commit_p90_us']:.0f} µs); planning all 2,000 in one record "
                 f"{log_cost['plan_ms']:.1f} ms.")
    return "\n".join(lines)


def size_text(count):
    """Bytes as MB, or as KB below 0.1 MB (an aggregate's few rows)."""
    return f"{count / 1e6:.1f} MB" if count >= 100_000 else f"{count / 1e3:.1f} KB"


def git_head():
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "an unknown commit"


if __name__ == "__main__":
    main()
