"""The worker: claims tasks over gRPC and runs them in isolated processes.

It never imports weir.server or a database driver, so a worker host needs
only `pip install weir`.
"""
