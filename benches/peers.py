"""One workload run by one peer, as a user's cron script would: `python peers.py TOOL WORKLOAD IN OUT LEVEL`.

LEVEL is the zstd level to write at, or `default` for the tool's own default when asked for zstd
(DuckDB 3, Polars 3 (zstd's own), DataFusion's Python package 4, sluice 1). Every peer gets the same
declared column types as sluice's [source.schema], the same SQL (or its DataFrame equivalent), zstd
Parquet out, and its default number of threads (every core). Run by benches/run.py. DuckDB's CLI runs
the statements of `duckdb_statements` itself (run.py writes them to a file for `duckdb -f`).
"""

import os
import sys

COLUMNS = [("order_id", "int64"), ("customer", "string"), ("country", "string"), ("amount", "decimal"),
           ("status", "string"), ("ordered_at", "timestamp"), ("shipped_at", "timestamp"),
           ("unit_price", "float64"), ("note", "string"), ("comment", "string")]

W2_SQL = ("SELECT order_id, customer, country, amount, CAST(amount * 1.2 AS DECIMAL(12, 2)) AS amount_with_vat, "
          "ordered_at, comment FROM input WHERE status <> 'cancelled' AND amount > 10")
W3_SQL = ("SELECT country, status, COUNT(*) AS orders, SUM(amount) AS total, MAX(ordered_at) AS last_order, "
          "AVG(unit_price) AS mean_price FROM input GROUP BY country, status")


def files(inbox, ext):
    return sorted(os.path.join(inbox, name) for name in os.listdir(inbox) if name.endswith(ext))


def duckdb_statements(workload, inbox, out, level):
    """The SQL a DuckDB user would run, for the Python package and the CLI alike."""
    types = {"int64": "BIGINT", "string": "VARCHAR", "decimal": "DECIMAL(10,2)", "timestamp": "TIMESTAMP",
             "float64": "DOUBLE"}
    columns = "{" + ", ".join(f"'{name}': '{types[kind]}'" for name, kind in COLUMNS) + "}"
    options = "FORMAT parquet, COMPRESSION zstd" + ("" if level == "default" else f", COMPRESSION_LEVEL {level}")

    def csv(path):
        return f"read_csv('{path}', header=true, columns={columns})"

    if workload == "w1":
        return [f"COPY (SELECT * FROM {csv(inbox + '/*.csv')}) TO '{out}/out.parquet' ({options});"]
    if workload == "w2":
        sql = W2_SQL.replace("FROM input", f"FROM {csv(inbox + '/*.csv')}")
        return [f"COPY ({sql}) TO '{out}/out.parquet' ({options});"]
    if workload == "w3":
        source = f"read_json('{inbox}/*.json', format='newline_delimited', columns={columns})"
        sql = W3_SQL.replace("FROM input", f"FROM {source}")
        return [f"COPY ({sql}) TO '{out}/out.parquet' ({options});"]
    statements = []
    for path in files(inbox, ".csv"):
        name = os.path.basename(path)[:-4]
        statements.append(f"COPY (SELECT * FROM {csv(path)}) TO '{out}/{name}.parquet' ({options});")
    return statements


def duckdb_run(workload, inbox, out, level):
    import duckdb
    con = duckdb.connect()
    for statement in duckdb_statements(workload, inbox, out, level):
        con.sql(statement)


def polars_run(workload, inbox, out, level):
    import polars as pl
    kinds = {"int64": pl.Int64, "string": pl.String, "decimal": pl.Decimal(10, 2), "timestamp": pl.Datetime("us"),
             "float64": pl.Float64}
    schema = {name: kinds[kind] for name, kind in COLUMNS}
    zstd = dict(compression="zstd") if level == "default" else dict(compression="zstd", compression_level=int(level))
    if workload == "w1":
        pl.scan_csv(inbox + "/*.csv", schema=schema).sink_parquet(out + "/out.parquet", **zstd)
    elif workload == "w2":
        (pl.scan_csv(inbox + "/*.csv", schema=schema)
         .filter((pl.col("status") != "cancelled") & (pl.col("amount") > 10))
         .select("order_id", "customer", "country", "amount",
                 (pl.col("amount") * pl.lit(1.2)).cast(pl.Decimal(12, 2)).alias("amount_with_vat"), "ordered_at",
                 "comment")
         .sink_parquet(out + "/out.parquet", **zstd))
    elif workload == "w3":
        # JSON numbers are floats to Polars' NDJSON reader; read them so, then cast.
        json_schema = {**schema, "amount": pl.Float64}
        (pl.scan_ndjson(inbox + "/*.json", schema=json_schema)
         .with_columns(pl.col("amount").cast(pl.Decimal(10, 2)), pl.col("ordered_at").cast(pl.Datetime("us")))
         .group_by("country", "status")
         .agg(pl.len().alias("orders"), pl.col("amount").sum().alias("total"),
              pl.col("ordered_at").max().alias("last_order"), pl.col("unit_price").mean().alias("mean_price"))
         .sink_parquet(out + "/out.parquet", **zstd))
    elif workload == "w4":
        for path in files(inbox, ".csv"):
            name = os.path.basename(path)[:-4]
            pl.read_csv(path, schema=schema).write_parquet(f"{out}/{name}.parquet", **zstd)


def datafusion_run(workload, inbox, out, level):
    import pyarrow as pa
    from datafusion import SessionContext
    from datafusion.dataframe import ParquetWriterOptions
    kinds = {"int64": pa.int64(), "string": pa.string(), "decimal": pa.decimal128(10, 2),
             "timestamp": pa.timestamp("us"), "float64": pa.float64()}
    schema = pa.schema([(name, kinds[kind]) for name, kind in COLUMNS])
    ctx = SessionContext()
    # Asked for "zstd" with no level, the package writes at its default, 4.
    zstd = ParquetWriterOptions(compression="zstd(4)" if level == "default" else f"zstd({int(level)})")
    if workload in ("w1", "w2"):
        ctx.register_csv("input", inbox, schema=schema, has_header=True, file_extension=".csv")
        sql = "SELECT * FROM input" if workload == "w1" else W2_SQL
        ctx.sql(sql).write_parquet_with_options(out + "/out.parquet", zstd)
    elif workload == "w3":
        ctx.register_json("input", inbox, schema=schema, file_extension=".json")
        ctx.sql(W3_SQL).write_parquet_with_options(out + "/out.parquet", zstd)
    elif workload == "w4":
        for path in files(inbox, ".csv"):
            name = os.path.basename(path)[:-4]
            table = f"t_{name.replace('-', '_')}"
            ctx.register_csv(table, path, schema=schema, has_header=True)
            ctx.sql(f"SELECT * FROM {table}").write_parquet_with_options(f"{out}/{name}.parquet", zstd)
            ctx.deregister_table(table)


if __name__ == "__main__":
    TOOL, WORKLOAD, IN, OUT, LEVEL = sys.argv[1:6]
    {"duckdb": duckdb_run, "polars": polars_run, "datafusion": datafusion_run}[TOOL](WORKLOAD, IN, OUT, LEVEL)
