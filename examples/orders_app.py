"""A Flask service whose slow route runs one query per order: the N+1 pattern a report flags.

SQLAlchemy on SQLite, instrumented with OTel's SQLAlchemy instrumentor, so each query is a
child span of the request's span; the report lists them (``spans``) with literals replaced by
``?`` and flags the repeated statement (``n_plus_one``)::

    gunicorn -w 2 --chdir examples orders_app:app
"""

import os
import tempfile
import time

from flask import Flask
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from sqlalchemy import create_engine, text

from otel_perfmon import configure_perfmon
from tracing_setup import setup_tracing

ORDERS = int(os.environ.get("EXAMPLE_ORDERS", "40"))
#: a value that must never reach a report: it is a literal in every customer query
SECRET_LITERAL = os.environ.get("EXAMPLE_SECRET_LITERAL", "s3cret-literal")

provider = setup_tracing("orders-flask")
_db = os.path.join(tempfile.mkdtemp(prefix="orders-"), "orders.sqlite3")
engine = create_engine(f"sqlite:///{_db}")
SQLAlchemyInstrumentor().instrument(engine=engine, tracer_provider=provider)
with engine.begin() as conn:
    conn.execute(text("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT, api_key TEXT)"))
    conn.execute(text("CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER)"))
    for i in range(ORDERS):
        conn.execute(text(f"INSERT INTO customers VALUES ({i}, 'customer {i}', '{SECRET_LITERAL}')"))
        conn.execute(text(f"INSERT INTO orders VALUES ({i}, {i})"))

app = Flask("orders")


@app.get("/health")
def health():
    return "ok"


@app.get("/orders")
def orders():
    """One query for the orders, then one per order for its customer (the N+1), and slow."""
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT id, customer_id FROM orders")).fetchall()
        names = []
        for _order_id, customer_id in rows:
            names.append(conn.execute(text(
                f"SELECT name FROM customers WHERE id = {customer_id} AND api_key = '{SECRET_LITERAL}'")).scalar())
            time.sleep(0.02)  # each round trip to a real database takes a while
    return {"orders": len(names)}


perfmon = configure_perfmon(app=app)
