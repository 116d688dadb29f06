"""The global ConfigMap `juicefs-csi-driver-config`, hot-reloaded from a one-object watch.

An invalid config never replaces a good one: new mount pods keep the last
good config and the error is logged, so a typo cannot take volumes down.
Existing mount pods are never re-specced by a reload; only new ones see it.
"""

from __future__ import annotations

import logging

from lightkube import AsyncClient
from lightkube.resources.core_v1 import ConfigMap

from juicefs_csi.kube.informer import Event, Informer
from juicefs_csi.mountpod.config import ConfigError, GlobalConfig, parse_config
from juicefs_csi.mountpod.names import CONFIG_MAP_KEY, CONFIG_MAP_NAME

log = logging.getLogger("juicefs_csi.config")


class GlobalConfigWatcher:
    def __init__(self, client: AsyncClient, namespace: str, name: str = CONFIG_MAP_NAME) -> None:
        self.current = GlobalConfig()
        self.error: str | None = None
        self.name = name
        self.informer: Informer[ConfigMap] = Informer(
            client, ConfigMap, namespace=namespace, fields={"metadata.name": name}, name="global-config"
        )
        self.informer.add_handler(self._changed)

    async def start(self, timeout: float = 30.0) -> None:
        self.informer.start()
        await self.informer.wait_synced(timeout)

    async def stop(self) -> None:
        await self.informer.stop()

    def _changed(self, event: Event, config_map: ConfigMap) -> None:
        if event is Event.DELETED:
            self.current, self.error = GlobalConfig(), None
            log.info("global config removed: using defaults", extra={"configmap": self.name})
            return
        text = (config_map.data or {}).get(CONFIG_MAP_KEY, "")
        try:
            self.current = parse_config(text)
        except ConfigError as exc:
            self.error = exc.message
            log.error("invalid global config: keeping the last good one", extra={"error": exc.message})
            return
        self.error = None
        log.info("global config loaded", extra={"configmap": self.name, "patches": len(self.current.mount_pod_patch)})
