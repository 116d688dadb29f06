"""The global ConfigMap `juicefs-csi-driver-config`, hot-reloaded from a one-object watch.

An invalid config never replaces a good one: new mount pods keep the last
good config and the error is logged (and the node plugin puts it in a Warning
Event on the app pods it publishes for meanwhile), so a typo cannot take
volumes down. Existing mount pods are never re-specced by a reload; only new
ones see it.

With `state_file`, the last good config's text is kept on disk (0600), so a
node plugin restarted while the ConfigMap is broken still has it. `valid` is
False only while no good config is known at all (the ConfigMap was invalid
from the start and nothing was kept): publishes that need a new mount pod
then fail rather than build one from defaults the operator did not ask for.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from lightkube import AsyncClient
from lightkube.resources.core_v1 import ConfigMap

from juicefs_csi.kube.informer import Event, Informer
from juicefs_csi.mountpod.config import ConfigError, GlobalConfig, parse_config
from juicefs_csi.mountpod.names import CONFIG_MAP_KEY, CONFIG_MAP_NAME

log = logging.getLogger("juicefs_csi.config")


class GlobalConfigWatcher:
    def __init__(
        self, client: AsyncClient, namespace: str, name: str = CONFIG_MAP_NAME, *, state_file: Path | None = None
    ) -> None:
        self.current = GlobalConfig()
        self.error: str | None = None
        self.valid = True
        self.name = name
        self.state_file = state_file
        self._kept = self._load_kept()
        self._good_text: str | None = None
        self.informer: Informer[ConfigMap] = Informer(
            client, ConfigMap, namespace=namespace, fields={"metadata.name": name}, name="global-config"
        )
        self.informer.add_handler(self._changed)

    async def start(self, timeout: float = 30.0) -> None:
        self.informer.start()
        await self.informer.wait_synced(timeout)
        if not any(True for _ in self.informer.items()):
            self._use("", "absent: using defaults")  # also replaces a kept config (deleted while we were down)

    async def stop(self) -> None:
        await self.informer.stop()

    def _changed(self, event: Event, config_map: ConfigMap) -> None:
        if event is Event.DELETED:
            self._use("", "removed: using defaults")
            return
        text = (config_map.data or {}).get(CONFIG_MAP_KEY, "")
        try:
            parse_config(text)
        except ConfigError as exc:
            self._invalid(exc.message)
            return
        self._use(text, "loaded")

    def _use(self, text: str, how: str) -> None:
        self.current = parse_config(text)
        self._good_text, self.error, self.valid = text, None, True
        self._keep(text)
        log.info(f"global config {how}", extra={"configmap": self.name, "patches": len(self.current.mount_pod_patch)})

    def _invalid(self, error: str) -> None:
        self.error = error
        if self._good_text is None and self._kept is not None:
            self.current, self._good_text = parse_config(self._kept), self._kept
            log.info("global config: using the last good one, kept on disk", extra={"configmap": self.name})
        self.valid = self._good_text is not None
        if self.valid:
            log.error(
                "invalid global config: keeping the last good one", extra={"configmap": self.name, "error": error}
            )
        else:
            log.error(
                "invalid global config and no good one known: new mount pods are refused until it is fixed",
                extra={"configmap": self.name, "error": error},
            )

    def _load_kept(self) -> str | None:
        if self.state_file is None:
            return None
        try:
            text = self.state_file.read_text()
            parse_config(text)
        except (OSError, UnicodeDecodeError, ConfigError):
            return None
        return text

    def _keep(self, text: str) -> None:
        if self.state_file is None or text == self._kept:
            return
        temporary = self.state_file.with_name(self.state_file.name + ".tmp")
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as file:
                file.write(text)
            os.replace(temporary, self.state_file)
            self._kept = text
        except OSError as exc:
            log.warning(
                "cannot keep the global config on disk", extra={"path": str(self.state_file), "error": str(exc)}
            )
            with contextlib.suppress(OSError):
                temporary.unlink()
