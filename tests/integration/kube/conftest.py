from tests.support.kube.fixtures import *  # noqa: F403
