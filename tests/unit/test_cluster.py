"""The cluster without Docker: TLS material, names, the node recipe digest, CLI input."""

from __future__ import annotations

import ipaddress
import ssl
from pathlib import Path

import docker
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from typer.testing import CliRunner

from jupyter_sandbox import BadRequestError
from jupyter_sandbox.backends.cluster_certs import CertificateAuthority
from jupyter_sandbox.backends.cluster_nodes import LocalCluster
from jupyter_sandbox.backends.node_image import node_image_tag, node_recipe_hash, recipe_files
from jupyter_sandbox.cli import app


def test_node_certificate_names_the_node_and_chains_to_the_ca(tmp_path: Path) -> None:
    ca = CertificateAuthority.create("demo")
    issued = ca.issue_server("jsbx-demo-node-1", ["10.213.0.3", "localhost"])
    cert = x509.load_pem_x509_certificate(issued.cert_pem)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.213.0.3")]
    assert names.get_values_for_type(x509.DNSName) == ["jsbx-demo-node-1", "localhost"]
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca.cert_pem))
    # what the client side does: load the chain into an SSL context
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem)
    context = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
    client = ca.issue_client("client")
    (tmp_path / "cert.pem").write_bytes(client.cert_pem)
    (tmp_path / "key.pem").write_bytes(client.key_pem)
    context.load_cert_chain(str(tmp_path / "cert.pem"), str(tmp_path / "key.pem"))


def test_ca_round_trips_through_its_folder_with_private_modes(tmp_path: Path) -> None:
    ca = CertificateAuthority.create("demo")
    ca.save(tmp_path / "ca")
    assert {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "ca").iterdir()} == {
        "ca.pem": 0o600,
        "ca-key.pem": 0o600,
    }
    assert (tmp_path / "ca").stat().st_mode & 0o777 == 0o700
    again = CertificateAuthority.load(tmp_path / "ca")
    assert again.cert_pem == ca.cert_pem
    issued = again.issue_client("later")
    x509.load_pem_x509_certificate(issued.cert_pem).verify_directly_issued_by(
        x509.load_pem_x509_certificate(ca.cert_pem)
    )


@pytest.mark.parametrize("name", ["", "a b", "../x", "x" * 41, "naïve", "a_b", "-x", "Upper"])
def test_cluster_names_are_checked(name: str, tmp_path: Path) -> None:
    engine = docker.DockerClient(base_url="tcp://127.0.0.1:1", version="1.41")
    with pytest.raises(BadRequestError) as caught:
        LocalCluster(engine, name, home=tmp_path)
    assert caught.value.param == "name"


def test_node_image_tag_is_the_recipe_digest() -> None:
    recipe = recipe_files()
    assert node_image_tag() == f"jupyter-sandbox-node:{node_recipe_hash(recipe)}"
    changed = {**recipe, "packages.txt": recipe["packages.txt"] + b"strace\n"}
    assert node_recipe_hash(changed) != node_recipe_hash(recipe)


NO_ENGINE = {"DOCKER_HOST": "tcp://127.0.0.1:1"}


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["cluster", "up", "--nodes", "0"], 2, "--nodes"),
        (["cluster", "up", "--nodes", "17"], 2, "--nodes"),
        (["cluster", "up", "--name", "Bad_Name", "--no-load"], 2, "lowercase letters"),
        (["cluster", "down", "--name", "../x"], 2, "lowercase letters"),
        (["cluster", "status"], 3, "unreachable"),
        (["cluster", "down"], 3, "unreachable"),
    ],
)
def test_cluster_cli_bad_input_and_no_engine(args: list[str], code: int, message: str) -> None:
    result = CliRunner().invoke(app, args, env=NO_ENGINE)
    assert result.exit_code == code, result.output
    assert message in result.output
