"""Weir's control plane: gRPC services, scheduling, the lease queue and the store.

Only this package touches the metadata database (SQLAlchemy Core in
`weir.server.store`); everything else reaches it through gRPC.
"""
