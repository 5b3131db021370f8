"""Credentials for a Flower deployment over TLS with SuperNode authentication.

``write_credentials`` makes, in a new folder:

- ``ca.crt`` / ``ca.key``: a certificate authority for this federation (keep ``ca.key`` off
  the devices; ``ca.crt`` goes to every SuperNode and to ``flwr``'s connection as its
  ``root-certificates``);
- ``superlink.crt`` / ``superlink.key``: the SuperLink's TLS certificate, signed by the CA,
  valid for the host names and addresses given (what the SuperNodes and ``flwr`` dial);
- ``node-I.key`` / ``node-I.pub``: one SuperNode's authentication key pair (ECDSA on NIST
  P-384, OpenSSH format, as ``flower-supernode --auth-supernode-private-key`` and
  ``flwr supernode register`` read them). Only registered public keys may join a SuperLink
  started with ``--enable-supernode-auth``.

Private keys are written readable by their owner only. Nothing is overwritten: a folder
that holds any of these files is refused.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from pathlib import Path

from fsl_opt.errors import ConfigError

#: How long the certificates are valid.
DAYS = 365


def _names(hosts: list[str]) -> list[object]:
    from cryptography import x509

    out: list[object] = []
    for host in hosts:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            out.append(x509.DNSName(host))
    return out


#: The most SuperNode key pairs one call makes (a lab's devices; each takes a few ms).
MAX_NODES = 10_000


def _write(path: Path, data: bytes, private: bool) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    fd = os.open(path, flags, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def write_credentials(folder: str | Path, hosts: list[str], nodes: int) -> list[Path]:
    """Write a CA, the SuperLink's certificate for ``hosts`` and ``nodes`` SuperNode key
    pairs into ``folder`` (made if missing); the paths written. Raises
    :class:`ConfigError` for no host, fewer than one node, or a file already there."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    if not hosts:
        raise ConfigError("--host: give the SuperLink's address or name (at least one)")
    bad = [h for h in hosts if not 1 <= len(h) <= 64 or h != h.strip()]
    if bad:
        raise ConfigError(
            f"--host {bad[0][:80]!r}: expected an address or name of 1 to 64 characters "
            "(a certificate's limit), without spaces around it"
        )
    if isinstance(nodes, bool) or not isinstance(nodes, int) or not 1 <= nodes <= MAX_NODES:
        raise ConfigError(f"--nodes {nodes!r}: expected an integer >= 1 and <= {MAX_NODES}")
    folder = Path(folder)
    names = ["ca.crt", "ca.key", "superlink.crt", "superlink.key"] + [
        f"node-{i}.{ext}" for i in range(nodes) for ext in ("key", "pub")
    ]
    there = [n for n in names if (folder / n).exists()]
    if there:
        raise ConfigError(
            f"{folder} already holds {', '.join(there)}: credentials are never overwritten; "
            "give another folder"
        )
    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc)
    valid = (now - dt.timedelta(minutes=5), now + dt.timedelta(days=DAYS))

    def pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fsl-opt federation CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid[0])
        .not_valid_after(valid[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA384())
    )
    link_key = ec.generate_private_key(ec.SECP384R1())
    link = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_name)
        .public_key(link_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid[0])
        .not_valid_after(valid[1])
        .add_extension(x509.SubjectAlternativeName(_names(hosts)), critical=False)  # type: ignore[arg-type]
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA384())
    )
    written = []
    for name, data, private in (
        ("ca.crt", ca.public_bytes(serialization.Encoding.PEM), False),
        ("ca.key", pem_key(ca_key), True),
        ("superlink.crt", link.public_bytes(serialization.Encoding.PEM), False),
        ("superlink.key", pem_key(link_key), True),
    ):
        _write(folder / name, data, private)
        written.append(folder / name)
    for i in range(nodes):
        key = ec.generate_private_key(ec.SECP384R1())
        secret = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
        public = key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        _write(folder / f"node-{i}.key", secret, True)
        _write(folder / f"node-{i}.pub", public + b"\n", False)
        written += [folder / f"node-{i}.key", folder / f"node-{i}.pub"]
    return written
