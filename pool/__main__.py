"""``python -m pool``: see :mod:`pool._launcher` and docs/launcher.md."""

# The guard matters: the pool's children (spawn, forkserver) import the main module, and
# must not start a launcher of their own.
if __name__ == "__main__":
    from pool._launcher import main

    main()
