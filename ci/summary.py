#!/usr/bin/env python3
"""Adds up what ci/test ran: cargo's "test result" lines, unittest's closing lines, failed steps
and the skips the tests recorded (a skipped Rust test returns early, so cargo counts it as
passed: it is moved from passed to skipped here). Exits 1 if anything failed."""
import pathlib
import re
import sys

out = pathlib.Path(sys.argv[1])
passed = failed = skipped = ignored = 0
for log in sorted(out.glob("*.log")):
    text = log.read_text(errors="replace")
    for m in re.finditer(r"^test result: \w+\. (\d+) passed; (\d+) failed; (\d+) ignored", text, re.M):
        passed += int(m.group(1))
        failed += int(m.group(2))
        ignored += int(m.group(3))
    ran = re.search(r"^Ran (\d+) tests?", text, re.M)
    if ran:
        total = int(ran.group(1))
        counts = {k: 0 for k in ("failures", "errors", "skipped")}
        status = re.search(r"^(OK|FAILED)(?: \((.*)\))?$", text, re.M)
        if status and status.group(2):
            for part in status.group(2).split(","):
                key, _, value = part.strip().partition("=")
                if key in counts:
                    counts[key] = int(value)
        bad = counts["failures"] + counts["errors"]
        if not status:
            bad = max(bad, 1)
        failed += bad
        skipped += counts["skipped"]
        passed += total - bad - counts["skipped"]

# Only Rust tests write to the skip log (CAIRN_SKIP_LOG); unittest counts its own skips.
skips = [line for line in (out / "skips").read_text().splitlines() if line.strip()]
passed -= len(skips)
skipped += len(skips)

steps = (out / "results").read_text().splitlines()
failed_steps = [s.split()[0] for s in steps if s.endswith("FAILED")]
failed += len(failed_steps)

for s in failed_steps:
    print(f"failed step: {s}")
for s in skips:
    print(f"skipped: {s}")
if ignored:
    # #[ignore]d tests are the benchmarks; ci/bench runs them.
    print(f"skipped: {ignored} benchmark test(s) marked #[ignore]: ci/bench runs them")
    skipped += ignored
e2e = out / "e2e.log"
if e2e.exists():
    for m in re.finditer(r"^(\S+) \((.*?)\).*\.\.\. skipped '(.*)'$", e2e.read_text(), re.M):
        print(f"skipped: e2e {m.group(1)}: {m.group(3)}")
print(f"{passed} passed, {failed} failed, {skipped} skipped")
sys.exit(1 if failed else 0)
