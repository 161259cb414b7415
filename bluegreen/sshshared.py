"""What every host of a fleet shares, read once per process instead of once per host.

* Fabric's ``Config``: building one parses ``/etc/ssh/ssh_config`` and ``~/.ssh/config``
  and merges invoke's layers, ~0.4 ms; a ``Connection`` only reads it. Kept while HOME and
  both ssh_config files (inode, size, mtime) stay the same; a file they ``Include`` or
  fabric's own config files changing mid-process is seen by the next process.
* The identity file's key: paramiko reads ``key_filename`` at every connect and tries the
  RSA, then ECDSA, then Ed25519 parser on it (~0.15 ms per host). Kept while the file and
  its ``-cert.pub`` stay the same. A key that needs a passphrase, or cannot be read, is not
  preloaded: paramiko meets it as before, through ``key_filename``.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import paramiko
from fabric import Config

_lock = threading.Lock()
_configs: dict[tuple[object, ...], Config] = {}
_keys: dict[tuple[object, ...], paramiko.PKey] = {}

_CERT = "-cert.pub"


def _stamp(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def fabric_config() -> Config:
    """One ``fabric.Config`` for every Connection while the ssh_config files stay as read."""
    home = os.path.expanduser("~")
    key = (home, _stamp("/etc/ssh/ssh_config"), _stamp(os.path.join(home, ".ssh", "config")))
    with _lock:
        config = _configs.get(key)
        if config is None:
            _configs.clear()  # an older HOME or file version is never asked for again
            config = _configs[key] = Config()
        return config


def identity_key(path: str) -> paramiko.PKey | None:
    """The private key in ``path`` (with its certificate, as paramiko's ``key_filename``
    loads it), or None where paramiko should read the file itself."""
    if path.endswith(_CERT):
        return None  # paramiko finds the key beside the certificate: leave that to it
    key_stamp = (path, _stamp(path), _stamp(path + _CERT))
    with _lock:
        hit = _keys.get(key_stamp)
    if hit is not None:
        return hit
    pkey = _load(path)
    if pkey is not None:
        with _lock:
            _keys[key_stamp] = pkey
    return pkey


def _load(path: str) -> paramiko.PKey | None:
    """paramiko's SSHClient._key_from_filepath, with its classes in its order."""
    key: Any = None
    for klass in (paramiko.RSAKey, paramiko.ECDSAKey, paramiko.Ed25519Key):
        try:
            key = klass.from_private_key_file(path)
            break
        except paramiko.SSHException:  # not this type, or a passphrase is needed
            continue
        except (OSError, ValueError):
            return None
    if key is None:
        return None
    if os.path.isfile(path + _CERT):
        try:
            key.load_certificate(path + _CERT)
        except (OSError, ValueError, paramiko.SSHException):
            return None
    pkey: paramiko.PKey = key
    return pkey
