"""Drive the real urlgrabber parent (PyPI urlgrabber 4.1.0) through a plan of downloads,
the way yum does: every file queued with urlgrab(async_=...) through a MirrorGroup, then
parallel_wait(), which spawns $URLGRABBER_EXT_DOWN helpers. Prints one canonical JSON
report of what the parent saw, so that two runs (stock helper, fetchmux) can be compared.

usage: ug_drive.py PLAN.json OUT_DIR
PLAN: {"mirrors": [base URLs], "files": [{"name", "path", "sha256", "progress",
       "range": [a, b|null] | null, "reget": bool, "throttle": int | null}]}
"""

import hashlib
import json
import os
import sys

from urlgrabber.grabber import URLGrabber, URLGrabError, parallel_wait
from urlgrabber.mirror import MirrorGroup
from urlgrabber.progress import MultiFileHelper, MultiFileMeter

plan = json.load(open(sys.argv[1]))
out_dir = sys.argv[2]
report = {}
# Each mirror failure the parent saw, per file: mirror index, errno, code, message.
attempts = {}
# Raw progress amounts per file, as the helper reported them.
progress = {}


class RecordingHelper(MultiFileHelper):
    def update(self, amount_read, now=None):
        progress.setdefault(self.text, []).append(amount_read)
        MultiFileHelper.update(self, amount_read, now)


class RecordingMeter(MultiFileMeter):
    # TextMultiFileMeter crashes in 4.1.0 before a rate is known (the spec's A.5 caveat).
    helperclass = RecordingHelper


def text(message):
    return message.decode("utf-8", "replace") if isinstance(message, bytes) else str(message)


def mirror_failed(obj):
    """MirrorGroup failure_callback: sees the URLGrabError of every failed attempt."""
    e = obj.exception
    key = obj.mirror.decode() if isinstance(obj.mirror, bytes) else obj.mirror
    mirror = plan["mirrors"].index(key)
    attempts.setdefault(obj.text, []).append(
        [mirror, e.errno, getattr(e, "code", 0) or 0, text(e.strerror or e.args[-1])]
    )
    return {}


def check(obj, name, sha256):
    """checkfunc: the file must hash as the plan says (yum's verifyPkg does this)."""
    with open(obj.filename, "rb") as f:
        if hashlib.sha256(f.read()).hexdigest() != sha256:
            raise URLGrabError(-1, "checksum mismatch for %s" % name)
    report[name] = {"outcome": "ok"}


def failed(obj, name):
    e = obj.exception
    report[name] = {"outcome": "failfunc", "errno": e.errno, "code": getattr(e, "code", 0) or 0}


# Mirror URLs as bytes: urlgrabber 4.1.0's speed estimate splits them on b'@'.
mirrors = [{"mirror": m.encode()} for m in plan["mirrors"]]
mg = MirrorGroup(URLGrabber(), mirrors, failure_callback=mirror_failed)
meter = RecordingMeter(threaded=False)
for f in plan["files"]:
    name = f["name"]
    dest = os.path.join(out_dir, name)
    kw = dict(
        async_=(mirrors[1]["mirror"], None),
        checkfunc=(check, (name, f["sha256"]), {}),
        failfunc=(failed, (name,), {}),
        timeout=20.5,
        size=f.get("size") or 0,
        text=name,
    )
    if f.get("progress"):
        kw.update(progress_obj=meter, multi_progress_obj=meter)
    if f.get("range"):
        kw["range"] = tuple(f["range"])
    if f.get("reget"):
        kw["reget"] = "simple"
    if f.get("throttle"):
        kw["throttle"] = f["throttle"]
    mg.urlgrab(f["path"], dest, **kw)
parallel_wait()

# Canonical: per file its outcome, the failures the parent saw on the live mirror (the
# dead one's are summarised: which errno/code pairs it gave), and what progress looked like.
dead = set()
for name in sorted(report):
    live = []
    for mirror, errno, code, message in attempts.get(name, []):
        if mirror == 0:
            dead.add((errno, code))
        else:
            live.append([errno, code, message if code >= 400 else ""])
    report[name]["live_failures"] = live
    amounts = progress.get(name, [])
    report[name]["progress_monotonic"] = amounts == sorted(amounts)
    report[name]["progress_lines"] = len(amounts) > 0
json.dump({"files": report, "dead_mirror": sorted(dead)}, sys.stdout, sort_keys=True, indent=1)
