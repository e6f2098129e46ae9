"""ETL: extract orders, clean them, aggregate revenue per customer, load, report.

Results flow between tasks as arguments; `min_amount` is a DAG param a run
can override: `weir dags trigger etl_orders --conf '{"min_amount": 20}'`.
"""

from __future__ import annotations

import sqlite3
import tempfile
from datetime import datetime, timedelta
from pathlib import Path

from weir import bash_task, dag, get_current_context, task

# A day's export from the shop; a real DAG would read it from S3 or an API.
RAW_ORDERS = [
    {"id": 1, "customer": "ada", "amount": "19.90", "status": "paid"},
    {"id": 2, "customer": "grace", "amount": "5.00", "status": "paid"},
    {"id": 3, "customer": "ada", "amount": "42.10", "status": "paid"},
    {"id": 4, "customer": "linus", "amount": "n/a", "status": "paid"},
    {"id": 5, "customer": "grace", "amount": "12.50", "status": "refunded"},
    {"id": 6, "customer": "barbara", "amount": "99.99", "status": "paid"},
    {"id": 7, "customer": "ada", "amount": "7.25", "status": "paid"},
]


@dag(
    schedule="0 3 * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["etl", "example"],
    params={"min_amount": 0},
    default_args={"retries": 2, "retry_delay": timedelta(seconds=10)},
)
def etl_orders():
    """Revenue per customer from the daily order export."""

    @task
    def extract() -> list[dict]:
        print(f"extracted {len(RAW_ORDERS)} orders")
        return RAW_ORDERS

    @task
    def clean(orders: list[dict], min_amount: float = 0) -> list[dict]:
        kept = []
        for order in orders:
            try:
                amount = float(order["amount"])
            except ValueError:
                print(f"dropping order {order['id']}: bad amount {order['amount']!r}")
                continue
            if order["status"] == "paid" and amount >= min_amount:
                kept.append({**order, "amount": amount})
        print(f"kept {len(kept)} of {len(orders)} orders (min_amount={min_amount})")
        return kept

    @task
    def aggregate(orders: list[dict]) -> dict[str, float]:
        totals: dict[str, float] = {}
        for order in orders:
            totals[order["customer"]] = round(totals.get(order["customer"], 0.0) + order["amount"], 2)
        return dict(sorted(totals.items(), key=lambda kv: -kv[1]))

    @task
    def load(totals: dict[str, float]) -> dict:
        ctx = get_current_context()
        path = str(Path(tempfile.gettempdir()) / "weir-example-revenue.db")
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE IF NOT EXISTS revenue (run_id TEXT, customer TEXT, total REAL)")
            db.execute("DELETE FROM revenue WHERE run_id = ?", (ctx.run_id,))
            db.executemany(
                "INSERT INTO revenue VALUES (?, ?, ?)", [(ctx.run_id, c, t) for c, t in totals.items()]
            )
        print(f"loaded {len(totals)} rows into {path}")
        return {"rows": len(totals), "top_customer": next(iter(totals), None), "path": path}

    summary = load(aggregate(clean(extract())))
    report = bash_task("report", command='echo "revenue loaded for run $WEIR_RUN_ID"')
    summary >> report


etl_orders()
