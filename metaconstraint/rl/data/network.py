"""Whether a download can work now: an offline switch, or a short connect probe of Minari's remote
(a download attempt without network fails only after ~25 s of retries); the message when it cannot."""

from __future__ import annotations

import os
import socket
import threading
import urllib.parse
import urllib.request
from typing import Any

from metaconstraint.rl.data.errors import DatasetUnavailableError
from metaconstraint.rl.data.roots import dataset_roots


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


_PROBE_TIMEOUT = 1.5  # seconds for the connect probe; the whole check stays under ~2 s


def _remote_endpoint() -> tuple[str, int, str]:
    """``(host, port, description)`` of where minari downloads from (or of the proxy in between)."""
    remote = os.environ.get("MINARI_REMOTE", "hf://farama-minari")
    kind = remote.split("://", 1)[0] if "://" in remote else "hf"
    if kind == "gcp":
        url = "https://storage.googleapis.com"
    else:
        url = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    parsed = urllib.parse.urlsplit(url)
    scheme = parsed.scheme or "https"
    host = parsed.hostname or "huggingface.co"
    port = parsed.port or (443 if scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        proxied = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        if proxied.hostname:
            return proxied.hostname, proxied.port or 80, f"the proxy {proxied.hostname}:{proxied.port or 80} (for {host})"
    return host, port, f"{host}:{port}"


def _can_connect(host: str, port: int, timeout: float) -> str | None:
    """None if a TCP connection opens within ``timeout``; otherwise why not. DNS is bounded too."""
    outcome: dict[str, Any] = {}

    def attempt() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                outcome["ok"] = True
        except OSError as error:
            outcome["error"] = error

    thread = threading.Thread(target=attempt, name="metaconstraint-network-probe", daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    if outcome.get("ok"):
        return None
    if "error" in outcome:
        return str(outcome["error"]) or type(outcome["error"]).__name__
    return f"no answer within {timeout:g} s"


def offline_reason() -> str | None:
    """Why a download cannot work right now, or None if the remote answers."""
    if _truthy(os.environ.get("METACONSTRAINT_OFFLINE")):
        return "METACONSTRAINT_OFFLINE=1 is set, so no download was attempted"
    remote = os.environ.get("MINARI_REMOTE", "hf://farama-minari")
    if remote.startswith("hf://") and _truthy(os.environ.get("HF_HUB_OFFLINE")):
        return "HF_HUB_OFFLINE=1 is set, so no download was attempted"
    host, port, description = _remote_endpoint()
    problem = _can_connect(host, port, _PROBE_TIMEOUT)
    if problem is not None:
        return f"this machine cannot reach {description}, where minari downloads from ({problem})"
    return None


QUICKSTART_DATASET = "builtin/pendulum/medium-v0"


def unavailable_error(dataset_id: str, reason: str) -> DatasetUnavailableError:
    configured = os.environ.get("MINARI_DATASETS_PATH")
    roots = dataset_roots()
    where = (
        f"MINARI_DATASETS_PATH={configured}"
        if configured
        else f"MINARI_DATASETS_PATH is not set, so minari's default {roots[0]}"
    )
    searched = " and ".join(str(r / dataset_id) for r in roots)
    return DatasetUnavailableError(
        f"Dataset {dataset_id} is not available: it is not in any local root ({where}; searched "
        f"{searched}) and {reason}. To get it, run `minari download {dataset_id}` (or "
        f"`metaconstraint datasets download {dataset_id}`) on a machine with network access and copy "
        f"the dataset folder into MINARI_DATASETS_PATH here, or point MINARI_DATASETS_PATH at a folder "
        f"that already has it. To work fully offline, use a built-in dataset, generated on this machine "
        f"in seconds: `metaconstraint run aspc --dataset {QUICKSTART_DATASET} --steps 3000` "
        f"(`metaconstraint datasets list` shows them all)."
    )
