#!/usr/bin/env python3
"""Counts the WAL frames (4 KiB pages) that a saga's commits write on SQLite,
and which B-tree each belongs to: what a commit's fsync carries.

It builds a database from the repository's migrations, replays the writes
the store makes for 300 sagas of 5 steps (the create with step 0's running
mark, then each step's result with the next step's mark and the saga's
update), reads the page number of every frame each commit appended from the
WAL's frame headers, and maps pages to tables and indexes with dbstat.

    python3 bench/scripts/wal_frames.py

compares the schema after the first migration alone with the current one,
and the saga update that always assigns `status` with one that names it only
when it changes.
"""
import collections
import json
import os
import sqlite3
import struct
import tempfile
import time
import uuid
from pathlib import Path

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations" / "sqlite"
PAGE = 4096


def frames(wal):
    """Page numbers of the frames in the WAL file, in order."""
    if not os.path.exists(wal):
        return []
    data = open(wal, "rb").read()
    out, off = [], 32
    while off + 24 + PAGE <= len(data):
        out.append(struct.unpack(">I", data[off:off + 4])[0])
        off += 24 + PAGE
    return out


def run(migrations, always_status):
    path = os.path.join(tempfile.mkdtemp(), "frames.db")
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA wal_autocheckpoint = 0")
    db.execute("PRAGMA foreign_keys = OFF")
    for name in migrations:
        db.executescript((MIGRATIONS / name).read_text())
    db.execute("PRAGMA foreign_keys = ON")
    plan = json.dumps([{"name": "echo", "plugin": "sha256:" + "a" * 64,
                        "max_attempts": 3, "timeout_ms": 30000}] * 5)
    creates, steps = [], []
    for i in range(300):
        # UUIDv7-like: time-ordered, as the host's ids are.
        sid = "%012d-%s" % (i, uuid.uuid4().hex[:20])
        now = int(time.time() * 1000) + i
        before = len(frames(path + "-wal"))
        db.execute("BEGIN IMMEDIATE")
        db.execute(
            "INSERT INTO saga_runs (id, kind, status, steps, inputs, current_step_index, context,"
            " cancel_requested, lease_owner, lease_expires_at, created_at, updated_at)"
            " VALUES (?, 'bench', 'running', ?, '{\"message\":\"hello\"}', 0, '{}', 0, 'host', ?, ?, ?)",
            (sid, plan, now + 30000, now, now))
        db.execute(
            "INSERT INTO saga_step_results (saga_id, step_index, phase, status, attempts, logs,"
            " started_at, executed_by) VALUES (?, 0, 'execute', 'running', 1, '[]', ?, 'host')",
            (sid, now))
        db.execute("COMMIT")
        creates.append(frames(path + "-wal")[before:])
        for k in range(5):
            before = len(frames(path + "-wal"))
            last = k == 4
            db.execute("BEGIN IMMEDIATE")
            db.execute(
                "UPDATE saga_step_results SET status = 'completed', output = ?, finished_at = ?"
                " WHERE saga_id = ? AND step_index = ?",
                ('{"message":"hello"}', now, sid, k))
            if not last:
                db.execute(
                    "INSERT INTO saga_step_results (saga_id, step_index, phase, status, attempts,"
                    " logs, started_at, executed_by)"
                    " VALUES (?, ?, 'execute', 'running', 1, '[]', ?, 'host')",
                    (sid, k + 1, now))
            if last or always_status:
                db.execute(
                    "UPDATE saga_runs SET updated_at = ?, status = ?, current_step_index = ?,"
                    " context = ? WHERE id = ?",
                    (now, "completed" if last else "running", k + 1, '{"message":"hello"}', sid))
            else:
                db.execute(
                    "UPDATE saga_runs SET updated_at = ?, current_step_index = ?, context = ?"
                    " WHERE id = ?",
                    (now, k + 1, '{"message":"hello"}', sid))
            db.execute("COMMIT")
            steps.append(frames(path + "-wal")[before:])
    owner = {page: name for name, page in db.execute("SELECT name, pageno FROM dbstat")}

    def summary(commits):
        commits = commits[len(commits) // 3:]  # past the first page splits
        per = collections.Counter(owner.get(p, "?") for c in commits for p in c)
        where = ", ".join(f"{n} {v / len(commits):.2f}" for n, v in per.most_common())
        return f"{sum(map(len, commits)) / len(commits):.2f} frames ({where})"

    return summary(creates), summary(steps)


if __name__ == "__main__":
    every = sorted(p.name for p in MIGRATIONS.glob("*.sql"))
    for label, migrations, always in [
        ("first migration, status always assigned", every[:1], True),
        ("all migrations, status always assigned", every, True),
        ("all migrations, status only when it changes (the store now)", every, False),
    ]:
        create, step = run(migrations, always)
        print(f"{label}:\n  create: {create}\n  step:   {step}")
