"""Where the CLI finds its server and token.

Precedence: ``--url`` (the server only), then the environment (``STAGETRACK_URL``,
``STAGETRACK_TOKEN``), then the config file written by ``stagetrack login``:
``$XDG_CONFIG_HOME/stagetrack/config.json`` (``~/.config/stagetrack/config.json`` when
XDG_CONFIG_HOME is unset or not absolute, as the XDG spec says). The file holds the token, so it
is created 0600 in a 0700 folder and refused when group or others may read it (as ssh refuses a
readable private key). A token is never taken from the command line: argv lands in shell history
and in ``ps``."""
from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from stagetrack_cli.errors import AUTH, USAGE, CliError

URL_ENV = "STAGETRACK_URL"
TOKEN_ENV = "STAGETRACK_TOKEN"
CONFIG_ENV = "STAGETRACK_CONFIG"  # another file than the default (tests, several servers)


@dataclass(frozen=True)
class Config:
    url: str
    token: str | None
    source: str  # where the token came from, for messages ("STAGETRACK_TOKEN", the file's path)


def config_path(env: dict[str, str] | os._Environ[str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV])
    base = env.get("XDG_CONFIG_HOME", "")
    if not base or not os.path.isabs(base):
        base = os.path.join(env.get("HOME") or os.path.expanduser("~"), ".config")
    return Path(base) / "stagetrack" / "config.json"


def read_file(path: Path) -> dict:
    """The config file's settings ({} when there is none); refused when others may read it."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise CliError(f"cannot read the config file {path}: {e.strerror}", USAGE,
                       "run `stagetrack login` to write it again") from None
    with os.fdopen(fd, "rb") as f:
        mode = os.fstat(f.fileno()).st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise CliError(
                f"the config file {path} holds a token and others may read it "
                f"(mode {stat.S_IMODE(mode):04o})", AUTH,
                f"run `chmod 600 {path}` (and consider revoking that token), or `stagetrack login` again")
        raw = f.read()
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise CliError(f"the config file {path} is not a JSON object", USAGE,
                       "run `stagetrack login` to write it again")
    return data


def write_file(path: Path, url: str, token: str) -> None:
    """Writes {url, token} atomically: a 0600 temporary file in the same 0700 folder, renamed."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".config-", dir=path.parent)  # mkstemp creates it 0600
    try:
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), 0o600)
            json.dump({"url": url, "token": token}, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def check_url(url: str) -> str:
    """The server's base URL without a trailing slash. http:// is accepted for loopback hosts only:
    elsewhere the token would cross the network in clear."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CliError(f"not a server URL: {url!r}", USAGE,
                       "give the API's base URL, e.g. https://abc123.execute-api.eu-west-1.amazonaws.com/api "
                       "or http://127.0.0.1:8000")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise CliError(f"the server URL must not carry credentials, a query or a fragment: {url!r}", USAGE,
                       "give the base URL only; the token comes from STAGETRACK_TOKEN or `stagetrack login`")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise CliError(f"refusing to send a token in clear to {parts.hostname} (http://)", USAGE,
                       "use the https:// URL of the server (plain http is only for a local server)")
    return url.rstrip("/")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load(url_flag: str | None, env: dict[str, str] | os._Environ[str] | None = None,
         need_token: bool = True) -> Config:
    env = os.environ if env is None else env
    path = config_path(env)
    env_url, env_token = env.get(URL_ENV) or None, env.get(TOKEN_ENV) or None
    stored: dict = {}
    if not (env_token and (url_flag or env_url)):
        stored = read_file(path)
    url = url_flag or env_url or stored.get("url")
    if not url:
        raise CliError("no server configured", USAGE,
                       f"set {URL_ENV} (e.g. export {URL_ENV}=http://127.0.0.1:8000) "
                       "or run `stagetrack login`")
    token: str | None
    if env_token:
        token, source = env_token, TOKEN_ENV
    else:
        token, source = stored.get("token"), str(path)
        if token is not None and not isinstance(token, str):
            raise CliError(f"the config file {path} has no valid token", USAGE,
                           "run `stagetrack login` to write it again")
    if need_token and not token:
        raise CliError("no token configured", AUTH,
                       f"set {TOKEN_ENV} or run `stagetrack login` "
                       "(it reads the token from stdin or a prompt)")
    return Config(check_url(str(url)), token, source)
