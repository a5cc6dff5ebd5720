"""A real Better Auth server for the tests: the npm package and its PostgreSQL adapter.

``tests/support/better_auth_server/`` pins ``better-auth`` and ``pg`` in a package-lock.json;
the first use runs ``npm ci`` there (under a lock, so two sessions at once
install once; again whenever the lock file changes). ``server.mjs`` runs Better
Auth's own migrations on the database it is given and serves its HTTP API on a
free port; the tests sign users up and out through that API, as a frontend does.
With ``jwt_algorithm`` it also runs the jwt and bearer plugins (tokens from
``/token``, keys at ``/jwks``, a test-only key rotation), and ``base_path`` serves
it under a base URL with a path.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import secrets
import select
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import httpx2

ROOT = Path(__file__).resolve().parents[2]
NODE_PROJECT = ROOT / "tests" / "support" / "better_auth_server"
INSTALL_STAMP = NODE_PROJECT / "node_modules" / ".todo-server-installed"
INSTALL_LOCK = ROOT / ".data" / "better-auth-npm.lock"
START_TIMEOUT_SECONDS = 30.0
COOKIE_NAME = "better-auth.session_token"


def ensure_installed() -> None:
    """``npm ci`` into better_auth_server/node_modules unless the pinned packages are there."""
    want = hashlib.sha256((NODE_PROJECT / "package-lock.json").read_bytes()).hexdigest()
    if INSTALL_STAMP.exists() and INSTALL_STAMP.read_text() == want:
        return
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError(
            "npm (and node 20+) is needed for the Better Auth tests; ./run.sh test installs it"
        )
    INSTALL_LOCK.parent.mkdir(parents=True, exist_ok=True)
    with open(INSTALL_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if INSTALL_STAMP.exists() and INSTALL_STAMP.read_text() == want:
            return
        result = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=NODE_PROJECT,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if result.returncode != 0:
            raise RuntimeError(f"npm ci failed in {NODE_PROJECT}:\n{result.stderr[-4000:]}")
        INSTALL_STAMP.write_text(want)


@dataclass(frozen=True)
class SignedUp:
    """What Better Auth hands a browser at sign-up."""

    user_id: str
    email: str
    name: str
    token: str  # the session token, as in the response body and the session table
    cookie: str  # the session cookie's value as sent: URL-encoded "token.signature"


class BetterAuthServer:
    """``node tests/support/better_auth_server/server.mjs`` on a database of its own."""

    def __init__(
        self,
        database_url: str,
        secret: str,
        naming: str = "default",
        *,
        jwt_algorithm: str | None = None,
        base_path: str | None = None,
        port: int | None = None,
        cookie_cache: str | None = None,
    ) -> None:
        ensure_installed()
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/tmp"),
            "NODE_ENV": "test",
            "BETTER_AUTH_DATABASE_URL": database_url,
            "BETTER_AUTH_SECRET": secret,
            "BETTER_AUTH_NAMING": naming,
        }
        if jwt_algorithm is not None:
            env["BETTER_AUTH_JWT"] = jwt_algorithm
        if base_path is not None:
            env["BETTER_AUTH_BASE_PATH"] = base_path
        if port is not None:
            env["BETTER_AUTH_PORT"] = str(port)
        if cookie_cache is not None:
            env["BETTER_AUTH_COOKIE_CACHE"] = cookie_cache
        self.process = subprocess.Popen(
            ["node", "server.mjs"],
            cwd=NODE_PROJECT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], START_TIMEOUT_SECONDS)
        line = self.process.stdout.readline() if ready else ""
        if not line:
            self.stop()
            raise RuntimeError(f"Better Auth did not start:\n{self.stderr}")
        started = json.loads(line)
        self.url = started["url"]  # the origin: what Better Auth writes in iss and aud
        self.api = started["api"]  # where its endpoints live, e.g. {url}/api/auth
        self.jwks_url = self.api + "/jwks"
        # Better Auth refuses cookie-bearing POSTs from origins it does not trust.
        self.http = httpx2.Client(base_url=self.url, headers={"Origin": self.url}, timeout=10)
        self.stderr = ""

    def sign_up(self, name: str = "Ada") -> SignedUp:
        email = f"{name.lower()}-{secrets.token_hex(4)}@example.com"
        r = self.http.post(
            self.api + "/sign-up/email",
            json={"email": email, "password": "correct horse battery", "name": name},
        )
        assert r.status_code == 200, r.text
        body = r.json()
        return SignedUp(
            user_id=body["user"]["id"],
            email=email,
            name=name,
            token=body["token"],
            cookie=self.session_cookie(r),
        )

    @staticmethod
    def session_cookie(response: httpx2.Response) -> str:
        for header in response.headers.get_list("set-cookie"):
            name, _, rest = header.partition("=")
            if name == COOKIE_NAME:
                return rest.partition(";")[0]
        raise AssertionError(f"no {COOKIE_NAME} cookie in {response.headers}")

    def sign_in(self, email: str) -> httpx2.Response:
        r = self.http.post(
            self.api + "/sign-in/email",
            json={"email": email, "password": "correct horse battery"},
        )
        assert r.status_code == 200, r.text
        return r

    @staticmethod
    def cookie(response: httpx2.Response, name: str) -> str:
        """A cookie's value as set, e.g. ``better-auth.session_data`` (the cookie cache)."""
        for header in response.headers.get_list("set-cookie"):
            key, _, rest = header.partition("=")
            if key == name:
                return rest.partition(";")[0]
        raise AssertionError(f"no {name} cookie in {response.headers}")

    def verification_token(self, email: str) -> str:
        """The e-mail verification token Better Auth "sent" at sign-up."""
        r = self.http.get("/__test__/verification-token", params={"email": email})
        assert r.status_code == 200, r.text
        return r.json()["token"]

    def sign_out(self, cookie: str) -> None:
        r = self.http.post(self.api + "/sign-out", headers={"Cookie": f"{COOKIE_NAME}={cookie}"})
        assert r.status_code == 200, r.text

    def jwt(self, session_token: str) -> str:
        """A JWT-plugin token for a session, as ``authClient.token()`` gets it."""
        r = self.http.get(self.api + "/token", headers={"Authorization": f"Bearer {session_token}"})
        assert r.status_code == 200, r.text
        return r.json()["token"]

    def rotate_key(self) -> str:
        """Make the jwt plugin generate a new key, which it signs with from now on; its kid."""
        r = self.http.post("/__test__/rotate-jwk")
        assert r.status_code == 200, r.text
        return r.json()["kid"]

    def stop(self) -> None:
        if getattr(self, "http", None) is not None:
            self.http.close()
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()  # server.mjs exits when its stdin closes
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stderr is not None and not self.process.stderr.closed:
            self.stderr = self.process.stderr.read()
            self.process.stderr.close()
        if self.process.stdout is not None:
            self.process.stdout.close()
