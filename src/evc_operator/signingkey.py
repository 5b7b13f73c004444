"""The key that seals the facts a claim's deadline rests on (seal.py), loaded at start.

Where it lives decides who could forge a seal:

- in a cluster (SIGNING_KEY_NAMESPACE, by default POD_NAMESPACE, is known): the key
  `key` of the Secret SIGNING_KEY_SECRET (default `evc-operator-signing-key`) in that
  namespace. The manifests and the chart ship it empty; the first replica to start fills
  it with 32 random bytes (a patch with a resourceVersion precondition, so that two
  replicas starting at once agree on one key). The operator may only get and patch that
  one Secret. Who may read Secrets in the operator's namespace may forge a seal;
- elsewhere (`make run`, `kopf run` on a workstation): the file SIGNING_KEY_FILE, by
  default `$XDG_STATE_HOME/evc-operator/signing-key` (`~/.local/state/...`), created with
  mode 0600 on first start. Whoever may read that file may forge a seal.

A new key (the Secret's `key` emptied, or the file deleted) makes every stored record
unverified once: each deadline then counts the later way (lifecycle.believed), never
earlier. A deleted Secret is not made again (the operator may not create it): the next
start stops with a ConfigError until the manifests or the chart are applied again.
"""

from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path

from evc_operator import kube
from evc_operator.credentials import ConfigError
from evc_operator.errors import Conflict, Forbidden
from evc_operator.settings import Settings

KEY_BYTES = 32
FIELD = "key"


def default_file() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "evc-operator" / "signing-key"


def file_key(path: Path) -> bytes:
    """The key in `path`, made (0600, in a 0700 directory) if there is none yet."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not path.exists():
        # Written aside, then linked into place: a second operator starting at the same
        # moment sees either no file or a whole key, and the first link wins.
        draft = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(secrets.token_hex(KEY_BYTES) + "\n")
        try:
            os.link(draft, path)
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    text = path.read_text().strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) < KEY_BYTES // 2:
        raise ConfigError(f"{path} does not hold a signing key (hex, {KEY_BYTES} bytes): "
                          f"delete it to have a new one made")
    return key


async def secret_key(api: kube.Api, namespace: str, name: str) -> bytes:
    """The key in the Secret, filled with a new one if it is empty."""
    for _ in range(5):
        try:
            secret = await kube.read_secret(api, namespace, name)
        except Forbidden:
            secret = None
        if secret is None:
            raise ConfigError(
                f"the Secret {namespace}/{name} that holds the key sealing claims' status "
                f"does not exist or may not be read: apply the manifests (config/) or the "
                f"chart, which ship it, or name another with SIGNING_KEY_SECRET")
        stored = (secret.get("data") or {}).get(FIELD)
        if stored:
            try:
                key = base64.b64decode(stored, validate=True)
            except ValueError:
                key = b""
            if len(key) < KEY_BYTES // 2:  # a weak or garbled key seals nothing worth trust
                raise ConfigError(
                    f"the Secret {namespace}/{name} does not hold a signing key in "
                    f"`{FIELD}` ({KEY_BYTES} random bytes, at least {KEY_BYTES // 2}): "
                    f"empty its `{FIELD}` to have a new one made")
            return key
        key = secrets.token_bytes(KEY_BYTES)
        try:
            await kube.patch_secret(api, namespace, name,
                                    secret["metadata"]["resourceVersion"],
                                    {FIELD: base64.b64encode(key).decode()})
        except Conflict:
            continue  # another replica filled it meanwhile: read theirs
        return key
    raise ConfigError(f"the Secret {namespace}/{name} keeps changing: cannot settle on a key")


async def load(api: kube.Api, settings: Settings) -> tuple[bytes, str]:
    """The key, and where it came from (for the log)."""
    if settings.signing_key_namespace:
        namespace, name = settings.signing_key_namespace, settings.signing_key_secret
        return await secret_key(api, namespace, name), f"Secret {namespace}/{name}"
    path = Path(settings.signing_key_file) if settings.signing_key_file else default_file()
    return file_key(path), f"file {path}"
