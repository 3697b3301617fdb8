"""Conformance: sdk-python's own worker tests, with ``pool.Worker`` swapped in.

    python3 scripts/sdk_conformance.py (--sdk-path DIR | --fetch-from GIT [--ref REF])
                                       [--stock | --compare] [FILE ...]

      .venv-conformance   created and kept current here (pytest 8.3, pytest-asyncio 0.21,
                          pytest-timeout, opentelemetry-sdk, pydantic, this project editable
                          with temporalio 1.35); the script re-runs itself in it, so the
                          project's own .venv is never changed
      sdk-python tests    tests/ and pyproject.toml (its pytest settings) into a temp dir,
                          never its temporalio sources: copied from --sdk-path (a checkout),
                          or ``git archive REF`` of --fetch-from (a clone, bare or not; REF
                          defaults to the tag of the installed temporalio, else HEAD)
      DevServer           loopback, the dynamic config sdk-python's conftest gives its own
      per mode            python -m pytest FILES -E ADDR -p _conformance_plugin
       (stock, pool)        --conformance-record R.jsonl [--conformance-swap]
                          cwd and PYTHONPATH = that dir (children import the test modules),
                          TEMPORAL_INTEGRATION_TEST=1 (its conftest then checks that the
                          installed temporalio is the one tested); --timeout per test (one
                          silent 30 s past it is killed, marked hung, and the rest run on),
                          --overall-timeout per mode
      R.jsonl ──▶ per file passed / failed / error / skipped; each failing test with its
                  cause (KNOWN_DIFFERENCES, "fails in stock too", or its failure message)
              ──▶ ``test_activity.py: 45/56 passed (stock 56/56)``; --markdown writes the list

Without a checkout at hand: ``git clone --bare https://github.com/temporalio/sdk-python``
and pass that directory to ``--fetch-from``. Exit status: 0 when every failing pool test
is a known difference, 1 otherwise, 2 for bad arguments or a run that could not start.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import itertools
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_VENV = ROOT / ".venv-conformance"
DEFAULT_FILES = ("tests/worker/test_activity.py", "tests/worker/test_worker.py")
LOG_DIR = ROOT / "results" / "conformance"

# What sdk-python's tests need beyond temporalio (its dev group pins pytest-asyncio 0.21,
# which breaks on pytest >= 8.4), installed next to this project (editable, which brings
# temporalio 1.35 and the `temporal` CLI).
REQUIREMENTS = (
    "pytest>=8,<8.4",
    "pytest-asyncio>=0.21,<0.22",
    "pytest-timeout>=2.2",
    "opentelemetry-sdk",
    "pydantic",
)

# The dynamic config sdk-python's tests/conftest.py gives the dev server it starts itself.
SERVER_DYNAMIC_CONFIG = (
    "system.forceSearchAttributesCacheRefreshOnRead=true",
    "limit.historyCount.suggestContinueAsNew=50",
    "system.enableEagerWorkflowStart=true",
    "frontend.enableExecuteMultiOperation=true",
    "frontend.workerVersioningWorkflowAPIs=true",
    "frontend.workerVersioningDataAPIs=true",
    "system.enableDeploymentVersions=true",
    "frontend.activityAPIsEnabled=true",
    "frontend.enableCancelWorkerPollsOnShutdown=true",
    "component.nexusoperations.recordCancelRequestCompletionEvents=true",
    "activity.enableStandalone=true",
    "activity.startDelayEnabled=true",
    "history.enableChasm=true",
    "history.enableTransitionHistory=true",
    "history.enableCHASMCallbacks=true",
    "history.enableCHASMSignalBacklinks=true",
    "nexusoperation.enableStandalone=true",
    'system.system.refreshNexusEndpointsMinWait="0s"',
    "history.enableSignalWithStartFromWorkflow=true",
    "history.enableUpdateCallbacks=true",
    "activity.enableCallbacks=true",
)

# Tests that assert a stock limitation pool.Worker removes by design: node id -> (reason,
# a text their failure message must contain). A failure without that text has another
# cause and is reported as such; the exit status ignores only the expected failures.
KNOWN_DIFFERENCES = {
    "tests/worker/test_activity.py::test_sync_activity_process_non_picklable": (
        "a non-picklable local function is accepted: cloudpickle sends it to the children",
        "DID NOT RAISE",
    ),
    "tests/worker/test_activity.py::test_sync_activity_process_executor_crash": (
        "a crashed child no longer breaks the worker: the activity fails with a retryable "
        "ChildProcessDied (not BrokenProcessPool) and a replacement child starts",
        "BrokenProcessPool",
    ),
    "tests/worker/test_activity.py::test_sync_activity_process": (
        "no max-workers UserWarning for the process path: it never polls beyond what its "
        "children can start",
        "DID NOT WARN",
    ),
    "tests/worker/test_activity.py::test_sync_activity_process_worker_shutdown_graceful": (
        "reads the private Worker._activity_worker (stock internals)",
        "_activity_worker",
    ),
    "tests/worker/test_activity.py::"
    "test_sync_activity_cancel_after_return_does_not_kill_thread_pool_worker": (
        "reads the private Worker._activity_worker._running_activities (stock internals)",
        "_activity_worker",
    ),
    "tests/worker/test_activity.py::test_sync_activity_process_non_picklable_heartbeat_details": (
        "heartbeat details are converted in the child with the payload converter, not "
        "pickled through a manager queue: the failure names the converter's error",
        "HeartbeatConversionError",
    ),
    **{
        f"tests/worker/test_worker.py::test_worker_fatal_error_{case}": (
            "injects poll failures through the private Worker._bridge_worker (stock internals)",
            "_bridge_worker",
        )
        for case in ("run", "with", "callback")
    },
    "tests/worker/test_worker.py::test_worker_debug_mode": (
        "reads the private Worker._workflow_worker (stock internals)",
        "_workflow_worker",
    ),
}

OUTCOMES = ("passed", "failed", "error", "skipped", "hung", "not run")
FAILING = ("failed", "error", "hung", "not run")
# A run that writes no outcome for this long past the per-test timeout is stuck.
STALL_GRACE = 30.0
_WATCH_INTERVAL = 1.0


@dataclass
class RunResult:
    """One mode's run: the final outcome of every collected test, failure messages."""

    mode: str
    seconds: float
    collected: list[str] = field(default_factory=list)
    swapped: list[str] = field(default_factory=list)
    outcome: dict[str, str] = field(default_factory=dict)
    message: dict[str, str] = field(default_factory=dict)
    timed_out: bool = False
    log: Path | None = None
    running: str | None = None  # setup seen, teardown not (yet)
    done: set[str] = field(default_factory=set)  # teardown seen, or hung

    def final(self, nodeid: str) -> str:
        """passed / failed / error / skipped / hung, or "not run" (the run ended first)."""
        return self.outcome.get(nodeid, "not run")

    def by_file(self) -> dict[str, Counter[str]]:
        counts: dict[str, Counter[str]] = {}
        for nodeid in self.collected:
            counts.setdefault(_file_of(nodeid), Counter())[self.final(nodeid)] += 1
        return counts

    def failing(self) -> list[str]:
        return [n for n in self.collected if self.final(n) in FAILING]


def _file_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def _base_id(nodeid: str) -> str:
    """A node id without its parametrisation: ``f.py::test_x[a]`` -> ``f.py::test_x``."""
    return nodeid.split("[", 1)[0]


def fail(message: str) -> SystemExit:
    """Print ``error: message`` and give the SystemExit (status 2) for the caller to raise."""
    print(f"error: {message}", file=sys.stderr)
    return SystemExit(2)


# -- the virtual environment -------------------------------------------------------------


def _venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def ensure_venv(venv: Path) -> None:
    """Create ``venv`` if missing; (re)install when the requirements or pyproject changed."""
    stamp = venv / ".conformance-installed"
    wanted = hashlib.sha256(
        "\n".join(REQUIREMENTS).encode() + (ROOT / "pyproject.toml").read_bytes()
    ).hexdigest()
    if stamp.is_file() and stamp.read_text() == wanted:
        return
    if not _venv_python(venv).is_file():
        print(f"creating {venv}", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    print(f"installing the conformance requirements into {venv}", flush=True)
    pip = [str(_venv_python(venv)), "-m", "pip", "install", "--quiet"]
    try:
        subprocess.run([*pip, "--upgrade", "pip"], check=True)
        subprocess.run([*pip, "-e", f"{ROOT}[server]", *REQUIREMENTS], check=True)
    except subprocess.CalledProcessError as e:
        raise fail(
            f"installing into {venv} failed ({e}); it needs PyPI. Fix the cause "
            f"shown above, or remove {venv} to start afresh"
        ) from e
    stamp.write_text(wanted)


def reexec_in(venv: Path, argv: list[str]) -> None:
    """Replace this process by the same command run with the venv's python."""
    python = _venv_python(venv)
    os.execv(python, [str(python), str(Path(__file__).resolve()), *argv])


def _inside(venv: Path) -> bool:
    return Path(sys.prefix).resolve() == venv.resolve()


# -- the sdk-python checkout -------------------------------------------------------------


def export_checkout(repo: Path, ref: str | None, into: Path) -> str:
    """``git archive`` the tests of ``ref`` into ``into``; returns the commit exported."""
    ref = ref or _matching_tag(repo) or "HEAD"
    commit = _git(repo, "rev-parse", "--verify", f"{ref}^{{commit}}").strip()
    archive = subprocess.run(
        ["git", "-C", str(repo), "archive", commit, "tests", "pyproject.toml"],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "x", "-C", str(into)], input=archive, check=True)
    return f"{ref} ({commit[:10]})"


def _matching_tag(repo: Path) -> str | None:
    import temporalio

    version = temporalio.__version__
    tags = _git(repo, "tag", "--list").split()
    for candidate in (version, f"v{version}"):
        if candidate in tags:
            return candidate
    print(
        f"note: {repo} has no tag {version} (the installed temporalio); using HEAD",
        flush=True,
    )
    return None


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise fail(f"git {' '.join(args)} in {repo}: {done.stderr.strip()}")
    return done.stdout


def copy_tests(checkout: Path, into: Path) -> None:
    """Copy the checkout's tests and pyproject.toml (its pytest settings), not its sources."""
    shutil.copytree(
        checkout / "tests", into / "tests", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy2(checkout / "pyproject.toml", into / "pyproject.toml")


def check_checkout(sdk: Path, files: list[str]) -> None:
    missing = [f for f in files if not (sdk / f.split("::", 1)[0]).is_file()]
    if not (sdk / "tests" / "conftest.py").is_file():
        raise fail(
            f"{sdk} is not an sdk-python checkout (no tests/conftest.py); pass the "
            "top directory of one, or --fetch-from a clone of temporalio/sdk-python"
        )
    if missing:
        raise fail(f"not found in {sdk}: {', '.join(missing)}")


# -- one pytest run ----------------------------------------------------------------------


def run_mode(
    mode: str, sdk: Path, files: list[str], address: str, args: argparse.Namespace
) -> RunResult:
    """Run pytest on ``files``; a test that makes no progress past its timeout (pytest-timeout
    cannot interrupt every hang) is marked hung, its run killed, and the rest run on."""
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    for old in LOG_DIR.glob(f"{mode}-*.jsonl"):  # an earlier run's attempts
        old.unlink()
    log = LOG_DIR / f"{mode}.log"
    result = RunResult(mode, 0.0, log=log)
    began = time.monotonic()
    deadline = began + args.overall_timeout
    stall = args.timeout + STALL_GRACE
    base = _pytest_command(mode, files, address, args)
    with log.open("w") as out:
        for attempt in itertools.count():
            record = LOG_DIR / f"{mode}-{attempt}.jsonl"
            cmd = [*base, "--conformance-record", str(record), *_deselect(result)]
            print(f"[{mode}] {shlex.join(base[3:])}  (log: {log})", flush=True)
            out.write(f"=== attempt {attempt}: {shlex.join(cmd)}\n")
            out.flush()
            ended = _supervise(cmd, sdk, out, record, deadline, stall)
            read_record(record, result)
            hung = result.running
            if ended != "stalled" or hung is None:
                result.timed_out = ended != "exited"
                break
            result.outcome[hung] = "hung"
            result.message[hung] = (
                f"no progress for {stall:.0f} s (per-test timeout {args.timeout:.0f} s did not "
                "end it): its run was killed and the remaining tests run without it"
            )
            result.done.add(hung)
            print(f"[{mode}] {hung} hung: killed; going on without it", flush=True)
    result.seconds = time.monotonic() - began
    return result


def _pytest_command(
    mode: str, files: list[str], address: str, args: argparse.Namespace
) -> list[str]:
    cmd = [
        sys.executable, "-m", "pytest", *files,
        "-E", address,
        "-p", "_conformance_plugin",
        "-p", "no:cacheprovider",
        "--timeout", str(args.timeout),
        "-o", "log_level=INFO",
        "-rfE", "--tb=short",
    ]  # fmt: skip
    if mode == "pool":
        cmd.append("--conformance-swap")
    if args.k:
        cmd += ["-k", args.k]
    return cmd


def _deselect(result: RunResult) -> list[str]:
    return [arg for nodeid in sorted(result.done) for arg in ("--deselect", nodeid)]


def _supervise(
    cmd: list[str], sdk: Path, out: IO[str], record: Path, deadline: float, stall: float
) -> str:
    """Run ``cmd`` until it exits ("exited"), writes nothing more to ``record`` for
    ``stall`` seconds once collection wrote it ("stalled"; start-up and collection are
    bounded by the deadline only) or passes ``deadline`` ("overall timeout")."""
    env = dict(
        os.environ,
        TEMPORAL_INTEGRATION_TEST="1",
        # The tests' tree (no temporalio sources in it) for the children, which import
        # the test modules that define the activities; this directory for the plugin.
        PYTHONPATH=os.pathsep.join(
            p for p in (str(sdk), str(HERE), os.environ.get("PYTHONPATH")) if p
        ),
    )
    proc = subprocess.Popen(
        cmd, cwd=sdk, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
    )
    size, progressed = -1, time.monotonic()
    while True:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=_WATCH_INTERVAL)
            return "exited"
        now = time.monotonic()
        new_size = record.stat().st_size if record.exists() else 0
        if new_size != size:
            size, progressed = new_size, now
        if now >= deadline:
            why = "overall timeout"
        elif size > 0 and now - progressed > stall:
            why = "stalled"
        else:
            continue
        _stop_group(proc)
        return why


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL, the process group of the pytest run this script started."""
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, None)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def read_record(path: Path, result: RunResult) -> None:
    """Fold the plugin's JSON lines into ``result``: one final outcome per test."""
    if not path.is_file():
        return
    for line in path.read_text().splitlines():
        entry = json.loads(line)
        if "collected" in entry:
            result.collected = result.collected or entry["collected"]
        elif "swapped" in entry:
            result.swapped += entry["swapped"]
        else:
            _fold(result, entry)


def _fold(result: RunResult, entry: dict[str, object]) -> None:
    nodeid, when, outcome = str(entry["nodeid"]), entry["when"], entry["outcome"]
    if when == "setup":
        result.running = nodeid
    elif when == "teardown":
        result.running = None
        result.done.add(nodeid)
    current = result.outcome.get(nodeid)
    if outcome == "skipped":
        final = "skipped"
    elif outcome == "failed":
        final = "failed" if when == "call" else "error"
    elif when == "call":
        final = "passed"
    else:  # setup or teardown passed: the call (or its absence) decides
        return
    if current in ("failed", "error") and final != "error":
        return  # a failure stays; only a teardown error is added on top of a passed call
    result.outcome[nodeid] = final
    if entry["message"] and final != "passed":
        result.message[nodeid] = f"[{when}] {entry['message']}"


# -- the report --------------------------------------------------------------------------


def _known(nodeid: str) -> tuple[str, str] | None:
    return KNOWN_DIFFERENCES.get(nodeid) or KNOWN_DIFFERENCES.get(_base_id(nodeid))


def is_expected(nodeid: str, result: RunResult) -> bool:
    """A known difference that failed the way its table entry says."""
    known = _known(nodeid)
    return known is not None and known[1] in result.message.get(nodeid, "")


def classify(nodeid: str, pool: RunResult, stock: RunResult | None) -> str:
    known = _known(nodeid)
    if known is not None and is_expected(nodeid, pool):
        return f"known difference: {known[0]}"
    if known is not None:
        return (
            f"known difference, but failed for another reason (expected {known[1]!r}): "
            f"{pool.message.get(nodeid, pool.final(nodeid))}"
        )
    if stock is not None and stock.final(nodeid) in FAILING:
        return (
            f"fails in stock too (stock: {stock.message.get(nodeid, stock.final(nodeid))}); "
            f"pool: {pool.message.get(nodeid, pool.final(nodeid))}"
        )
    if pool.final(nodeid) == "not run":
        return "not run: the run ended (overall timeout or crash) before this test"
    return pool.message.get(nodeid, "(no message)")


def file_table(result: RunResult) -> list[str]:
    ended = " (overall timeout)" if result.timed_out else ""
    lines = [f"{result.mode}: {result.seconds:.0f} s{ended}"]
    for path, counts in result.by_file().items():
        cells = ", ".join(f"{counts[o]} {o}" for o in OUTCOMES if counts[o])
        lines.append(f"  {path}: {cells}")
    return lines


def summary_lines(primary: RunResult, stock: RunResult | None) -> list[str]:
    lines = []
    stock_counts = stock.by_file() if stock is not None else {}
    for path, counts in primary.by_file().items():
        line = f"{Path(path).name}: {counts['passed']}/{sum(counts.values())} passed"
        if primary.mode == "pool" and path in stock_counts:
            s = stock_counts[path]
            line += f" (stock {s['passed']}/{sum(s.values())})"
        lines.append(line)
    return lines


def failure_lines(primary: RunResult, stock: RunResult | None) -> list[str]:
    lines = []
    for nodeid in primary.failing():
        cause = (
            classify(nodeid, primary, stock)
            if primary.mode == "pool"
            else primary.message.get(nodeid, primary.final(nodeid))
        )
        lines.append(f"{nodeid} [{primary.final(nodeid)}]: {cause}")
    return lines


def write_markdown(path: Path, primary: RunResult, stock: RunResult | None, source: str) -> None:
    out = [
        f"# sdk-python conformance ({primary.mode}): {source}",
        "",
        "`python3 scripts/sdk_conformance.py` — written "
        + time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "",
        *(f"- {line}" for line in summary_lines(primary, stock)),
        "",
        "## Failing tests",
        "",
    ]
    failing = failure_lines(primary, stock)
    out += [f"- `{line.split(' ', 1)[0]}` {line.split(' ', 1)[1]}" for line in failing] or ["none"]
    path.write_text("\n".join(out) + "\n")


def report(results: dict[str, RunResult], source: str, markdown: Path | None) -> int:
    stock = results.get("stock")
    primary = results.get("pool", stock)
    assert primary is not None
    print()
    for result in results.values():
        print("\n".join(file_table(result)))
        if result.mode == "pool":
            print(f"  swapped: {', '.join(sorted(set(result.swapped))) or 'nothing'}")
    failing = failure_lines(primary, stock)
    print(f"\nfailing tests ({primary.mode}): {len(failing)}")
    print("\n".join(f"  {line}" for line in failing))
    print()
    print("\n".join(summary_lines(primary, stock)))
    if markdown is not None:
        write_markdown(markdown, primary, stock, source)
        print(f"(list written to {markdown})")
    if not primary.collected:
        print(f"error: no test collected or the run did not start; see {primary.log}")
        return 2
    if primary.mode == "pool" and not primary.swapped:
        print("error: pool.Worker was swapped in nowhere: this run tested the stock worker")
        return 2
    unexplained = [n for n in primary.failing() if not is_expected(n, primary)]
    return 1 if unexplained else 0


# -- main --------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--sdk-path", type=Path, help="an sdk-python checkout (its top directory)")
    where.add_argument(
        "--fetch-from", type=Path, metavar="GIT", help="a git clone (bare or not) of sdk-python"
    )
    p.add_argument("--ref", help="with --fetch-from: the commit or tag (default: see above)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--stock", action="store_true", help="only the stock Worker (no swap)")
    mode.add_argument("--compare", action="store_true", help="stock first, then pool.Worker")
    p.add_argument("files", nargs="*", default=list(DEFAULT_FILES), help="test files or node ids")
    p.add_argument("-k", help="pytest -k expression")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per test (default 60)")
    p.add_argument(
        "--overall-timeout", type=float, default=1800.0, help="seconds per mode (default 1800)"
    )
    p.add_argument("--markdown", type=Path, help="also write the failing tests to this file")
    p.add_argument("--venv", type=Path, default=DEFAULT_VENV, help=f"default {DEFAULT_VENV}")
    args = p.parse_args(argv)
    if args.ref and not args.fetch_from:
        p.error("--ref needs --fetch-from")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if not _inside(args.venv):
        ensure_venv(args.venv)
        reexec_in(args.venv, argv)
    from pool.testing import DevServer

    modes = ["stock", "pool"] if args.compare else ["stock"] if args.stock else ["pool"]
    with tempfile.TemporaryDirectory(prefix="sdk-python-") as tmp:
        sdk = Path(tmp)
        if args.fetch_from:
            source = f"{args.fetch_from} at {export_checkout(args.fetch_from, args.ref, sdk)}"
        else:
            check_checkout(args.sdk_path, args.files)
            copy_tests(args.sdk_path, sdk)
            source = str(args.sdk_path)
        check_checkout(sdk, args.files)
        print(f"sdk-python tests: {source}", flush=True)
        extra = [a for v in SERVER_DYNAMIC_CONFIG for a in ("--dynamic-config-value", v)]
        with DevServer(extra_args=extra) as server:
            print(f"dev server {server.address} (pid {server.pid})", flush=True)
            results = {m: run_mode(m, sdk, args.files, server.address, args) for m in modes}
    return report(results, source, args.markdown)


if __name__ == "__main__":
    sys.exit(main())
