"""What binding an audit to its bytes costs: the private snapshot against hashing alone.

    python bench/bench_snapshot.py                 # a 512 MiB checkpoint in a temp folder
    python bench/bench_snapshot.py --mib 2048 --dir /srv/models/.bench   # on the registry's filesystem

Discovery already reads every byte once (the digest). An audit then snapshots the checkpoint
(auditd/runner/content.py): a reflink + re-hash where the filesystem supports it, else a copy that
hashes while it writes, plus one more hash of the registry copy after the audit. This prints, side
by side in one run: the digest alone, the snapshot, and the post-audit re-hash, with the snapshot's
ratio to the digest and the filesystem's reflink support. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from auditd.registry.digest import content_digest
from auditd.runner.content import BoundContent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=512, help="checkpoint size in MiB (one weights file + a config)")
    ap.add_argument("--dir", type=Path, default=None, help="folder to work in (default: a temp folder)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        ck = Path(tmp) / "ck"
        ck.mkdir()
        (ck / "config.json").write_text("{}")
        with open(ck / "model.safetensors", "wb") as f:
            for _ in range(args.mib):
                f.write(os.urandom(1 << 20))
        content_digest(ck)  # warm the page cache, as discovery leaves it
        t0 = time.perf_counter()
        digest = content_digest(ck)
        t1 = time.perf_counter()
        bound = BoundContent(ck, ck, digest, Path(tmp) / "snaps", audit_id=1)
        t2 = time.perf_counter()
        bound.verify_after()
        t3 = time.perf_counter()
        reflinked = bound.reflinked
        bound.close()
    hash_s, snap_s, verify_s = t1 - t0, t2 - t1, t3 - t2
    print(f"checkpoint {args.mib} MiB")
    print(f"digest alone        {hash_s:7.2f} s  ({args.mib / hash_s:6.0f} MiB/s)")
    print(f"snapshot (copy+hash){snap_s:7.2f} s  ({args.mib / snap_s:6.0f} MiB/s)  = {snap_s / hash_s:.2f}x the digest")
    print(f"re-verify after     {verify_s:7.2f} s")
    print(f"reflink used        {reflinked}")


if __name__ == "__main__":
    main()
