"""Test helpers for NTS: a throwaway CA and server certificate, free TCP ports, and one
NTS-authenticated NTP exchange over UDP (loopback)."""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from ntpd_py.core.nts_cookies import CookieJar
from ntpd_py.core.nts_extensions import AesSivCmac256, build_client_request, open_server_reply
from ntpd_py.core.packet import client_request


@dataclass(frozen=True)
class Pki:
    ca_cert: Path
    server_cert: Path  # the server certificate then the CA's (a chain)
    server_key: Path
    chain_pem: bytes
    key_pem: bytes


def make_pki(directory: Path, names: tuple[str, ...] = ("localhost",),
             addresses: tuple[str, ...] = ("127.0.0.1",)) -> Pki:
    """A CA and a server certificate for ``names`` and ``addresses``, written as PEM files."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ntpd-py test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    alt: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    alt += [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    ca_pem = ca.public_bytes(pem)
    chain = cert.public_bytes(pem) + ca_pem
    key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    directory.mkdir(parents=True, exist_ok=True)
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    for path, data in zip(paths, (ca_pem, chain, key_pem), strict=True):
        path.write_bytes(data)
        path.chmod(0o644)  # chronyd reads them after dropping root (a throwaway test key)
    return Pki(*paths, chain, key_pem)


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Exchange:
    request: bytes
    reply: bytes
    uid: bytes
    transmit: int


def nts_exchange(jar: CookieJar, port: int, host: str = "127.0.0.1",
                 timeout_s: float = 2.0) -> Exchange:
    """Send one NTS request with the jar's next cookie; return the raw reply (unverified)."""
    assert jar.keys is not None
    uid = os.urandom(32)
    cookie, placeholders = jar.take(uid)
    transmit = int.from_bytes(os.urandom(8), "big")
    request = build_client_request(client_request(transmit, 4), uid, cookie, placeholders,
                                   AesSivCmac256(jar.keys.c2s), os.urandom(16))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout_s)
        s.sendto(request, (host, port))
        reply, _ = s.recvfrom(2048)
    return Exchange(request, reply, uid, transmit)


def verify(jar: CookieJar, exchange: Exchange) -> tuple[bytes, ...]:
    """Verify a reply as the client does; keep its cookies; return them."""
    assert jar.keys is not None
    opened = open_server_reply(exchange.reply, exchange.uid, AesSivCmac256(jar.keys.s2c))
    assert opened.packet.origin_ts == exchange.transmit
    assert jar.accept_reply(exchange.uid, opened.cookies)
    return opened.cookies
