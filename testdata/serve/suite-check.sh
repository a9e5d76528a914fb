#!/usr/bin/env bash
# Runs the tests of llama-server's own suite that kvtrim serve passes
# (suite-passing.txt beside this script: those that pass on llama-server
# 0.5.0 and on kvtrim serve, recorded from a full run of both, see
# docs/SERVE.md) against kvtrim serve, and fails if any of them fails, so
# that none regresses. Uses ../shared/server-suite's harness.
#
#   testdata/serve/suite-check.sh KVTRIM LIBDIR TESTS
#
# KVTRIM is a kvtrim binary, LIBDIR its libllama folder ("": the one it
# finds itself, as kvtrim lib shows), TESTS the suite
# (tools/server/tests of the pinned llama.cpp source, native/llama-source.sh).
# Needs Debian's python3-pytest, python3-requests, python3-aiohttp and
# python3-numpy.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
kvtrim=${1:?usage: suite-check.sh KVTRIM LIBDIR TESTS}
lib=${2?usage: suite-check.sh KVTRIM LIBDIR TESTS}
tests=${3:?usage: suite-check.sh KVTRIM LIBDIR TESTS}
suite="$here/../../../shared/server-suite"
[ -x "$suite/run.sh" ] || { echo "suite-check: $suite/run.sh not found (../shared beside the checkout)" >&2; exit 2; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
mapfile -t ids < "$here/suite-passing.txt"
LLAMA_TESTS="$tests" OUT="$out" PORT="${PORT:-28190}" HARNESS_KVTRIM="$kvtrim" HARNESS_KVTRIM_LIB="$lib" \
  "$suite/run.sh" kvtrim "${ids[@]}"
/usr/bin/python3 - "$out/kvtrim.xml" "$here/suite-passing.txt" <<'PY'
import sys, xml.etree.ElementTree as ET
want = [l.strip() for l in open(sys.argv[2]) if l.strip()]
got = {}
for tc in ET.parse(sys.argv[1]).getroot().iter("testcase"):
    failed = [c for c in tc if c.tag in ("failure", "error", "skipped")]
    got[tc.get("file") + "::" + tc.get("name")] = (failed[0].get("message") or failed[0].tag).splitlines()[0] if failed else None
bad = [(t, got.get(t, "not run")) for t in want if got.get(t, "not run") is not None]
for t, why in bad:
    print("FAIL", t, "-", why[:200])
print("llama-server suite on kvtrim serve: %d of %d recorded passes still pass" % (len(want) - len(bad), len(want)))
sys.exit(1 if bad else 0)
PY
