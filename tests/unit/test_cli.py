"""Controller flags: the Go driver's names and defaults, and the startup errors for impossible combinations."""

from __future__ import annotations

import pytest

from juicefs_csi.cli import build_parser, config_from_args
from juicefs_csi.driver import DriverConfig

ENV = ("KUBECONFIG", "KUBERNETES_SERVICE_HOST", "POD_NAME", "POD_NAMESPACE", "PROVISION_WORKER_THREADS")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV:
        monkeypatch.delenv(name, raising=False)


def config(*argv: str) -> DriverConfig:
    return config_from_args(build_parser().parse_args(list(argv)))


def test_defaults_are_the_go_drivers() -> None:
    args = build_parser().parse_args([])
    assert args.provisioner is False
    assert args.leader_election is False
    assert args.leader_election_namespace == ""
    assert args.leader_election_lease_duration == 15.0


@pytest.mark.parametrize(
    ("text", "seconds"), [("15s", 15.0), ("4s", 4.0), ("1m", 60.0), ("1m30s", 90.0), ("30", 30.0), ("2.5", 2.5)]
)
def test_lease_duration_takes_go_durations_and_plain_seconds(text: str, seconds: float) -> None:
    args = build_parser().parse_args(["--leader-election-lease-duration", text])
    assert args.leader_election_lease_duration == seconds


@pytest.mark.parametrize("text", ["0s", "-5s", "abc", "15x", "inf"])
def test_bad_lease_durations_are_refused(text: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["--leader-election-lease-duration", text])
    assert exited.value.code == 2
    assert "--leader-election-lease-duration" in capsys.readouterr().err


def test_provisioner_and_election_need_kubernetes_on_a_controller() -> None:
    with pytest.raises(ValueError, match="--provisioner needs Kubernetes"):
        config("--role=controller", "--provisioner")
    with pytest.raises(ValueError, match="--leader-election needs Kubernetes"):
        config("--role=controller", "--leader-election", "--leader-election-namespace=kube-system")


def test_controller_flags_are_ignored_by_a_node() -> None:
    built = config("--role=node", "--by-process", "--provisioner")
    assert built.kube is None
    assert built.run_controller is False


def test_lease_namespace_defaults_to_the_pods(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", "/nonexistent/kubeconfig")
    with pytest.raises(ValueError, match="--leader-election-namespace or POD_NAMESPACE"):
        config("--role=controller", "--leader-election")
    monkeypatch.setenv("POD_NAMESPACE", "juicefs")
    built = config("--role=controller", "--leader-election", "--leader-election-lease-duration=4s")
    assert built.leader_election is True
    assert built.leader_election_namespace == "juicefs"
    assert built.leader_election_lease_duration == 4.0
    flagged = config("--role=controller", "--leader-election", "--leader-election-namespace=other")
    assert flagged.leader_election_namespace == "other"


def test_provisioner_workers_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", "/nonexistent/kubeconfig")
    monkeypatch.setenv("PROVISION_WORKER_THREADS", "7")
    built = config("--role=controller", "--provisioner")
    assert built.provisioner is True
    assert built.provisioner_workers == 7
    assert built.kube is not None
    monkeypatch.setenv("PROVISION_WORKER_THREADS", "0")
    with pytest.raises(ValueError, match="PROVISION_WORKER_THREADS"):
        config("--role=controller", "--provisioner")


def test_role_follows_pod_name_like_the_go_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NAME", "juicefs-csi-controller-0")
    built = config("--by-process")
    assert (built.run_node, built.run_controller) == (False, True)
    monkeypatch.setenv("POD_NAME", "juicefs-csi-node-x7k2p")
    built = config("--by-process")
    assert (built.run_node, built.run_controller) == (True, False)


def test_cleanup_grace_reaches_the_controller_work_and_refuses_nonsense(capsys: pytest.CaptureFixture[str]) -> None:
    assert config("--role=controller").cleanup_grace == 120.0
    assert config("--role=controller", "--cleanup-grace=5m").cleanup_grace == 300.0
    assert config("--role=controller", "--cleanup-grace=0").cleanup_grace == 0.0
    for text in ("-1s", "soon"):
        with pytest.raises(SystemExit) as exited:
            build_parser().parse_args(["--cleanup-grace", text])
        assert exited.value.code == 2
        assert "--cleanup-grace" in capsys.readouterr().err
