"""Worker hosts need neither the server nor a database driver."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import sys
import weir, weir.cli, weir.worker.worker, weir.worker.child, weir.client
bad = sorted(m for m in sys.modules
             if m.split('.')[0] in ('sqlalchemy', 'alembic', 'psycopg', 'flask') or m.startswith('weir.server'))
print(','.join(bad))
"""


def test_sdk_cli_and_worker_import_without_the_server_or_sqlalchemy() -> None:
    out = subprocess.run(
        [sys.executable, "-c", CHECK], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "", f"imported server-side modules: {out.stdout}"
