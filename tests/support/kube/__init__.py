"""Kubernetes API for tests: an in-process emulator or a real envtest-style control plane."""

from .client import KubeApiError, Response
from .controlplane import ASSETS_ENV, KubeAPI, start_kube_api
from .emulator import Emulator, EmulatorConfig
from .resources import REGISTRY, Obj, ResourceType
from .store import Change
from .verbs import Api

__all__ = [
    "ASSETS_ENV",
    "REGISTRY",
    "Api",
    "Change",
    "Emulator",
    "EmulatorConfig",
    "KubeAPI",
    "KubeApiError",
    "Obj",
    "ResourceType",
    "Response",
    "start_kube_api",
]
