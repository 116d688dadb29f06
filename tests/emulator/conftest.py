"""The emulator's own tests use the shared Kubernetes API fixtures."""

from tests.support.kube.fixtures import *  # noqa: F403
