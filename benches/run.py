#!/usr/bin/env python3
"""sluice against DuckDB, Polars and DataFusion's Python package, on the same files in the same run.

    python3 benches/run.py                 # small size (1M order rows, ~125 MB of CSV): a few minutes
    python3 benches/run.py --size full     # ~1 GB of CSV (8M rows)

It builds sluice and bench-log (`cargo build --release -p sluice-workers -p sluice-benches`), installs the peers pinned in
benches/requirements.txt into benches/.venv, generates seeded data into benches/data/<size>/, then runs
each workload --runs times (default 3), alternating sluice and each peer, each run a fresh process with a
new output folder (and, for sluice, a new checkpoint log). Output folders are removed only at the end: on a
file system that slows down creating files soon after many were removed (ext4 without a journal searches past
recently freed inodes), removing one run's thousands of files would slow whichever tool runs next. It reports the median wall time, the peak
RSS (the process's own, from wait4) and the ratio of sluice's time to each peer's, prints the table and
writes it into benches/README.md between the `peers:` markers, with the date and the machine.

Workloads (every tool gets the same declared column types and zstd Parquet out):
  W1  CSV -> Parquet
  W2  CSV -> filter + derived decimal column -> Parquet
  W3  NDJSON -> group by country, status -> Parquet (one global aggregate: one sluice batch)
  W4  2,000 small CSV files -> one Parquet each (the per-file trigger case)
  cold start: one 10-row CSV, process start to commit
  log overhead: bench-log, the checkpoint log's records of 2,000 one-file batches on the same disk
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
VENV = os.path.join(HERE, ".venv")
SLUICE = os.path.join(ROOT, "target", "release", "sluice")
BENCH_LOG = os.path.join(ROOT, "target", "release", "bench-log")
PEERS = ["duckdb", "polars", "datafusion"]

SCHEMA = """[source.schema]
order_id = "int64"
customer = "string"
country = "string"
amount = "decimal(10,2)"
status = "string"
ordered_at = "timestamp"
note = "string"
"""

W2_SQL = ("SELECT order_id, customer, country, amount, CAST(amount * 1.2 AS DECIMAL(12, 2)) AS amount_with_vat, "
          "ordered_at FROM input WHERE status <> 'cancelled' AND amount > 10")
W3_SQL = ("SELECT country, status, COUNT(*) AS orders, SUM(amount) AS total, MAX(ordered_at) AS last_order "
          "FROM input GROUP BY country, status")


def pipeline(name, inbox, out, fmt, sql=None, one_batch=False, per_file=False):
    trigger = ""
    if one_batch:
        trigger = '[trigger]\nmax_files_per_batch = 100000\nmax_bytes_per_batch = "64GiB"\n'
    elif per_file:
        trigger = "[trigger]\nmax_files_per_batch = 1\n"
    transform = f'[transform]\nsql = "{sql}"\n' if sql else ""
    return (f'[pipeline]\nname = "{name}"\n[source]\ntype = "files"\nurl = "{inbox}"\npattern = "*.{fmt}"\n'
            f'format = "{fmt}"\n{SCHEMA}{trigger}{transform}'
            f'[sink]\ntype = "files"\nurl = "{out}"\ncompression = "zstd"\n')


# --- data ---------------------------------------------------------------------------------------------

COUNTRIES = ["FR", "DE", "US", "JP", "BR", "IN", "ES", "IT"]
STATUSES = ["paid", "paid", "paid", "shipped", "shipped", "cancelled", "refunded"]
FIRST = ["Ada", "Grace", "Émile", "Zoë", "Björn", "Chloé", "Sørina", "Jürgen", "Mária", "Łukasz", "Kenji", "Ana"]
LAST = ["Lovelace", "Hopper", "O'Brien", "Núñez", "Dvořák", "Søndergaard", "Okafor", "Nakamura", "Ferreira"]
NOTES = ["", "", "fragile", "leave at door, please", 'gift: "happy birthday"', "appel avant livraison — merci",
         "Lieferung ab 18 Uhr", "置き配希望", "call, then ring twice"]


def order_rows(rng, first_id, n):
    for i in range(first_id, first_id + n):
        customer = f"{rng.choice(LAST)}, {rng.choice(FIRST)}"
        amount = f"{rng.randint(100, 250000) / 100:.2f}"
        at = f"2026-{rng.randint(1, 12):02}-{rng.randint(1, 28):02}T{rng.randint(0, 23):02}:{rng.randint(0, 59):02}:00"
        yield i, customer, rng.choice(COUNTRIES), amount, rng.choice(STATUSES), at, rng.choice(NOTES)


def csv_field(text):
    if any(c in text for c in ',"\n'):
        return '"' + text.replace('"', '""') + '"'
    return text


def write_csv(path, rows):
    with open(path, "w", encoding="utf-8", newline="") as out:
        out.write("order_id,customer,country,amount,status,ordered_at,note\n")
        for i, customer, country, amount, status, at, note in rows:
            out.write(f"{i},{csv_field(customer)},{country},{amount},{status},{at},{csv_field(note)}\n")


def write_json(path, rows):
    with open(path, "w", encoding="utf-8") as out:
        for i, customer, country, amount, status, at, note in rows:
            out.write(json.dumps({"order_id": i, "customer": customer, "country": country, "amount": float(amount),
                                  "status": status, "ordered_at": at, "note": note}, ensure_ascii=False) + "\n")


def generate(data, files, rows_per_file):
    done = os.path.join(data, ".complete")
    if os.path.exists(done):
        return
    shutil.rmtree(data, ignore_errors=True)
    for sub in ("csv", "json", "small", "tiny"):
        os.makedirs(os.path.join(data, sub))
    rng = random.Random(20261128)
    print(f"generating {files} x {rows_per_file:,} rows of CSV and NDJSON, 2,000 small CSV files ...", flush=True)
    for f in range(files):
        state = rng.getstate()
        write_csv(os.path.join(data, "csv", f"orders-{f:03}.csv"), order_rows(rng, f * rows_per_file, rows_per_file))
        rng.setstate(state)
        write_json(os.path.join(data, "json", f"orders-{f:03}.json"), order_rows(rng, f * rows_per_file, rows_per_file))
    for f in range(2000):
        write_csv(os.path.join(data, "small", f"orders-{f:04}.csv"), order_rows(rng, 100_000_000 + f * 500, 500))
    write_csv(os.path.join(data, "tiny", "orders.csv"), order_rows(rng, 0, 10))
    open(done, "w").close()


# --- running ------------------------------------------------------------------------------------------

def timed(command, cwd=None):
    """Wall seconds and peak RSS (MB) of one process; fails loudly if it fails. Its output goes to
    files, not pipes, so that a chatty process never waits on a full pipe."""
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
    return took, usage.ru_maxrss / 1024, printed


def fresh(folder):
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    return folder


def setup(size, build):
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
    files, rows = (1, 1_000_000) if size == "small" else (8, 1_000_000)
    data = os.path.join(HERE, "data", size)
    generate(data, files, rows)
    return python, data


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=["small", "full"], default="small")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", help="comma-separated workloads, e.g. w1,w2")
    parser.add_argument("--no-readme", action="store_true", help="print the table only")
    parser.add_argument("--no-build", action="store_true", help="use target/release/sluice as it is")
    args = parser.parse_args()
    python, data = setup(args.size, not args.no_build)
    work = fresh(os.path.join(HERE, "data", "work"))

    workloads = {
        "w1": ("W1 CSV → Parquet", "csv", dict(fmt="csv", one_batch=False)),
        "w2": ("W2 CSV → filter + derived column → Parquet", "csv", dict(fmt="csv", sql=W2_SQL)),
        "w3": ("W3 NDJSON → group by → Parquet", "json", dict(fmt="json", sql=W3_SQL, one_batch=True)),
        "w4": ("W4 2,000 small CSV → one Parquet each", "small", dict(fmt="csv", per_file=True)),
    }
    chosen = args.only.split(",") if args.only else list(workloads)
    results = {}
    for key in chosen:
        title, folder, options = workloads[key]
        inbox = os.path.join(data, folder)
        toml = os.path.join(work, f"{key}.toml")
        runs = {tool: [] for tool in ["sluice"] + PEERS}
        for run in range(args.runs):
            for tool in runs:
                out = fresh(os.path.join(work, f"{key}-{tool}-{run + 1}"))
                if tool == "sluice":
                    with open(toml, "w") as f:
                        f.write(pipeline(key, inbox, out, **options))
                    command = [SLUICE, "run", toml, "--until-caught-up"]
                else:
                    command = [python, os.path.join(HERE, "peers.py"), tool, key, inbox, out]
                took, rss, printed = timed(command)
                runs[tool].append((took, rss))
                print(f"{key} run {run + 1} {tool:10} {took:7.2f} s {rss:7.0f} MB  {printed.strip()[:100]}", flush=True)
        results[key] = (title, {tool: (statistics.median(t for t, _ in r), max(m for _, m in r))
                                for tool, r in runs.items()})

    tiny = os.path.join(work, "tiny.toml")
    cold = []
    for run in range(max(5, args.runs)):
        with open(tiny, "w") as f:
            f.write(pipeline("tiny", os.path.join(data, "tiny"), fresh(os.path.join(work, f"tiny-{run + 1}")), "csv"))
        cold.append(timed([SLUICE, "run", tiny, "--until-caught-up"])[0])
    cold_ms = statistics.median(cold) * 1000
    print(f"cold start: {cold_ms:.0f} ms", flush=True)

    logged = [json.loads(timed([BENCH_LOG, "--batches", "2000", "--dir", work])[2]) for _ in range(args.runs)]
    log_cost = {key: statistics.median(run[key] for run in logged)
                for key in ("plan_ms", "lease_commit_median_us", "lease_commit_p90_us")}
    print(f"log overhead: {log_cost}", flush=True)

    shutil.rmtree(work, ignore_errors=True)

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
        f"size `{args.size}`, median of {args.runs} runs, alternating; {pinned}; sluice release build of "
        f"{git_head()}. Ratio: sluice's time ÷ the peer's (below 1.00× sluice is faster).",
        "",
        "| workload | sluice | DuckDB | Polars | DataFusion (Python) | vs DuckDB | vs Polars | vs DataFusion |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for key, (title, by_tool) in results.items():
        cell = lambda tool: f"{by_tool[tool][0]:.2f} s, {by_tool[tool][1]:.0f} MB"
        ratio = lambda tool: f"{by_tool['sluice'][0] / by_tool[tool][0]:.2f}×"
        lines.append(f"| {title} | {cell('sluice')} | {cell('duckdb')} | {cell('polars')} | {cell('datafusion')} | "
                     f"{ratio('duckdb')} | {ratio('polars')} | {ratio('datafusion')} |")
    lines.append("")
    lines.append(f"Cold start (one 10-row CSV, `sluice run --until-caught-up`, process start to exit after the commit): "
                 f"median **{cold_ms:.0f} ms** ({', '.join(f'{t * 1000:.0f}' for t in cold)} ms).")
    lines.append("")
    lines.append(f"Log overhead per batch (`bench-log`, 2,000 one-file batches in a log on the same disk, median of "
                 f"{args.runs} runs): its lease and commit records **{log_cost['lease_commit_median_us']:.0f} µs** "
                 f"(90th percentile {log_cost['lease_commit_p90_us']:.0f} µs); planning all 2,000 in one record "
                 f"{log_cost['plan_ms']:.1f} ms.")
    return "\n".join(lines)


def git_head():
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "an unknown commit"


if __name__ == "__main__":
    main()
