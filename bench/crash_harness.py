"""Crash and fault harness: the real daemon under SIGKILLs, a killed and frozen Postgres,
and injected write failures, while files keep changing; then every table is compared
with a from-scratch build of the final files.

    .venv/bin/python bench/crash_harness.py --kills 100 --pg-kills 10 --pg-stops 5 \\
        --write-failures 20 --seconds 1200

A driver thread creates, edits, renames and deletes files in two instances' folders. The
daemon (``python -m cocod.cli.main serve``, its own embedded Postgres in a temp state
dir) runs flows with a tiny deterministic embedder that appends every call to a log, so
the embeddings computed can be compared with the minimum (one per distinct text and
instance). Faults, each at a random moment: daemon SIGKILL during initdb (first start),
setup, catch-up, embedding, commits and reload (SIGHUP); postmaster SIGKILL; SIGSTOP of
the whole cluster; a trigger on the target tables failing a fraction of row writes.
This module is also the daemon's flow definition (``bench.crash_harness:factory``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

import cocod as cocoindex

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script, bench/ is sys.path[0], not the repository
    sys.path.insert(0, str(ROOT))

from bench.paragraph_flow import FlowDefinition, paragraph_flow  # noqa: E402

EMBED_LOG_ENV = "CRASH_HARNESS_EMBED_LOG"
INSTANCES = ("alpha", "beta")
WORDS = [
    *("lorem", "ipsum", "dolor", "sit", "amet", "consectetur"),
    *("adipiscing", "elit", "sed", "do", "eiusmod", "tempor"),
]


# -- the daemon's flow ---------------------------------------------------------------------
def harness_vector(text: str) -> np.ndarray:
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return np.frombuffer(digest, dtype=np.uint8).astype(np.float32) + 1.0


@cocoindex.op.function(cache=True, behavior_version=1)
def harness_embed(text: str) -> cocoindex.Vector[np.float32, Literal[8]]:
    """Deterministic; appends each real call to $CRASH_HARNESS_EMBED_LOG (one line, O_APPEND)."""
    log = os.environ.get(EMBED_LOG_ENV)
    if log:
        line = hashlib.blake2b(text.encode(), digest_size=8).hexdigest() + "\n"
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
    return harness_vector(text)  # type: ignore[return-value]


@dataclass
class Paragraph:
    index: int
    text: str


def paragraphs(content: str) -> list[Paragraph]:
    parts = [p.strip() for p in content.split("\n\n")]
    return [Paragraph(i, p) for i, p in enumerate(p for p in parts if p)]


@cocoindex.op.function()
def harness_split(content: str) -> list[Paragraph]:
    return paragraphs(content)


@dataclass
class Params:
    source_path: str
    table: str
    generation: int = 0  # bumped by the harness to make a reload restart the instance


def factory(params: Params) -> FlowDefinition:
    return paragraph_flow(
        params.source_path,
        params.table,
        split=harness_split,
        embed=harness_embed,
        included=["*.md"],
    )


# -- the workload ----------------------------------------------------------------------------
class Driver(threading.Thread):
    """Keeps creating, editing, renaming and deleting files; ``burst`` adds many at once."""

    def __init__(self, folders: list[Path], seed: int, interval: float = 0.05) -> None:
        super().__init__(daemon=True, name="crash-driver")
        self.folders = folders
        self.random = random.Random(seed)
        self.interval = interval
        self.stopped = threading.Event()
        self.lock = threading.Lock()
        self.changes = 0
        self.serial = 0
        self.journal: list[str] = []  # "time op path": to trace a lost change in the log

    def text(self, fresh: bool = False) -> str:
        words = self.random.sample(WORDS, 4)
        if fresh:
            self.serial += 1
            words.append(f"n{self.serial}")
        return " ".join(words)

    def content(self, fresh: bool = False) -> str:
        return "\n\n".join(self.text(fresh) for _ in range(self.random.randint(1, 5)))

    def step(self, fresh: bool = False) -> None:
        with self.lock:
            folder = self.random.choice(self.folders)
            files = sorted(folder.rglob("*.md"))
            op = self.random.choice(["create", "edit", "edit", "rename", "delete"])
            if not files or (op == "create" and len(files) < 60) or fresh:
                sub = folder / self.random.choice(["", "sub", "sub/deep"])
                sub.mkdir(parents=True, exist_ok=True)
                self.serial += 1
                path = sub / f"f{self.serial}.md"
                path.write_text(self.content(fresh))
                self.note("create", path)
            elif op == "edit":
                target = self.random.choice(files)
                parts = target.read_text().split("\n\n")
                parts[self.random.randrange(len(parts))] = self.text(fresh=True)
                target.write_text("\n\n".join(parts))
                self.note("edit", target)
            elif op == "rename":
                self.serial += 1
                target = self.random.choice(files)
                target.rename(target.parent / f"r{self.serial}.md")
                self.note(f"rename-to:r{self.serial}.md", target)
            else:
                target = self.random.choice(files)
                target.unlink()
                self.note("delete", target)
            self.changes += 1

    def note(self, op: str, path: Path) -> None:
        stamp = time.strftime("%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}"
        self.journal.append(f"{stamp} {op} {path}")

    def burst(self, n: int, fresh: bool = False) -> None:
        for _ in range(n):
            self.step(fresh)

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            with contextlib.suppress(OSError):  # a file renamed by a concurrent burst
                self.step()


# -- the daemon and its Postgres -------------------------------------------------------------
def _read_postmaster(pgdata: Path) -> tuple[int, str, int] | None:
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
        return int(lines[0]), lines[4].strip(), int(lines[3])
    except (OSError, IndexError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    return out


class Daemon:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.config = work / "config.toml"
        self.socket = work / "cocod.sock"
        self.state_dir = work / "state"
        self.pgdata = self.state_dir / "pgdata"
        self.log = work / "daemon.log"
        self.embed_log = work / "embed.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.generation = 0
        self.write_config()

    def write_config(self) -> None:
        parts = [f'[daemon]\nsocket = "{self.socket}"\nstate_dir = "{self.state_dir}"\n']
        for name in INSTANCES:
            gen = self.generation if name == "beta" else 0
            parts.append(
                f'[flows.{name}]\ndefinition = "bench.crash_harness:factory"\n'
                f'[flows.{name}.params]\nsource_path = "{self.work / name}"\n'
                f'table = "{name}_rows"\ngeneration = {gen}\n'
            )
        self.config.write_text("\n".join(parts))

    def spawn(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("COCOD_")}
        env.update(PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", COCOD_LOG_LEVEL="info")
        env[EMBED_LOG_ENV] = str(self.embed_log)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "cocod.cli.main", "serve", "--config", str(self.config)],
                env=env,
                cwd=self.work,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process and self.process.poll() is None else None

    def call(self, cmd: str, timeout: float = 3.0, **args: Any) -> Any:
        from cocod.control.client import ControlClient

        return ControlClient(self.socket, timeout=timeout).call(cmd, args)

    def answers(self, timeout: float = 2.0) -> bool:
        try:
            self.call("ping", timeout=timeout)
            return True
        except Exception:
            return False

    def states(self) -> dict[str, str]:
        try:
            return {r["name"]: str(r["state"]) for r in self.call("status")}
        except Exception:
            return {}

    def wait(self, check: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                return False
            if check():
                return True
            time.sleep(0.05)
        return False

    def watching(self) -> bool:
        states = self.states()
        return len(states) == len(INSTANCES) and all(s == "WATCHING" for s in states.values())

    def kill(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.process.kill()
            self.process.wait()
        self.process = None

    def terminate(self, timeout: float = 30.0) -> int | None:
        if self.process is None:
            return None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def postmaster(self) -> int | None:
        found = _read_postmaster(self.pgdata)
        return found[0] if found and _alive(found[0]) else None

    def resources(self) -> dict[str, int]:
        pid = self.pid
        if pid is None:
            return {}
        with open(f"/proc/{pid}/status") as f:
            rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        return {"rss_kib": rss, "open_fds": len(os.listdir(f"/proc/{pid}/fd"))}

    def log_tail(self, lines: int = 15) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


# -- the database seen from outside ----------------------------------------------------------
def sql(daemon: Daemon, query: str, *args: Any) -> list[Any]:
    import asyncpg

    found = _read_postmaster(daemon.pgdata)
    if found is None:
        raise RuntimeError("no postmaster.pid: the embedded Postgres is not running")
    _, socket_dir, port = found

    async def run() -> list[Any]:
        conn = await asyncpg.connect(
            host=socket_dir, port=port, user="postgres", database="postgres", timeout=5
        )
        try:
            if not args and not query.lstrip().upper().startswith("SELECT"):
                await conn.execute(query)  # may be a script of several statements
                return []
            return list(await conn.fetch(query, *args))
        finally:
            await conn.close()

    return asyncio.run(run())


FAULT_SQL = """
CREATE TABLE IF NOT EXISTS harness_faults (id int PRIMARY KEY, fraction float8 NOT NULL);
INSERT INTO harness_faults VALUES (1, 0) ON CONFLICT DO NOTHING;
CREATE SEQUENCE IF NOT EXISTS harness_fault_count;
CREATE OR REPLACE FUNCTION harness_fail() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF random() < (SELECT fraction FROM harness_faults WHERE id = 1) THEN
    PERFORM nextval('harness_fault_count');  -- sequences survive the rollback
    RAISE EXCEPTION 'harness: injected write failure';
  END IF;
  RETURN NEW;
END $$;
"""


def install_faults(daemon: Daemon) -> None:
    sql(daemon, FAULT_SQL)
    for name in INSTANCES:
        sql(
            daemon,
            f"CREATE OR REPLACE TRIGGER harness_fail BEFORE INSERT OR UPDATE ON {name}_rows "
            "FOR EACH ROW EXECUTE FUNCTION harness_fail()",
        )


def faults_injected(daemon: Daemon) -> int:
    rows = sql(daemon, "SELECT last_value, is_called FROM harness_fault_count")
    return int(rows[0][0]) if rows and rows[0][1] else 0


def expected_rows(folder: Path) -> dict[tuple[str, int], str]:
    out = {}
    for path in folder.rglob("*.md"):
        key = path.relative_to(folder).as_posix()
        for p in paragraphs(path.read_text()):
            out[(key, p.index)] = p.text
    return out


def verify_instances(daemon: Daemon, work: Path) -> dict[str, Any]:
    """``cocod verify`` (the library function) on each instance: it must find no drift."""
    from cocod.runtime.verify import verify

    found = _read_postmaster(daemon.pgdata)
    if found is None:
        return {"error": "no postmaster"}
    url = f"postgresql://postgres@/postgres?host={found[1]}&port={found[2]}"
    cocoindex.init(cocoindex.Settings(database=cocoindex.DatabaseConnectionSpec(url=url)))
    out: dict[str, Any] = {}
    try:
        for name in INSTANCES:
            gen = daemon.generation if name == "beta" else 0
            flow = cocoindex.open_flow(name, factory(Params(str(work / name), f"{name}_rows", gen)))
            try:
                report = verify(flow).to_dict()
                out[name] = {"has_drift": report["has_drift"], "findings": report["findings"]}
            finally:
                flow.close()
    finally:
        cocoindex.stop()
    return out


def compare(daemon: Daemon, work: Path) -> dict[str, int]:
    """Each table against a from-scratch build (computed here) of the final files."""
    totals = {"rows": 0, "lost": 0, "orphaned": 0, "stale": 0, "duplicated": 0, "bad_vector": 0}
    for name in INSTANCES:
        expected = expected_rows(work / name)
        rows = sql(daemon, f"SELECT filename, index, text, embedding::text FROM {name}_rows")
        seen: set[tuple[str, int]] = set()
        for filename, index, text, vector in rows:
            key = (filename, index)
            totals["duplicated"] += key in seen
            seen.add(key)
            if key not in expected:
                totals["orphaned"] += 1
            elif expected[key] != text:
                totals["stale"] += 1
            elif json.loads(vector) != harness_vector(text).tolist():
                totals["bad_vector"] += 1
        totals["lost"] += len(set(expected) - seen)
        totals["rows"] += len(rows)
    return totals


# -- the run -----------------------------------------------------------------------------------
PHASES = ("setup", "catch_up", "embedding", "commit", "reload")


@dataclass
class Options:
    kills: int = 5
    pg_kills: int = 1
    pg_stops: int = 1
    write_failures: int = 3
    seconds: float = 90.0
    seed: int = 1
    converge_timeout: float = 90.0


@dataclass
class Result:
    options: dict[str, Any]
    kills_by_phase: dict[str, int] = field(default_factory=dict)
    pg_kills: int = 0
    pg_stops: int = 0
    write_failures_injected: int = 0
    file_changes: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    converged: bool = False
    converge_seconds: float | None = None
    embeddings_computed: int = 0
    embeddings_minimum: int = 0
    resources_before: dict[str, int] = field(default_factory=dict)
    resources_after: dict[str, int] = field(default_factory=dict)
    pg_recovery_seconds: list[float] = field(default_factory=list)
    ping_while_frozen_max_seconds: float = 0.0
    verify: dict[str, Any] = field(default_factory=dict)
    daemon_exit_code: int | None = None
    postgres_left_running: bool = False
    elapsed_seconds: float = 0.0
    bugs: list[str] = field(default_factory=list)

    @property
    def kills(self) -> int:
        return sum(self.kills_by_phase.values())


class Harness:
    def __init__(self, options: Options, work: Path) -> None:
        self.o = options
        self.work = work
        for name in INSTANCES:
            (work / name).mkdir(parents=True, exist_ok=True)
        self.daemon = Daemon(work)
        self.random = random.Random(options.seed)
        self.driver = Driver([work / n for n in INSTANCES], options.seed)
        self.driver.burst(20)
        self.result = Result(options=asdict(options))
        self.faults_installed = False
        self.epoch = 0

    def bug(self, what: str) -> None:
        self.result.bugs.append(what)
        print(f"  BUG: {what}", file=sys.stderr)

    def killed(self, phase: str) -> None:
        self.daemon.kill()
        self.result.kills_by_phase[phase] = self.result.kills_by_phase.get(phase, 0) + 1

    def ensure_up(self, timeout: float = 60.0) -> bool:
        for _attempt in range(2):
            if self.daemon.pid is None:
                self.daemon.spawn()
            if self.daemon.wait(self.daemon.watching, timeout):
                return True
            self.bug(
                f"instances not WATCHING {timeout:.0f}s after start (states "
                f"{self.daemon.states()}, daemon exit {self.exit_code()}); "
                f"log tail:\n{self.daemon.log_tail()}"
            )
            self.daemon.kill()
        return False

    def exit_code(self) -> int | None:
        return self.daemon.process.poll() if self.daemon.process else None

    def ensure_down(self) -> None:
        self.daemon.kill()

    # -- faults --------------------------------------------------------------------------
    def kill_during(self, phase: str) -> None:
        d, r = self.daemon, self.random
        if phase == "initdb":
            if d.pgdata.exists():  # only a first start runs initdb: start from nothing again
                self.cleanup()
                self.epoch += 1
                self.faults_installed = False
                if d.embed_log.exists():
                    d.embed_log.rename(d.embed_log.with_suffix(f".{self.epoch}"))
                shutil.rmtree(d.state_dir, ignore_errors=True)
            d.spawn()
            d.wait(d.pgdata.exists, 20)
            time.sleep(r.uniform(0, 0.6))
        elif phase == "setup":
            self.ensure_down()
            d.spawn()
            d.wait(d.answers, 30)
            time.sleep(r.uniform(0, 0.4))
        elif phase == "catch_up":
            self.ensure_down()
            self.driver.burst(30)
            d.spawn()
            d.wait(lambda: "CATCHING_UP" in d.states().values(), 20)
            time.sleep(r.uniform(0, 0.3))
        else:
            if not self.ensure_up():
                return
            if phase == "embedding":
                size = d.embed_log.stat().st_size if d.embed_log.exists() else 0
                self.driver.burst(15, fresh=True)
                d.wait(lambda: d.embed_log.exists() and d.embed_log.stat().st_size > size, 10)
            elif phase == "commit":
                self.driver.burst(10)
                time.sleep(r.uniform(0.05, 0.5))
            elif phase == "reload":
                d.generation += 1
                d.write_config()
                if d.pid is not None:
                    os.kill(d.pid, signal.SIGHUP)
                time.sleep(r.uniform(0, 0.6))
        self.killed(phase)

    def kill_postgres(self) -> None:
        if not self.ensure_up():
            return
        self.driver.burst(10)
        time.sleep(0.2)
        old = self.daemon.postmaster()
        if old is None:
            self.bug("no live postmaster to kill")
            return
        os.kill(old, signal.SIGKILL)
        self.result.pg_kills += 1
        started = time.monotonic()
        d = self.daemon
        back = d.wait(lambda: (p := d.postmaster()) is not None and p != old and d.watching(), 45)
        if back:
            self.result.pg_recovery_seconds.append(round(time.monotonic() - started, 2))
        else:
            self.bug(
                f"after a postmaster SIGKILL the daemon did not restart Postgres and resume "
                f"within 45 s (states {d.states()}, daemon alive {d.pid is not None}); "
                f"log tail:\n{d.log_tail()}"
            )
            d.kill()  # a fresh start restarts the server

    def freeze_postgres(self) -> None:
        if not self.ensure_up():
            return
        self.driver.burst(10)
        pm = self.daemon.postmaster()
        if pm is None:
            return
        cluster = [pm, *_children(pm)]
        for pid in cluster:
            os.kill(pid, signal.SIGSTOP)
        self.result.pg_stops += 1
        try:
            until = time.monotonic() + self.random.uniform(1.0, 3.0)
            while time.monotonic() < until:
                started = time.monotonic()
                ok = self.daemon.answers(timeout=5) and bool(self.daemon.states())
                took = time.monotonic() - started
                self.result.ping_while_frozen_max_seconds = max(
                    self.result.ping_while_frozen_max_seconds, round(took, 3)
                )
                if not ok:
                    self.bug(f"ping/status failed or took {took:.1f}s while Postgres was frozen")
                    break
                time.sleep(0.2)
        finally:
            for pid in cluster:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
        if not self.daemon.wait(self.daemon.watching, 30):
            self.bug(f"not WATCHING 30 s after Postgres thawed: {self.daemon.states()}")

    def write_failure_window(self) -> None:
        if not self.ensure_up():
            return
        try:
            if not self.faults_installed:
                install_faults(self.daemon)
                self.faults_installed = True
            sql(self.daemon, "UPDATE harness_faults SET fraction = 0.25")
            self.driver.burst(12, fresh=True)
            time.sleep(2.0)
        finally:
            if self.faults_installed:
                sql(self.daemon, "UPDATE harness_faults SET fraction = 0")
        self.result.write_failures_injected = faults_injected(self.daemon)

    # -- the whole run --------------------------------------------------------------------
    def schedule(self) -> list[str]:
        o = self.o
        initdb = max(1, o.kills // 25) if o.kills else 0
        phases = [PHASES[i % len(PHASES)] for i in range(max(0, o.kills - initdb))]
        windows = -(-o.write_failures // 4) if o.write_failures else 0
        rest = phases + ["pg_kill"] * o.pg_kills + ["pg_stop"] * o.pg_stops + ["faults"] * windows
        self.random.shuffle(rest)
        return ["initdb"] * initdb + rest

    def run(self) -> Result:
        started = time.monotonic()
        deadline = started + self.o.seconds
        self.driver.start()
        try:
            self.inject(started, deadline)
            self.driver.stopped.set()
            self.driver.join()
            self.finish(started)
        finally:
            self.driver.stopped.set()
            self.driver.join()
            self.cleanup()
        return self.result

    def inject(self, started: float, deadline: float) -> None:
        events = self.schedule()
        first_up = False
        for i, event in enumerate(events):
            if time.monotonic() > deadline:
                self.bug(f"--seconds ran out after {i} of {len(events)} faults")
                break
            if event != "initdb" and not first_up and self.ensure_up(120):
                first_up = True
                time.sleep(1.0)
                self.result.resources_before = self.daemon.resources()
            print(f"[{time.monotonic() - started:6.1f}s] {event}", file=sys.stderr)
            if event == "pg_kill":
                self.kill_postgres()
            elif event == "pg_stop":
                self.freeze_postgres()
            elif event == "faults":
                self.write_failure_window()
            else:
                self.kill_during(event)
        while (
            self.faults_installed
            and self.result.write_failures_injected < self.o.write_failures
            and time.monotonic() < deadline
        ):
            self.write_failure_window()

    def cleanup(self) -> None:
        """Whatever happened, leave no daemon or Postgres of ours running."""
        self.daemon.kill()
        pm = self.daemon.postmaster()
        if pm is not None and os.path.realpath(f"/proc/{pm}/cwd") == str(
            self.daemon.pgdata.resolve()
        ):
            os.kill(pm, signal.SIGTERM)
            if not self.daemon.wait(lambda: not _alive(pm), 15):
                os.kill(pm, signal.SIGKILL)

    def finish(self, started: float) -> None:
        r, d = self.result, self.daemon
        r.file_changes = self.driver.changes
        (self.work / "driver.log").write_text("\n".join(self.driver.journal) + "\n")
        if self.ensure_up(120):
            if not r.resources_before:
                r.resources_before = d.resources()
            converge_started = time.monotonic()
            last_error = ""
            while True:
                try:
                    r.rows = compare(d, self.work)
                except Exception as e:  # the database may still be coming back
                    r.rows = {"error": 1}
                    last_error = str(e)
                bad = {k: v for k, v in r.rows.items() if k != "rows" and v}
                if not bad:
                    r.converged = True
                    r.converge_seconds = round(time.monotonic() - converge_started, 2)
                    break
                if time.monotonic() - converge_started > self.o.converge_timeout:
                    extra = f" ({last_error})" if "error" in bad else ""
                    self.bug(
                        f"tables did not converge within {self.o.converge_timeout:.0f}s: "
                        f"{bad}{extra}; states {d.states()}"
                    )
                    break
                time.sleep(1.0)
            r.resources_after = d.resources()
            try:
                r.verify = verify_instances(d, self.work)
            except Exception as e:
                r.verify = {"error": f"{type(e).__name__}: {e}"}
            if any(not isinstance(v, dict) or v.get("has_drift") for v in r.verify.values()):
                self.bug(f"verify after convergence: {r.verify}")
        for log in [d.embed_log, *d.work.glob("embed.[0-9]*")]:
            if log.exists():  # one log per database lifetime (initdb kills start over)
                lines = log.read_text().split()
                r.embeddings_computed += len(lines)
                r.embeddings_minimum += len(set(lines))
        pm = d.postmaster()
        r.daemon_exit_code = d.terminate()
        if pm is not None and _alive(pm):
            gone = Daemon.wait(d, lambda: not _alive(pm), 15)
            if not gone:
                r.postgres_left_running = True
                self.bug("the embedded Postgres was still running 15 s after the daemon exited")
                os.kill(pm, signal.SIGTERM)
        r.elapsed_seconds = round(time.monotonic() - started, 1)


def run_harness(options: Options, work: Path | None = None) -> Result:
    if work is not None:
        return Harness(options, work).run()
    tmp = Path(tempfile.mkdtemp(prefix="cocod-crash-"))
    try:
        return Harness(options, tmp).run()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def summary(result: Result) -> str:
    r = result
    rows = [
        ("daemon SIGKILLs", f"{r.kills} " + json.dumps(r.kills_by_phase)),
        ("Postgres SIGKILLs", str(r.pg_kills)),
        ("Postgres SIGSTOPs", str(r.pg_stops)),
        ("write failures injected", str(r.write_failures_injected)),
        ("file changes", str(r.file_changes)),
        ("final rows", str(r.rows.get("rows", "?"))),
        (
            "lost / duplicated / stale / orphaned",
            " / ".join(
                str(r.rows.get(k, "?")) for k in ("lost", "duplicated", "stale", "orphaned")
            ),
        ),
        ("wrong vectors", str(r.rows.get("bad_vector", "?"))),
        ("converged", f"{r.converged} after {r.converge_seconds} s"),
        ("embeddings computed / minimum", f"{r.embeddings_computed} / {r.embeddings_minimum}"),
        (
            "RSS KiB before / after",
            f"{r.resources_before.get('rss_kib')} / {r.resources_after.get('rss_kib')}",
        ),
        (
            "open fds before / after",
            f"{r.resources_before.get('open_fds')} / {r.resources_after.get('open_fds')}",
        ),
        ("verify drift after", str({k: v.get("has_drift") for k, v in r.verify.items()})),
        ("Postgres recovery s", str(r.pg_recovery_seconds)),
        ("max ping while frozen s", str(r.ping_while_frozen_max_seconds)),
        ("daemon exit / pg left running", f"{r.daemon_exit_code} / {r.postgres_left_running}"),
        ("elapsed s", str(r.elapsed_seconds)),
        ("bugs", str(len(r.bugs))),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def default_out() -> Path:
    stamp = time.strftime("%Y-%m-%d", time.gmtime())
    return ROOT / "bench" / "results" / f"{stamp}-{os.cpu_count()}c" / "crash_harness.json"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=100, help="daemon SIGKILLs")
    p.add_argument("--pg-kills", type=int, default=10, help="postmaster SIGKILLs")
    p.add_argument("--pg-stops", type=int, default=5, help="SIGSTOPs of the whole cluster")
    p.add_argument("--write-failures", type=int, default=20, help="injected row-write failures")
    p.add_argument("--seconds", type=float, default=1200, help="budget for the fault phase")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--converge-timeout", type=float, default=120)
    p.add_argument("--keep", type=Path, help="work in this folder and keep it (logs, pgdata)")
    p.add_argument("--out", type=Path, default=None, help="JSON output (default bench/results/…)")
    a = p.parse_args(argv)
    options = Options(
        a.kills, a.pg_kills, a.pg_stops, a.write_failures, a.seconds, a.seed, a.converge_timeout
    )
    result = run_harness(options, a.keep)
    print(summary(result))
    for bug in result.bugs:
        print(f"- {bug}")
    out = a.out or default_out()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**asdict(result), "kills": result.kills}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
