"""Run inside a container hardened like par-runner: the real Jail must apply every control it requires.

    probe_jail.py [--proxy-socket PATH] [--project NAME] [--read-path DIR] -- ARGV...
Prints the JailResult as JSON plus what is left in /tmp afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from sandbox.config import JailConfig
from sandbox.jail import Jail

ap = argparse.ArgumentParser()
ap.add_argument("--proxy-socket", default="/tmp/none.sock")
ap.add_argument("--project", default="deploytest")
ap.add_argument("--read-path", action="append", default=[])
ap.add_argument("argv", nargs=argparse.REMAINDER)
ns = ap.parse_args()
argv = ns.argv[1:] if ns.argv[:1] == ["--"] else ns.argv
jail = Jail(JailConfig(user="nobody", group="nogroup"), proxy_socket=Path(ns.proxy_socket), project=ns.project,
            read_paths=[Path(p) for p in ns.read_path])
result = jail.run(argv, timeout_s=60)
doc = result.to_dict()
doc["tmp_left"] = os.listdir("/tmp")
print(json.dumps(doc))
