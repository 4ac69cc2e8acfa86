#!/usr/bin/env python3
"""Dispatch over RabbitMQ: cold start of `sluice worker`, and throughput with 1, 2 and 4 workers.

    python3 benches/dispatch.py [--sluice target/release/sluice] [--files 48] [--rows 40000]

Needs a release build (`cargo build --release -p sluice-workers`) and RabbitMQ on 127.0.0.1:5672
(`scripts/start-rabbitmq.sh`). Standard library only. Prints a Markdown table for benches/README.md.

- cold start: a controller sends one task (a 10-row CSV); then `sluice worker` is started, and the time
  from its spawn to its JSON log line "batch committed" is taken (process start, broker connection,
  pipeline load, log open, lease, read, SQL, Parquet write, commit). Five runs, median.
- throughput: the same files through `sluice run --until-caught-up` with `[workers] dispatch` and N
  workers started at once; wall time of the controller, from its start until every batch is committed.
  Beside it, the same files run in-process by a controller without dispatch. Three runs each, median.
"""

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

BROKER = os.environ.get("SLUICE_BENCH_AMQP", "amqp://guest:guest@127.0.0.1:5672/%2f")
# One queue for every run: runs follow each other, and each leaves it empty.
QUEUE = "sluice.bench.tasks"

PIPELINE = """
[pipeline]
name = "{name}"
[source]
type = "files"
url = "inbox"
pattern = "*.csv"
format = "csv"
[source.schema]
order_id = "int64"
customer = "string"
country = "string"
amount = "decimal(10,2)"
ordered_at = "timestamp"
[trigger]
max_files_per_batch = 1
[transform]
sql = "SELECT order_id, customer, country, amount, CAST(amount * 1.2 AS DECIMAL(10,2)) AS with_vat, ordered_at FROM input WHERE amount > 10"
[sink]
type = "files"
url = "out"
compression = "zstd"
{workers}
"""


def write_files(folder, files, rows, seed=7):
    rng = random.Random(seed)
    os.makedirs(folder, exist_ok=True)
    countries = ["FR", "DE", "US", "JP", "BR", "IN"]
    names = ["Ada", "Grace", "Émile", "Zoë", "O'Brien, Pat", 'say "hi"']
    for f in range(files):
        with open(os.path.join(folder, f"orders-{f:04}.csv"), "w", newline="") as out:
            out.write("order_id,customer,country,amount,ordered_at\n")
            for r in range(rows):
                name = rng.choice(names)
                if "," in name or '"' in name:
                    name = '"' + name.replace('"', '""') + '"'
                amount = f"{rng.randint(100, 99999) / 100:.2f}"
                out.write(f"{f * 10_000_000 + r},{name},{rng.choice(countries)},{amount},"
                          f"2026-11-{rng.randint(1, 28):02}T{rng.randint(0, 23):02}:00:00\n")


def workspace(root, name, inbox, dispatch_queue):
    ws = tempfile.mkdtemp(prefix=f"{name}-", dir=root)
    os.symlink(inbox, os.path.join(ws, "inbox"))
    workers = "[workers]\nconcurrency = 2\n"
    if dispatch_queue:
        workers += f'lease_timeout = "5s"\ndispatch = "{BROKER}"\ntask_queue = "{dispatch_queue}"\n'
    path = os.path.join(ws, "pipeline.toml")
    with open(path, "w") as out:
        out.write(PIPELINE.format(name=name, workers=workers))
    return ws, path


def env():
    e = dict(os.environ)
    e["SLUICE_LOG"] = "info"
    # Controller and workers share a task key, as in production.
    e["SLUICE_TASK_KEY"] = "bench-task-key-0123456789abcdef"
    return e


def worker(sluice, queue, pipelines, idle="1s"):
    return subprocess.Popen([sluice, "--log-format", "json", "worker", "--tasks", BROKER, "--queue", queue,
                             "--pipelines", pipelines, "--idle-timeout", idle], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=env(), text=True)


def wait_for_line(stream, needle):
    for line in stream:
        if needle in line:
            return line
    raise RuntimeError(f"the stream ended before {needle!r}")


def cold_start(sluice, root):
    tiny = os.path.join(root, "tiny")
    write_files(tiny, 1, 10)
    times = []
    for run in range(5):
        queue = QUEUE
        ws, path = workspace(root, f"cold{run}", tiny, queue)
        controller = subprocess.Popen([sluice, "--log-format", "json", "run", path, "--until-caught-up"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env(), text=True)
        wait_for_line(controller.stderr, "task sent")
        started = time.perf_counter()
        w = worker(sluice, queue, ws)
        wait_for_line(w.stderr, "batch committed")
        times.append(time.perf_counter() - started)
        w.stderr.read()
        w.wait()
        controller.stderr.read()
        controller.wait()
        shutil.rmtree(ws)
    return statistics.median(times), times


def throughput(sluice, root, inbox, workers, runs=3):
    times = []
    for run in range(runs):
        queue = QUEUE if workers else None
        ws, path = workspace(root, f"tp{workers}-{run}", inbox, queue)
        started = time.perf_counter()
        controller = subprocess.Popen([sluice, "run", path, "--until-caught-up"], stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL, env=env(), text=True)
        pool = [worker(sluice, queue, ws) for _ in range(workers)]
        out, _ = controller.communicate()
        times.append(time.perf_counter() - started)
        if controller.returncode != 0 or " 0 batches" in out:
            raise RuntimeError(f"the controller failed: {out}")
        for w in pool:
            w.stderr.read()
            w.wait()
        shutil.rmtree(ws)
    return statistics.median(times), out.strip()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sluice", default="target/release/sluice")
    parser.add_argument("--files", type=int, default=48)
    parser.add_argument("--rows", type=int, default=40_000)
    args = parser.parse_args()
    sluice = os.path.abspath(args.sluice)
    if not os.access(sluice, os.X_OK):
        sys.exit(f"no sluice binary at {sluice}; build it with cargo build --release -p sluice-workers")
    root = tempfile.mkdtemp(prefix="sluice-dispatch-bench-")
    try:
        inbox = os.path.join(root, "inbox")
        write_files(inbox, args.files, args.rows)
        size = sum(os.path.getsize(os.path.join(inbox, f)) for f in os.listdir(inbox))
        rows = args.files * args.rows
        median, runs = cold_start(sluice, root)
        print(f"cold start, worker spawn to first commit: median {median * 1000:.0f} ms "
              f"(runs: {', '.join(f'{t * 1000:.0f}' for t in runs)} ms)")
        print(f"\n{args.files} CSV files, {rows:,} rows, {size / 1e6:.0f} MB; median of 3 runs\n")
        print("| run | wall time | rows/s | vs in-process |")
        print("| --- | --- | --- | --- |")
        local, _ = throughput(sluice, root, inbox, 0)
        print(f"| in-process (`sluice run`, concurrency 2) | {local:.2f} s | {rows / local:,.0f} | 1.00× |")
        for n in (1, 2, 4):
            took, _ = throughput(sluice, root, inbox, n)
            print(f"| dispatch, {n} worker{'s' if n > 1 else ''} | {took:.2f} s | {rows / took:,.0f} | "
                  f"{took / local:.2f}× |")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
