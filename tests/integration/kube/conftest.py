from tests.support.kube.fixtures import *  # noqa: F403
from tests.support.mount_node import node  # noqa: F401
