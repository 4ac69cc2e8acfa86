#!/usr/bin/env python3
"""What a long history costs sluice: cold starts, batches and planning against a checkpoint log that holds
0, 100,000 and 1,000,000 committed batches, and planning 10,000 new files against 10,000,000 inputs.

    python3 benches/history.py                 # everything, 3 runs each; writes benches/README.md
    python3 benches/history.py --runs 1 --no-readme --histories 0 100000     # a quick look

It builds sluice and bench-history (`cargo build --release -p sluice-workers -p sluice-benches`). Each history
is made by `bench-history generate` (benches/history.rs): the log's own code commits and seals the batches
on an in-memory store, a thousand at a time, and the snapshot and segments a reader needs are copied into
the pipeline's checkpoint folder, as `sluice vacuum` leaves a log (the records every snapshot holds removed).
Nothing about the figures is simulated: every run is the release `sluice` binary on local folders.

  cold start   one new one-row CSV, `sluice run PIPELINE --until-caught-up`: process start to exit after the
               commit, and its peak RSS (wait4); a new file for each run
  worker       the same pipeline with `[workers] dispatch` to RabbitMQ (127.0.0.1:5672, guest/guest;
               scripts/start-rabbitmq.sh starts it): a controller plans one new file and publishes its task,
               then `sluice worker` starts; process start to the commit (the time its log line gives), and
               the worker's peak RSS
  per batch    2,000 new one-row CSVs, `max_files_per_batch = 1`: the run's wall time ÷ 2,000
  commits      `bench-history commits`: 1, 8 and 32 committers, each with its own handle on one log as a
               worker has, lease and commit their share of pre-planned batches at once; on a local folder
               and on the S3 server of scripts/start-s3.sh (127.0.0.1:9000) behind a proxy that holds every
               request 20 ms; commits per second, and ÷ linear (the rate ÷ committers × one committer's)
  planning     `bench-history plan`: open the log cold, then plan 10,000 new files against it (the log's
               history of the listed names, then which are new), named after every name in the history (as
               names with a date in them are) and, the worst case, inside the history's range of names
"""

import argparse
import asyncio
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from run import git_head, timed, write_into_readme  # noqa: E402

SLUICE = os.path.join(ROOT, "target", "release", "sluice")
BENCH_HISTORY = os.path.join(ROOT, "target", "release", "bench-history")

PIPELINE = """[pipeline]
name = "bench"
version = 1

[source]
type = "files"
url = "inbox"
pattern = "*.csv"
format = "csv"
header = true

[source.schema]
id = "int64"
amount = "float64"

[trigger]
max_files_per_batch = 1

[transform]
sql = "SELECT id, amount FROM input"

[sink]
type = "files"
url = "out"
format = "parquet"
compression = "zstd"
compression_level = 1
"""


def workspace(base, name, batches, files=1):
    """A pipeline folder whose log holds `batches` committed batches of `files` inputs each."""
    ws = os.path.join(base, name)
    os.makedirs(os.path.join(ws, "inbox"))
    with open(os.path.join(ws, "p.toml"), "w") as f:
        f.write(PIPELINE)
    made = None
    if batches:
        took, _, _, printed = timed([BENCH_HISTORY, "generate", "--dir", os.path.join(ws, "out", "_sluice"),
                                     "--batches", str(batches), "--files", str(files)])
        made = json.loads(printed.strip().splitlines()[-1])
        print(f"  history of {batches:,} batches ({batches * files:,} inputs): {made['objects']} objects, "
              f"{made['bytes'] / 1e6:.0f} MB, made in {took:.0f} s", flush=True)
    return ws, made


def drop(ws, name, n=1):
    for i in range(n):
        with open(os.path.join(ws, "inbox", f"{name}-{i:05}.csv"), "w") as f:
            f.write(f"id,amount\n{i},1.5\n")


BROKER = "amqp://guest:guest@127.0.0.1:5672/%2f"
TASK_KEY = "5e1f" * 16


def contents(file):
    file.seek(0)
    return file.read()


def worker_first_commit(ws, queue):
    """Seconds from `sluice worker`'s start to its first commit, and its peak RSS: a controller plans one new
    file and publishes its task first."""
    dispatching = os.path.join(ws, "dispatch", "p.toml")
    os.makedirs(os.path.dirname(dispatching), exist_ok=True)
    with open(dispatching, "w") as f:
        f.write(PIPELINE.replace('url = "inbox"', f'url = "{ws}/inbox"').replace('url = "out"', f'url = "{ws}/out"')
                + f'\n[workers]\ndispatch = "{BROKER}"\ntask_queue = "{queue}"\n')
    env = dict(os.environ, SLUICE_TASK_KEY=TASK_KEY, SLUICE_LOG="info")
    with tempfile.TemporaryFile() as said:
        controller = subprocess.Popen([SLUICE, "run", dispatching, "--until-caught-up", "--log-format", "json"],
                                      env=env, stdout=subprocess.DEVNULL, stderr=said)
        deadline = time.time() + 60
        while b"task sent" not in contents(said):
            if controller.poll() is not None or time.time() > deadline:
                raise SystemExit("the controller published no task:\n" + contents(said).decode(errors="replace"))
            time.sleep(0.05)
        with tempfile.TemporaryFile() as err:
            started = time.time()
            worker = subprocess.Popen([SLUICE, "worker", "--pipelines", os.path.dirname(dispatching), "--tasks",
                                       BROKER, "--queue", queue, "--idle-timeout", "1s", "--log-format", "json"],
                                      env=env, stdout=subprocess.DEVNULL, stderr=err)
            _, status, usage = os.wait4(worker.pid, 0)
            err.seek(0)
            lines = err.read().decode(errors="replace").splitlines()
        if controller.wait(timeout=60) != 0 or os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit("the controller or the worker failed:\n" + "\n".join(lines[-20:]))
    committed = [json.loads(line) for line in lines if '"batch committed"' in line]
    if not committed:
        raise SystemExit("the worker committed nothing:\n" + "\n".join(lines[-20:]))
    at = datetime.datetime.fromisoformat(committed[0]["timestamp"].replace("Z", "+00:00")).timestamp()
    return at - started, usage.ru_maxrss / 1024


def latency_proxy(upstream_port, delay):
    """A TCP proxy on a free local port that holds the first bytes of every request `delay` seconds before
    passing them on (a request begins where the client speaks after the server has answered); returns its
    port. It runs in a thread until the process ends."""
    ready = threading.Event()
    port = []

    async def pipe(reader, writer, turn, hold):
        try:
            while data := await reader.read(65536):
                if hold and turn["answered"]:
                    await asyncio.sleep(delay)
                turn["answered"] = not hold
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def serve(client_reader, client_writer):
        try:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", upstream_port)
        except OSError:
            client_writer.close()
            return
        turn = {"answered": True}
        await asyncio.gather(pipe(client_reader, server_writer, turn, True),
                             pipe(server_reader, client_writer, turn, False))

    async def main():
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port.append(server.sockets[0].getsockname()[1])
        ready.set()
        async with server:
            await server.serve_forever()

    threading.Thread(target=lambda: asyncio.run(main()), daemon=True).start()
    ready.wait()
    return port[0]


S3_ENV = {"AWS_ALLOW_HTTP": "true", "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
          "AWS_REGION": "us-east-1"}


def commit_rates(base, committers, local_batches, s3_batches):
    """Commits per second with each number of committers, on a local folder and on S3 behind the proxy."""
    proxy = latency_proxy(9000, 0.020)
    places = [("local folder", lambda n: os.path.join(base, f"commits-{n}"), {}, local_batches),
              ("S3 (moto) + 20 ms a request", lambda n: f"s3://sluice-test/bench-commits-{os.getpid()}-{n}",
               dict(S3_ENV, AWS_ENDPOINT_URL=f"http://127.0.0.1:{proxy}"), s3_batches)]
    rates = []
    for place, url, env, batches in places:
        for n in committers:
            done = subprocess.run([BENCH_HISTORY, "commits", "--url", url(n), "--committers", str(n), "--batches",
                                   str(batches)], env=dict(os.environ, **env), capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"bench-history commits failed on {place}:\n{done.stderr[-3000:]}")
            rate = json.loads(done.stdout.strip().splitlines()[-1])
            rate["place"] = place
            rates.append(rate)
            print(f"  {place}, {n} committers: {rate['commits_per_s']:.0f} commits/s, "
                  f"{rate['others_read']} records of other committers read before writing", flush=True)
    return rates


def run_once(ws):
    took, rss, _, printed = timed([SLUICE, "run", os.path.join(ws, "p.toml"), "--until-caught-up", "--json"])
    return took, rss, json.loads(printed.strip().splitlines()[-1])


def measure(ws, runs):
    cold = []
    for r in range(runs):
        drop(ws, f"cold{r}")
        took, rss, summary = run_once(ws)
        assert summary["files"] == 1, summary
        cold.append((took, rss))
    worker = []
    for r in range(runs):
        drop(ws, f"worker{r}")
        worker.append(worker_first_commit(ws, f"sluice.bench.{os.path.basename(ws)}.{r}.{os.getpid()}"))
    batches = []
    for r in range(runs):
        drop(ws, f"many{r}", 2000)
        took, rss, summary = run_once(ws)
        assert summary["files"] == 2000, summary
        batches.append(took / 2000)
    return {"cold_s": [t for t, _ in cold], "cold_rss_mb": [m for _, m in cold], "per_batch_s": batches,
            "worker_s": [t for t, _ in worker], "worker_rss_mb": [m for _, m in worker]}


def plan(ws, among):
    took, rss, _, printed = timed([BENCH_HISTORY, "plan", "--dir", os.path.join(ws, "out", "_sluice"),
                                   "--files", "10000"] + (["--among"] if among else []))
    result = json.loads(printed.strip().splitlines()[-1])
    result.update(wall_s=took, rss_mb=rss)
    return result


def render(results, plans, rates, args):
    med = statistics.median
    cores = os.cpu_count()
    lines = [
        f"Measured {datetime.date.today()} on {cores} cores, local folders (ext4), release build of {git_head()}; "
        f"median of {args.runs} runs. Histories made by `bench-history generate`, then read by the real "
        "`sluice` binary. **÷ empty**: the figure ÷ the same figure with an empty log.",
        "",
        "| committed batches in the log | `sluice run` cold start (one file, process start to exit) | peak RSS | "
        "`sluice worker` start to first commit | its peak RSS | per batch (2,000 one-file batches) | "
        "cold start ÷ empty | worker ÷ empty | per batch ÷ empty |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    base = results[0]
    for r in results:
        lines.append(
            f"| {r['batches']:,} | {med(r['cold_s']) * 1000:.0f} ms | {med(r['cold_rss_mb']):.0f} MB | "
            f"{med(r['worker_s']) * 1000:.0f} ms | {med(r['worker_rss_mb']):.0f} MB | "
            f"{med(r['per_batch_s']) * 1000:.2f} ms | {med(r['cold_s']) / med(base['cold_s']):.2f}× | "
            f"{med(r['worker_s']) / med(base['worker_s']):.2f}× | "
            f"{med(r['per_batch_s']) / med(base['per_batch_s']):.2f}× |")
    lines += ["", "| planning 10,000 new files against | names | open the log | plan | process wall | peak RSS |",
              "| --- | --- | --- | --- | --- | --- |"]
    for p in plans:
        where = "inside the history's names" if p["among"] else "after the history's names"
        lines.append(f"| {p['inputs']:,} inputs ({p['sealed_batches']:,} batches, {p['segments']} segments) | {where} | "
                     f"{p['open_ms']:.1f} ms | {p['plan_ms']:.1f} ms | {p['wall_s'] * 1000:.0f} ms | "
                     f"{p['rss_mb']:.0f} MB |")
    lines += ["", "| commits of one-file batches | committers | commits/s | ÷ linear | records of other committers "
              "read before writing |", "| --- | --- | --- | --- | --- |"]
    for r in rates:
        one = next(x for x in rates if x["place"] == r["place"] and x["committers"] == 1)
        linear = r["commits_per_s"] / (one["commits_per_s"] * r["committers"])
        lines.append(f"| {r['batches']:,} on {r['place']} | {r['committers']} | {r['commits_per_s']:.0f} | "
                     f"{linear:.2f}× | {r['others_read']:,} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--histories", type=int, nargs="+", default=[0, 100_000, 1_000_000])
    parser.add_argument("--planning-inputs", type=int, default=10_000_000,
                        help="inputs of the history that planning is measured against (100 a batch)")
    parser.add_argument("--no-build", action="store_true")
    parser.add_argument("--no-readme", action="store_true")
    parser.add_argument("--work", help="where the workspaces go (default: a temporary folder)")
    args = parser.parse_args()
    if not args.no_build:
        print("building (cargo build --release -p sluice-workers -p sluice-benches) ...", flush=True)
        subprocess.run(["cargo", "build", "--release", "--locked", "-p", "sluice-workers", "-p", "sluice-benches"],
                       cwd=ROOT, check=True)
    base = tempfile.mkdtemp(prefix="sluice-history-", dir=args.work)
    try:
        results = []
        for batches in args.histories:
            print(f"history {batches:,}:", flush=True)
            ws, _ = workspace(base, f"h{batches}", batches)
            result = measure(ws, args.runs)
            result["batches"] = batches
            results.append(result)
            print(f"  cold start {statistics.median(result['cold_s']) * 1000:.0f} ms, "
                  f"{statistics.median(result['cold_rss_mb']):.0f} MB; "
                  f"per batch {statistics.median(result['per_batch_s']) * 1000:.2f} ms", flush=True)
            shutil.rmtree(ws)
        plans = []
        for inputs in (0, args.planning_inputs):
            print(f"planning against {inputs:,} inputs:", flush=True)
            ws, _ = workspace(base, f"p{inputs}", inputs // 100, 100)
            for among in (False, True) if inputs else (False,):
                p = plan(ws, among)
                p["inputs"] = inputs
                plans.append(p)
                print(f"  {'among' if among else 'after'}: open {p['open_ms']:.1f} ms, plan {p['plan_ms']:.1f} ms, "
                      f"{p['rss_mb']:.0f} MB", flush=True)
            shutil.rmtree(ws)
        print("commits:", flush=True)
        rates = commit_rates(base, [1, 8, 32], 2000, 200)
        table = render(results, plans, rates, args)
        print(table)
        os.makedirs(os.path.join(HERE, "data"), exist_ok=True)
        with open(os.path.join(HERE, "data", "history.json"), "w") as f:
            json.dump({"results": results, "plans": plans, "commits": rates}, f, indent=1)
        if not args.no_readme:
            write_into_readme("history", table)
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
