"""``python -m pool``: see :mod:`pool.cli` and docs/launcher.md."""

# The guard matters: the pool's children (spawn, forkserver) import the main module, and
# must not start a launcher of their own.
if __name__ == "__main__":
    from pool.cli import main

    main()
