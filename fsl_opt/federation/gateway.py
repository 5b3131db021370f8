"""The devices' gateway to a SuperLink: the Fleet API on the lab's address, nothing else.

In flwr 1.41 the SuperLink serves every API on one HTTPS address: the Fleet API the
SuperNodes use (``/v1/fleet/``), and the Control API (``/v1/control/``: register and
unregister node keys, start, stop and list runs) and the Runtime API (``/v1/runtime/``)
that only its owner should reach. Flower's account authentication for the Control API is a
commercial feature, so whoever can reach that address (every device holds ``ca.crt``) could
register a key of their own, unregister a real device, or run their own app on the server.

The remedy is an existing, well-kept reverse proxy, not a home-made one: the SuperLink
listens on the server's loopback only (``--host 127.0.0.1``), where its owner commands it,
and nginx (Debian's package) listens on the lab's address with the SuperLink's certificate
and passes ``/v1/fleet/`` and nothing else through to it, verifying the SuperLink's
certificate against the federation's CA on the way. :func:`write_gateway` writes that
nginx configuration, self-contained (its pid file, logs and buffers in its own folder, so
it runs unprivileged beside anything else): ``nginx -p FOLDER -c nginx.conf``.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

from fsl_opt.errors import ConfigError
from fsl_opt.files import new_file, write_atomic

#: The only path prefix the lab's address passes on: what a SuperNode calls.
FLEET_PREFIX = "/v1/fleet/"
#: The configuration file's name in its folder.
CONF = "nginx.conf"
#: A host name (RFC 1123 labels): what may stand in the configuration besides an address.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")


def _address(text: str, what: str) -> tuple[str, int]:
    """HOST:PORT (an IPv6 host in brackets) checked, as (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ConfigError(f"{what} {text!r}: expected HOST:PORT, e.g. 192.168.1.10:9443")
    bare = host.strip("[]")
    try:
        ip = ipaddress.ip_address(bare)
    except ValueError:
        if not _HOSTNAME.fullmatch(bare):
            raise ConfigError(
                f"{what} {text!r}: {host!r} is neither an address nor a name"
            ) from None
    else:
        if ip.version == 6 and host == bare:
            raise ConfigError(f"{what} {text!r}: write an IPv6 address in brackets, [{bare}]")
    return host, int(port)


def _certificate_names(path: Path) -> set[str]:
    """The addresses and names a certificate's subject alternative names hold."""
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, x509.ExtensionNotFound) as exc:
        raise ConfigError(f"{path}: not a certificate with names ({exc})") from None
    return {str(n) for n in sans.get_values_for_type(x509.IPAddress)} | set(
        sans.get_values_for_type(x509.DNSName)
    )


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def gateway_config(folder: Path, creds: Path, listen: str, superlink: str) -> str:
    """The nginx configuration: ``listen`` (the lab's HOST:PORT) passes the Fleet API to the
    SuperLink at ``superlink`` (its loopback HOST:PORT) over TLS, refuses every other path
    with 403; ``creds`` holds ``fsl-opt credentials``' files (``superlink.crt`` must name
    the lab's host, and ``localhost``, among its ``--host`` values)."""
    lab_host, lab_port = _address(listen, "--listen")
    link_host, link_port = _address(superlink, "--superlink")
    if not _loopback(link_host):
        raise ConfigError(
            f"--superlink {superlink!r}: the SuperLink must listen on the server's loopback "
            "(127.0.0.1 or ::1), where only its owner reaches its Control API"
        )
    missing = [n for n in ("ca.crt", "superlink.crt", "superlink.key") if not (creds / n).is_file()]
    if missing:
        raise ConfigError(
            f"--creds {creds}: no {', '.join(missing)} (write them with fsl-opt credentials)"
        )
    names = _certificate_names(creds / "superlink.crt")
    wanted = {lab_host.strip("[]"), "localhost"}
    if not wanted <= names:
        raise ConfigError(
            f"--creds {creds}: superlink.crt names {', '.join(sorted(names))}, not "
            f"{', '.join(sorted(wanted - names))}: write credentials with --host "
            f"{lab_host.strip('[]')} --host localhost (the gateway checks the SuperLink "
            "behind it by the name localhost)"
        )
    root, c = folder.resolve(), creds.resolve()
    return f"""# The devices' gateway to the SuperLink (written by fsl-opt gateway).
# Start: nginx -p {root} -c {CONF}    Stop: nginx -p {root} -c {CONF} -s quit
# {listen} passes {FLEET_PREFIX} (what a SuperNode calls) to the SuperLink at
# {superlink} and refuses everything else: registering or unregistering keys, starting,
# stopping and listing runs stay with whoever reaches {superlink} (the server's owner).
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log {root}/access.log;
    client_body_temp_path {root}/tmp/body;
    proxy_temp_path {root}/tmp/proxy;
    fastcgi_temp_path {root}/tmp/fastcgi;
    uwsgi_temp_path {root}/tmp/uwsgi;
    scgi_temp_path {root}/tmp/scgi;
    client_max_body_size 0;
    server {{
        listen {lab_host}:{lab_port} ssl;
        ssl_certificate {c}/superlink.crt;
        ssl_certificate_key {c}/superlink.key;
        location {FLEET_PREFIX} {{
            proxy_pass https://{link_host}:{link_port};
            proxy_ssl_trusted_certificate {c}/ca.crt;
            proxy_ssl_verify on;
            proxy_ssl_name localhost;
            proxy_http_version 1.1;
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 3600s;
            proxy_send_timeout 3600s;
        }}
        location / {{
            return 403 "fsl-opt gateway: only the Fleet API ({FLEET_PREFIX}) is served here\\n";
        }}
    }}
}}
"""


def write_gateway(
    folder: str | Path, creds: str | Path, listen: str, superlink: str, overwrite: bool = False
) -> Path:
    """Write ``FOLDER/nginx.conf`` (see :func:`gateway_config`) and its buffer folders;
    the configuration's path. An existing file is replaced only with ``overwrite``."""
    folder = Path(folder)
    text = gateway_config(folder, Path(creds), listen, superlink)
    path = new_file(folder / CONF, overwrite=overwrite)
    (folder / "tmp").mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda tmp: tmp.write_text(text))
    return path
