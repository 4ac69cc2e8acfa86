#!/usr/bin/env python3
"""sluice reading a Kafka topic and an AMQP queue into Parquet, beside a raw client consuming the same
messages in the same run.

    python3 benches/streams.py                  # 200,000 JSON orders per broker, 3 runs each
    python3 benches/streams.py --count 1000000

It builds sluice and `bench-brokers` (`cargo build --release`), starts the brokers with the project's
scripts (scripts/start-kafka.sh: Tansu on 127.0.0.1:9092; scripts/start-rabbitmq.sh: 127.0.0.1:5672),
fills them, and times, alternating:

  raw      `bench-brokers kafka-consume` / `amqp-consume`: rdkafka or lapin reading every message and
           dropping it (AMQP: acknowledged 1,000 at a time)
  sluice   `sluice run PIPELINE --until-caught-up` with a fresh checkpoint log and output folder: every
           message decoded from JSON against a declared schema, written as zstd Parquet, its batch planned
           and committed in the log (AMQP: acknowledged after each commit), until caught up

Each time is a whole process, start to exit. Kafka runs read the same topic (a fresh log starts at its
beginning); AMQP runs each get the messages published anew (not timed). The ratio is sluice's records per
second over the raw client's. The table is printed and written into benches/README.md between the
`streams:` markers.
"""

import argparse
import datetime
import os
import platform
import re
import shutil
import statistics
import subprocess
import tempfile
import time

from run import git_head

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SLUICE = os.path.join(ROOT, "target", "release", "sluice")
BROKERS = os.path.join(ROOT, "target", "release", "bench-brokers")
AMQP = "amqp://guest:guest@127.0.0.1:5672/%2f"

SCHEMA = """[source.schema]
order_id = "int64"
customer = "string"
country = "string"
amount = "decimal(10,2)"
status = "string"
"""


def pipeline(source, out):
    return (f'[pipeline]\nname = "bench"\n[source]\n{source}format = "json"\n{SCHEMA}'
            f'[sink]\ntype = "files"\nurl = "{out}"\ncompression = "zstd"\n')


def timed(command):
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    took = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{done.stdout}\n{done.stderr[-4000:]}")
    return took, done.stdout


def run_sluice(work, source, count):
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    path = os.path.join(work, "pipeline.toml")
    with open(path, "w") as f:
        f.write(pipeline(source, "out"))
    took, printed = timed([SLUICE, "run", path, "--until-caught-up", "--log-format", "json"])
    match = re.search(r"(\d+) rows out", printed)
    if not match or int(match.group(1)) != count:
        raise SystemExit(f"sluice wrote {match and match.group(1)} rows, not {count}:\n{printed}")
    return took


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=200_000, help="messages per broker (default 200000)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-build", action="store_true", help="use the release binaries already built")
    parser.add_argument("--no-readme", action="store_true", help="print the table only")
    args = parser.parse_args()
    if not args.no_build:
        print("building sluice and bench-brokers (cargo build --release) ...", flush=True)
        subprocess.run(["cargo", "build", "--release", "--locked", "-p", "sluice-workers", "-p", "sluice-benches",
                        "--bin", "sluice", "--bin", "bench-brokers"], cwd=ROOT, check=True)
    subprocess.run([os.path.join(ROOT, "scripts", "start-kafka.sh")], check=True)
    subprocess.run([os.path.join(ROOT, "scripts", "start-rabbitmq.sh")], check=True)
    stamp = f"{os.getpid()}-{int(time.time())}"
    work = tempfile.mkdtemp(prefix="sluice-streams-")
    n = args.count
    times = {"kafka": {"raw": [], "sluice": []}, "amqp": {"raw": [], "sluice": []}}

    topic = f"bench-orders-{stamp}"
    print(f"kafka: producing {n} orders to {topic} ...", flush=True)
    timed([BROKERS, "kafka-produce", "--topic", topic, "--count", str(n), "--partitions", "3"])
    kafka_source = f'type = "kafka"\nbrokers = "127.0.0.1:9092"\ntopic = "{topic}"\n'
    for run in range(args.runs):
        for tool in (["raw", "sluice"] if run % 2 == 0 else ["sluice", "raw"]):
            if tool == "raw":
                took, _ = timed([BROKERS, "kafka-consume", "--topic", topic, "--count", str(n)])
            else:
                took = run_sluice(os.path.join(work, "kafka"), kafka_source, n)
            times["kafka"][tool].append(took)
            print(f"kafka {tool}: {took:.2f} s", flush=True)

    for run in range(args.runs):
        for tool in (["raw", "sluice"] if run % 2 == 0 else ["sluice", "raw"]):
            queue = f"bench-orders-{stamp}-{run}-{tool}"
            timed([BROKERS, "amqp-publish", "--queue", queue, "--count", str(n)])
            if tool == "raw":
                took, _ = timed([BROKERS, "amqp-consume", "--queue", queue, "--count", str(n)])
            else:
                source = f'type = "amqp"\nurl = "{AMQP}"\nqueue = "{queue}"\n'
                took = run_sluice(os.path.join(work, "amqp"), source, n)
            times["amqp"][tool].append(took)
            print(f"amqp {tool}: {took:.2f} s", flush=True)
    shutil.rmtree(work, ignore_errors=True)

    table = render(times, args)
    print(table)
    if not args.no_readme:
        readme = os.path.join(HERE, "README.md")
        text = open(readme).read()
        block = f"<!-- streams:start -->\n{table}\n<!-- streams:end -->"
        if "<!-- streams:start -->" in text:
            text = re.sub(r"<!-- streams:start -->.*<!-- streams:end -->", lambda _: block, text, flags=re.S)
        else:
            text += f"\n{block}\n"
        open(readme, "w").write(text)
        print("written into benches/README.md")


def render(times, args):
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor() or "unknown CPU"
    lines = [
        f"Measured {datetime.date.today()} on {os.cpu_count()} cores ({model}), {platform.system()}; "
        f"{args.count:,} JSON orders per broker (5 fields, about 100 bytes each), median of {args.runs} runs, "
        f"alternating; brokers: Tansu 0.6 (memory storage) and RabbitMQ, on the same machine; sluice release build "
        f"of {git_head()}, micro-batches of 10,000. Ratio: sluice's records/s ÷ the raw client's.",
        "",
        "| broker | raw client | sluice into Parquet | ratio |",
        "| --- | --- | --- | --- |",
    ]
    names = {"kafka": "Kafka (rdkafka, 3 partitions)", "amqp": "AMQP (lapin, persistent messages)"}
    for broker, by_tool in times.items():
        raw, sluice = statistics.median(by_tool["raw"]), statistics.median(by_tool["sluice"])
        rate = lambda seconds: f"{args.count / seconds:,.0f} records/s ({seconds:.2f} s)"
        lines.append(f"| {names[broker]} | {rate(raw)} | {rate(sluice)} | {raw / sluice:.2f}× |")
    return "\n".join(lines)



if __name__ == "__main__":
    main()
