"""The Flask dashboard (`weir web`). Not built yet: it arrives with its own issue.

Like the worker, it will reach the server only through gRPC (the import
contract in pyproject.toml forbids importing weir.server or SQLAlchemy here).
"""
