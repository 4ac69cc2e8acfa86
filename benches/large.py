#!/usr/bin/env python3
"""One large CSV through a filter: sluice's time and peak memory, beside DuckDB's CLI and Python package, on the
same file in the same run, at the same zstd level.

    python3 benches/large.py              # a 2 GB CSV (about 16M order rows); generating it takes a minute or two
    python3 benches/large.py --gb 0.5     # a quicker look

It builds sluice (release), installs the peers as benches/run.py does, writes one CSV of the orders of
benches/run.py (the same seeded columns, 200,000 rows repeated until the file is --gb gigabytes: ids repeat,
which the filter does not care about) into benches/data/large/, and runs workload W2 (filter + derived decimal
column → zstd Parquet, every tool at --level, default 1) on it with `sluice run --until-caught-up`, DuckDB's CLI
and DuckDB's Python package (benches/peers.py), --runs times each, alternating. It reports the wall time, the
peak RSS (wait4), the CPU time and the Parquet bytes of each, and writes the table into benches/README.md
between the `large:` markers.
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
    rng = random.Random(20261201)
    harness.write_csv(block_path, harness.order_columns(rng, harness.pools(rng), 0, 200_000))
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
    parser.add_argument("--level", default="1", help="zstd level every tool writes at, or `default` (default 1)")
    parser.add_argument("--no-readme", action="store_true", help="print the table only")
    parser.add_argument("--no-build", action="store_true", help="use target/release/sluice as it is")
    args = parser.parse_args()
    harness.setup([], not args.no_build)
    inbox = os.path.join(HERE, "data", "large", f"{args.gb:g}gb")
    source = os.path.join(inbox, "orders.csv")
    generate(source, args.gb)
    work = harness.fresh(os.path.join(HERE, "data", "work-large"))
    out = os.path.join(work, "out")
    runs = {"sluice": [], "duckdb-cli": [], "duckdb": []}
    for run in range(args.runs):
        for tool in runs:
            harness.fresh(out)
            command = harness.command_for(tool, "w2", inbox, out, args.level, work, dict(fmt="csv", sql=harness.W2_SQL))
            took, rss, cpu, printed = harness.timed(command)
            runs[tool].append((took, rss, cpu, harness.output_bytes(out)))
            print(f"run {run + 1} {tool:10} {took:7.2f} s {rss:7.0f} MB {cpu:6.2f} s CPU  {printed.strip()[:80]}",
                  flush=True)

    size_gb = os.path.getsize(source) / 2**30
    median = {tool: statistics.median(r[0] for r in rs) for tool, rs in runs.items()}
    peak = {tool: max(r[1] for r in rs) for tool, rs in runs.items()}
    cpu = {tool: statistics.median(r[2] for r in rs) for tool, rs in runs.items()}
    written = {tool: statistics.median(r[3] for r in rs) for tool, rs in runs.items()}
    lines = [
        f"Measured {datetime.date.today()} on {os.cpu_count()} cores, {platform_line()}; one CSV of {size_gb:.2f} GiB "
        f"through W2 (filter + derived column → zstd Parquet at level {args.level}), median of {args.runs} runs, "
        f"alternating; sluice release build of {harness.git_head()}.",
        "",
        "| tool | wall time | peak RSS | CPU time | Parquet bytes | sluice's time ÷ the tool's |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for tool in runs:
        lines.append(f"| {harness.NAMES[tool]} | {median[tool]:.2f} s | {peak[tool]:.0f} MB | {cpu[tool]:.2f} s | "
                     f"{written[tool] / 1e6:.0f} MB | {median['sluice'] / median[tool]:.2f}× |")
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
