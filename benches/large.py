#!/usr/bin/env python3
"""One large CSV through a filter: sluice's peak memory, beside DuckDB's, on the same file in the same run.

    python3 benches/large.py              # a 2 GB CSV (about 16M order rows); generating it takes a minute or two
    python3 benches/large.py --gb 0.5     # a quicker look

It builds sluice (release), installs the peers as benches/run.py does, writes one CSV of the orders of
benches/run.py (the same seeded rows, repeated until the file is --gb gigabytes: ids repeat, which the filter
does not care about) into benches/data/large/, and runs workload W2 (filter + derived decimal column → zstd
Parquet) on it with `sluice run --until-caught-up` and with DuckDB (benches/peers.py), --runs times each,
alternating. It reports the wall time and the peak RSS of each process (wait4) and writes the table into
benches/README.md between the `large:` markers.
"""

import argparse
import datetime
import os
import random
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import run as harness  # noqa: E402  (benches/run.py: data, timing, setup)


def generate(path, gigabytes):
    size = int(gigabytes * 2**30)
    if os.path.exists(path) and os.path.getsize(path) >= size:
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    print(f"generating {gigabytes} GB of CSV into {path} ...", flush=True)
    block_path = path + ".block"
    harness.write_csv(block_path, harness.order_rows(random.Random(20261201), 0, 200_000))
    with open(block_path, encoding="utf-8") as block_file:
        header, block = block_file.readline(), block_file.read()
    os.remove(block_path)
    with open(path + ".partial", "w", encoding="utf-8") as out:
        out.write(header)
        written = len(header)
        while written < size:
            out.write(block)
            written += len(block.encode("utf-8"))
    os.rename(path + ".partial", path)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gb", type=float, default=2.0, help="size of the CSV in GiB (default 2)")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--no-readme", action="store_true", help="print the table only")
    parser.add_argument("--no-build", action="store_true", help="use target/release/sluice as it is")
    args = parser.parse_args()
    python, _ = harness.setup("small", not args.no_build)
    inbox = os.path.join(HERE, "data", "large", f"{args.gb:g}gb")
    source = os.path.join(inbox, "orders.csv")
    generate(source, args.gb)
    work = harness.fresh(os.path.join(HERE, "data", "work-large"))
    out = os.path.join(work, "out")
    toml = os.path.join(work, "large.toml")
    with open(toml, "w") as f:
        f.write(harness.pipeline("large", inbox, out, "csv", sql=harness.W2_SQL))

    runs = {"sluice": [], "duckdb": []}
    for run in range(args.runs):
        for tool in runs:
            harness.fresh(out)
            if tool == "sluice":
                command = [harness.SLUICE, "run", toml, "--until-caught-up"]
            else:
                command = [python, os.path.join(HERE, "peers.py"), tool, "w2", inbox, out]
            took, rss, printed = harness.timed(command)
            runs[tool].append((took, rss))
            print(f"run {run + 1} {tool:8} {took:7.2f} s {rss:7.0f} MB  {printed.strip()[:110]}", flush=True)

    size_gb = os.path.getsize(source) / 2**30
    median = {tool: statistics.median(t for t, _ in r) for tool, r in runs.items()}
    peak = {tool: max(m for _, m in r) for tool, r in runs.items()}
    lines = [
        f"Measured {datetime.date.today()} on {os.cpu_count()} cores, {platform_line()}; one CSV of {size_gb:.2f} GiB "
        f"through W2 (filter + derived column → zstd Parquet), median of {args.runs} runs, alternating; "
        f"sluice release build of {harness.git_head()}.",
        "",
        "| tool | wall time | peak RSS | sluice's time ÷ the tool's |",
        "| --- | --- | --- | --- |",
    ]
    for tool, name in (("sluice", "sluice"), ("duckdb", "DuckDB")):
        lines.append(f"| {name} | {median[tool]:.2f} s | {peak[tool]:.0f} MB | "
                     f"{median['sluice'] / median[tool]:.2f}× |")
    table = "\n".join(lines)
    print("\n" + table)
    if not args.no_readme:
        harness.write_into_readme("large", table)

def platform_line():
    import platform
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{memory:.0f} GiB, {platform.system()}"


if __name__ == "__main__":
    main()
