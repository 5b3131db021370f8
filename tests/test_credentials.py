"""`fsl-opt credentials`: a CA, the SuperLink's certificate and SuperNode keys in the
formats Flower reads, private keys private, nothing overwritten."""

import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import (
    load_pem_private_key,
    load_ssh_private_key,
    load_ssh_public_key,
)

from fsl_opt.cli import main


def test_credentials_chain_names_and_keys(tmp_path, capsys):
    out = tmp_path / "creds"
    assert (
        main(
            [
                "credentials",
                "--out",
                str(out),
                "--host",
                "10.0.0.5",
                "--host",
                "lab",
                "--nodes",
                "2",
            ]
        )
        == 0
    )
    ca = x509.load_pem_x509_certificate((out / "ca.crt").read_bytes())
    link = x509.load_pem_x509_certificate((out / "superlink.crt").read_bytes())
    link.verify_directly_issued_by(ca)  # raises if the CA did not sign it
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    san = link.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["10.0.0.5"]
    assert san.get_values_for_type(x509.DNSName) == ["lab"]
    key = load_pem_private_key((out / "superlink.key").read_bytes(), None)
    assert key.public_key().public_numbers() == link.public_key().public_numbers()
    for i in range(2):
        private = load_ssh_private_key((out / f"node-{i}.key").read_bytes(), None)
        public = load_ssh_public_key((out / f"node-{i}.pub").read_bytes())
        assert isinstance(private, ec.EllipticCurvePrivateKey)
        assert private.curve.name == "secp384r1"
        assert private.public_key().public_numbers() == public.public_numbers()
    for name in ("ca.key", "superlink.key", "node-0.key", "node-1.key"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o600, name
    before = (out / "ca.crt").read_bytes()
    capsys.readouterr()
    assert main(["credentials", "--out", str(out), "--host", "x", "--nodes", "1"]) == 2
    assert "never overwritten" in capsys.readouterr().err
    assert (out / "ca.crt").read_bytes() == before
    with pytest.raises(SystemExit):
        main(["credentials", "--out", str(tmp_path / "none"), "--nodes", "1"])  # no --host
    assert main(["credentials", "--out", str(tmp_path / "n0"), "--host", "x", "--nodes", "0"]) == 2
    assert not (tmp_path / "n0").exists()
