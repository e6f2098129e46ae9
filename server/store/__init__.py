"""SQL lives here and only here: one module per aggregate.

Functions take a SQLAlchemy `Connection` and an explicit `now`, and never
commit: the caller owns the transaction (see weir.server.store.db).
"""
