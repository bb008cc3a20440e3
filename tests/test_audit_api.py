"""The ledger through a real server on each database: control-plane changes land in it, the
CLI verifies it on the client side, proofs check offline with only a checkpoint and the public
key, and a record changed behind Corral's back is named. A fresh server per backend, since the
last test damages its ledger on purpose."""

import json
import os
import subprocess
import time

import httpx
import pytest
from sqlalchemy import create_engine, text

from corral.audit.note import Signer
from corral.audit.records import AuditRecord
from corral.identity.tokens import generate_key
from corral.store.database import sync_url
from tests.conftest import BACKENDS, CORRAL, own_database, start_server, stop_server, tamper_with_ledger, unique


@pytest.fixture(scope="module", params=BACKENDS)
def ledger_server(request, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp(f"audit-{request.param}")
    admin_key = generate_key()
    with own_database(request.param, data_dir) as database_url:
        process, url, _ = start_server(data_dir, database_url, {"CORRAL_ADMIN_KEY": admin_key,
                                                                "CORRAL_CHECKPOINT_SECONDS": "0.2"}, demo=True)
        try:
            yield from _serving(url, admin_key, database_url, data_dir)
        finally:
            stop_server(process)


def _serving(url, admin_key, database_url, data_dir):
    def cli(*args, key=None, url_override=None):
        env = {**os.environ, "CORRAL_URL": url_override or url, "CORRAL_KEY": key or admin_key, "COLUMNS": "200"}
        return subprocess.run([CORRAL, *args], env=env, capture_output=True, text=True, timeout=120)

    yield {"url": url, "key": admin_key, "cli": cli, "database_url": database_url, "data_dir": data_dir}


def api(server, method, path, key=None, **kwargs):
    headers = {"Authorization": f"Bearer {key or server['key']}"}
    return httpx.request(method, server["url"] + "/api/v1" + path, headers=headers, timeout=30, **kwargs)


def wait_for_checkpoint(server, size):
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        note = httpx.get(server["url"] + "/api/v1/audit/checkpoint", timeout=10).text
        if note.split("\n")[1:2] and int(note.split("\n")[1]) >= size:
            return note
        time.sleep(0.1)
    raise AssertionError(f"no checkpoint of size {size}")


def test_control_plane_changes_land_in_the_ledger(ledger_server):
    team = unique("audited")
    assert api(ledger_server, "POST", "/teams", json={"name": team}).status_code == 201
    records = api(ledger_server, "GET", "/audit/records", params={"action": "admin.team.*", "limit": 1000}).json()
    mine = [r for r in records["records"] if r["resource"] == f"team:{team}"]
    assert len(mine) == 1 and mine[0]["actor"] == "admin@corral.local" and mine[0]["action"] == "admin.team.create"
    assert len(mine[0]["payload_sha256"]) == 64
    actions = {r["action"] for r in api(ledger_server, "GET", "/audit/records", params={"limit": 1000}).json()["records"]}
    assert {"admin.user.create", "admin.key.create", "policy.activate", "admin.team.create"} <= actions


def test_the_ledger_verifies_on_the_client_and_against_a_kept_checkpoint(ledger_server, tmp_path):
    kept = tmp_path / "kept.txt"
    kept.write_text(wait_for_checkpoint(ledger_server, 1))
    api(ledger_server, "POST", "/teams", json={"name": unique("later")})
    size = api(ledger_server, "GET", "/audit/records", params={"limit": 1}).json()["size"]
    wait_for_checkpoint(ledger_server, size)
    result = ledger_server["cli"]("audit", "verify", "--from-checkpoint", str(kept))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"verified {size} records, root ")
    root = result.stdout.split("root ")[1].strip()
    public_key = httpx.get(ledger_server["url"] + "/api/v1/audit/public-key", timeout=10).json()["key"]
    direct = ledger_server["cli"]("audit", "verify", "--database", ledger_server["database_url"],
                                  "--from-checkpoint", str(kept), url_override="http://127.0.0.1:9")  # no API needed
    assert direct.returncode == 0, direct.stderr
    assert direct.stdout.split("root ")[1].strip() == root and "key pinned in this database" in direct.stderr
    assert public_key in direct.stderr
    forged = Signer.generate("corral/audit").sign("corral/audit\n1\n" + "A" * 43 + "=\n")
    (tmp_path / "forged.txt").write_text(forged)
    result = ledger_server["cli"]("audit", "verify", "--from-checkpoint", str(tmp_path / "forged.txt"))
    assert result.returncode == 1 and "no signature by a known key" in result.stderr


def test_a_proof_checks_offline_with_only_the_checkpoint_and_the_public_key(ledger_server, tmp_path):
    note = wait_for_checkpoint(ledger_server, 5)
    size = int(note.split("\n")[1])
    proof = ledger_server["cli"]("audit", "proof", "3", "--size", str(size))
    assert proof.returncode == 0, proof.stderr
    (tmp_path / "proof.json").write_text(proof.stdout)
    (tmp_path / "checkpoint.txt").write_text(note)
    key = httpx.get(ledger_server["url"] + "/api/v1/audit/public-key", timeout=10).json()["key"]
    offline = ledger_server["cli"]("audit", "check-proof", str(tmp_path / "proof.json"), "--checkpoint",
                                   str(tmp_path / "checkpoint.txt"), "--key", key, url_override="http://127.0.0.1:9")
    assert offline.returncode == 0, offline.stderr
    assert "record 3 " in offline.stdout and f"of size {size}" in offline.stdout
    data = json.loads(proof.stdout)
    data["record"]["resource"] = "something else"
    (tmp_path / "altered.json").write_text(json.dumps(data))
    altered = ledger_server["cli"]("audit", "check-proof", str(tmp_path / "altered.json"), "--checkpoint",
                                   str(tmp_path / "checkpoint.txt"), "--key", key, url_override="http://127.0.0.1:9")
    assert altered.returncode == 1 and "does NOT show record 3" in altered.stderr


def test_an_export_carries_what_each_record_needs_to_be_checked_offline(ledger_server, tmp_path):
    from corral.audit.merkle import leaf_hash, verify_inclusion
    from corral.audit.note import Checkpoint, Verifier, open_note
    from corral.cli.audit import record_from

    wait_for_checkpoint(ledger_server, 5)
    result = ledger_server["cli"]("audit", "export", "--since", "2000-01-01T00:00:00Z")
    assert result.returncode == 0, result.stderr
    header, *lines = [json.loads(line) for line in result.stdout.splitlines()]
    checkpoint = Checkpoint.parse(open_note(header["checkpoint"], [Verifier.parse(header["key"])]))
    assert len(lines) == checkpoint.size == header["size"]
    for line in lines:
        record = record_from(line["record"])
        proof = [bytes.fromhex(node) for node in line["proof"]]
        assert verify_inclusion(leaf_hash(record.leaf()), record.seq, checkpoint.size, proof, checkpoint.root)
    (tmp_path / "line.json").write_text(json.dumps(lines[2]))
    (tmp_path / "checkpoint.txt").write_text(header["checkpoint"])
    offline = ledger_server["cli"]("audit", "check-proof", str(tmp_path / "line.json"), "--checkpoint",
                                   str(tmp_path / "checkpoint.txt"), "--key", header["key"])
    assert offline.returncode == 0 and "record 2 " in offline.stdout


def test_records_are_for_admins_and_auditors_and_the_key_is_public(ledger_server):
    email = f"{unique('dev')}@example.com"
    api(ledger_server, "POST", "/users", json={"email": email, "roles": ["developer"]})
    key = api(ledger_server, "POST", "/keys", json={"user": email}).json()["key"]
    assert api(ledger_server, "GET", "/audit/records", key=key).status_code == 403
    assert api(ledger_server, "GET", "/audit/proof/inclusion", key=key, params={"seq": 0}).status_code == 403
    public = httpx.get(ledger_server["url"] + "/api/v1/audit/public-key", timeout=10).json()
    assert public["origin"] == "corral/audit" and public["key"].startswith("corral/audit+")
    assert not (ledger_server["data_dir"] / "signing.key").stat().st_mode & 0o077


def test_zz_a_record_changed_behind_corrals_back_is_named_by_verify(ledger_server):
    url = ledger_server["database_url"]
    tamper_with_ledger(url, "UPDATE audit_records SET actor = 'nobody@example.com' WHERE seq = 4")
    result = ledger_server["cli"]("audit", "verify")
    assert result.returncode == 1
    assert "record 4 does not match its leaf hash" in result.stderr
    direct = ledger_server["cli"]("audit", "verify", "--database", url)
    assert direct.returncode == 1 and "record 4 does not match its leaf hash" in direct.stderr
    # A careful forger also rewrites the leaf hash: the signed checkpoints still give it away.
    engine = create_engine(sync_url(url))
    try:
        with engine.connect() as connection:
            row = connection.execute(text("SELECT * FROM audit_records WHERE seq = 4")).one()._asdict()
    finally:
        engine.dispose()
    forged = AuditRecord(**{name: value for name, value in row.items() if name != "leaf_hash"}).leaf_hash()
    tamper_with_ledger(url, "UPDATE audit_records SET leaf_hash = :h WHERE seq = 4", h=forged.hex())
    for result in (ledger_server["cli"]("audit", "verify"), ledger_server["cli"]("audit", "verify", "--database", url)):
        assert result.returncode == 1
        assert "does not match the records: a record between 0 and" in result.stderr


def test_verify_from_a_database_it_cannot_read_says_why_without_the_password(ledger_server):
    result = ledger_server["cli"]("audit", "verify", "--database",
                                  "postgresql://corral:s3cret-pw@127.0.0.1:9/corral")
    assert result.returncode != 0 and "cannot read the ledger from --database" in result.stderr
    assert "s3cret-pw" not in result.stderr + result.stdout and "Traceback" not in result.stderr
    result = ledger_server["cli"]("audit", "verify", "--database", "mysql://x")
    assert result.returncode != 0 and "unsupported database" in result.stderr


def test_a_replica_with_another_signing_key_is_refused(fresh_database, tmp_path):
    process, _, _ = start_server(tmp_path / "first", fresh_database, {})
    stop_server(process)
    with pytest.raises(RuntimeError, match=r"this database's audit log is signed by corral/audit\+"):
        start_server(tmp_path / "second", fresh_database, {})  # a data dir with a key of its own
