"""kill -9 during a burst of appends loses no record that append() reported durable."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sandbox.audit import AuditLog, verify_log
from sandbox.config import AuditConfig
from sandbox.keys import save_key_pair

CHILD = textwrap.dedent(
    """
    import sys, threading
    from pathlib import Path
    from sandbox.audit import AuditLog
    from sandbox.config import AuditConfig
    from sandbox.keys import load_ed25519_private_key
    cfg = AuditConfig(dir=Path(sys.argv[1]), segment_max_bytes=8192, checkpoint_every_records=40,
                      checkpoint_every_s=0)
    log = AuditLog.open(cfg, signer=load_ed25519_private_key(Path(sys.argv[2])))
    round_ = sys.argv[3]
    out = threading.Lock()
    def work(t):
        for i in range(100000):
            token = f"{round_}-{t}-{i}"
            seq = log.append("proxy_allowed", {"token": token, "path": "/x" * (i % 7)}, durable=(i % 5 != 4))
            if i % 5 != 4:
                with out:
                    sys.stdout.write(f"{seq} {token}\\n")
                    sys.stdout.flush()
    for t in range(4):
        threading.Thread(target=work, args=(t,), daemon=True).start()
    threading.Event().wait()
    """
)


def test_kill_9_loses_no_durable_record(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    save_key_pair(key, tmp_path / "k.pem", tmp_path / "k.pub")
    audit_dir = tmp_path / "audit"
    rng = random.Random(1234)
    promised: dict[int, str] = {}
    for round_ in range(6):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(audit_dir), str(tmp_path / "k.pem"), str(round_)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=Path(__file__).resolve().parents[2],
        )
        assert child.stdout is not None
        printed: list[bytes] = []
        wanted = rng.randint(20, 600)  # kill at a random moment of the burst
        deadline = time.monotonic() + 30
        while len(printed) < wanted and time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                break
            printed.append(line)
        child.send_signal(signal.SIGKILL)
        rest, err = child.communicate(timeout=30)
        printed.extend(rest.splitlines(keepends=True))
        assert printed, err.decode()[-2000:]
        for raw in printed:
            if raw.endswith(b"\n"):  # a complete line: append() had returned before the print
                seq_s, token = raw.decode().split()
                promised[int(seq_s)] = token
        log = AuditLog.open(AuditConfig(dir=audit_dir, checkpoint_every_s=0), signer=key)
        recs = {r.seq: r for r in log.records()}
        log.close()
        for seq, token in promised.items():
            assert seq in recs, f"durable seq {seq} lost after kill -9 in round {round_}"
            assert recs[seq].data["token"] == token
    result = verify_log([audit_dir], public_key=key.public_key())
    assert result.ok, result
    assert len(promised) > 50
