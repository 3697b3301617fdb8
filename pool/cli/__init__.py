"""``python -m pool``: run a worker, the demo, or a dev server from the command line.

    run MODULE[:ATTR]...  run.py: check flags (checks.py) ─▶ import + discover (discovery.py)
                          ─▶ connection settings (connection.py: flags > TEMPORAL_* env >
                          TOML profile) ─▶ connect, check the namespace ─▶ pool.Worker.run()
                          ─▶ 1st signal: graceful shutdown, 2nd: cancel every activity now
    demo                  demo.py: dev server (unless --address) ─▶ sample fan-out
                          (demo_activities.py) ─▶ live progress (progress.py) ─▶ summary.py
    server                server.py: the embedded dev server in the foreground until a signal

main.py parses the command line (args.py, arg_types.py) and turns a LaunchError (errors.py:
exit codes) into one line on stderr. The library (pool/ outside this package) never imports
pool.cli; only pool/__main__.py runs it.
"""

from __future__ import annotations

from .main import main, run_cli

__all__ = ["main", "run_cli"]
