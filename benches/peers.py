"""One workload run by one peer, as a user's cron script would: `python peers.py TOOL WORKLOAD IN OUT`.

Every peer gets the same declared column types as sluice's [source.schema], the same SQL (or its
DataFrame equivalent), zstd Parquet out, and its default number of threads. Run by benches/run.py.
"""

import os
import sys

TOOL, WORKLOAD, IN, OUT = sys.argv[1:5]

COLUMNS = [("order_id", "int64"), ("customer", "string"), ("country", "string"), ("amount", "decimal"),
           ("status", "string"), ("ordered_at", "timestamp"), ("note", "string")]

W2_SQL = ("SELECT order_id, customer, country, amount, CAST(amount * 1.2 AS DECIMAL(12, 2)) AS amount_with_vat, "
          "ordered_at FROM input WHERE status <> 'cancelled' AND amount > 10")
W3_SQL = ("SELECT country, status, COUNT(*) AS orders, SUM(amount) AS total, MAX(ordered_at) AS last_order "
          "FROM input GROUP BY country, status")


def files(ext):
    return sorted(os.path.join(IN, name) for name in os.listdir(IN) if name.endswith(ext))


def duckdb_run():
    import duckdb
    types = {"int64": "BIGINT", "string": "VARCHAR", "decimal": "DECIMAL(10,2)", "timestamp": "TIMESTAMP"}
    columns = "{" + ", ".join(f"'{name}': '{types[kind]}'" for name, kind in COLUMNS) + "}"
    con = duckdb.connect()

    def csv(path):
        return f"read_csv('{path}', header=true, columns={columns})"

    if WORKLOAD == "w1":
        con.sql(f"COPY (SELECT * FROM {csv(IN + '/*.csv')}) TO '{OUT}/out.parquet' (FORMAT parquet, COMPRESSION zstd)")
    elif WORKLOAD == "w2":
        sql = W2_SQL.replace("FROM input", f"FROM {csv(IN + '/*.csv')}")
        con.sql(f"COPY ({sql}) TO '{OUT}/out.parquet' (FORMAT parquet, COMPRESSION zstd)")
    elif WORKLOAD == "w3":
        source = f"read_json('{IN}/*.json', format='newline_delimited', columns={columns})"
        sql = W3_SQL.replace("FROM input", f"FROM {source}")
        con.sql(f"COPY ({sql}) TO '{OUT}/out.parquet' (FORMAT parquet, COMPRESSION zstd)")
    elif WORKLOAD == "w4":
        for path in files(".csv"):
            name = os.path.basename(path)[:-4]
            con.sql(f"COPY (SELECT * FROM {csv(path)}) TO '{OUT}/{name}.parquet' (FORMAT parquet, COMPRESSION zstd)")


def polars_run():
    import polars as pl
    kinds = {"int64": pl.Int64, "string": pl.String, "decimal": pl.Decimal(10, 2), "timestamp": pl.Datetime("us")}
    schema = {name: kinds[kind] for name, kind in COLUMNS}
    if WORKLOAD == "w1":
        pl.scan_csv(IN + "/*.csv", schema=schema).sink_parquet(OUT + "/out.parquet", compression="zstd")
    elif WORKLOAD == "w2":
        (pl.scan_csv(IN + "/*.csv", schema=schema)
         .filter((pl.col("status") != "cancelled") & (pl.col("amount") > 10))
         .select("order_id", "customer", "country", "amount",
                 (pl.col("amount") * pl.lit(1.2)).cast(pl.Decimal(12, 2)).alias("amount_with_vat"), "ordered_at")
         .sink_parquet(OUT + "/out.parquet", compression="zstd"))
    elif WORKLOAD == "w3":
        # JSON numbers are floats to Polars' NDJSON reader; read them so, then cast.
        json_schema = {**schema, "amount": pl.Float64}
        (pl.scan_ndjson(IN + "/*.json", schema=json_schema)
         .with_columns(pl.col("amount").cast(pl.Decimal(10, 2)), pl.col("ordered_at").cast(pl.Datetime("us")))
         .group_by("country", "status")
         .agg(pl.len().alias("orders"), pl.col("amount").sum().alias("total"),
              pl.col("ordered_at").max().alias("last_order"))
         .sink_parquet(OUT + "/out.parquet", compression="zstd"))
    elif WORKLOAD == "w4":
        for path in files(".csv"):
            name = os.path.basename(path)[:-4]
            pl.read_csv(path, schema=schema).write_parquet(f"{OUT}/{name}.parquet", compression="zstd")


def datafusion_run():
    import pyarrow as pa
    from datafusion import SessionContext
    from datafusion.dataframe import ParquetWriterOptions
    kinds = {"int64": pa.int64(), "string": pa.string(), "decimal": pa.decimal128(10, 2),
             "timestamp": pa.timestamp("us")}
    schema = pa.schema([(name, kinds[kind]) for name, kind in COLUMNS])
    ctx = SessionContext()
    zstd = ParquetWriterOptions(compression="zstd(3)")
    if WORKLOAD in ("w1", "w2"):
        ctx.register_csv("input", IN, schema=schema, has_header=True, file_extension=".csv")
        sql = "SELECT * FROM input" if WORKLOAD == "w1" else W2_SQL
        ctx.sql(sql).write_parquet_with_options(OUT + "/out.parquet", zstd)
    elif WORKLOAD == "w3":
        ctx.register_json("input", IN, schema=schema, file_extension=".json")
        ctx.sql(W3_SQL).write_parquet_with_options(OUT + "/out.parquet", zstd)
    elif WORKLOAD == "w4":
        for path in files(".csv"):
            name = os.path.basename(path)[:-4]
            table = f"t_{name.replace('-', '_')}"
            ctx.register_csv(table, path, schema=schema, has_header=True)
            ctx.sql(f"SELECT * FROM {table}").write_parquet_with_options(f"{OUT}/{name}.parquet", zstd)
            ctx.deregister_table(table)


{"duckdb": duckdb_run, "polars": polars_run, "datafusion": datafusion_run}[TOOL]()
