#!/usr/bin/env bash
# The native layer under AddressSanitizer (docs/testing.md, "AddressSanitizer").
#
#   scripts/asan-test.sh [TEST FILE ...]      (npm run test:asan -- [TEST FILE ...])
#
# 1. Builds the addon with -fsanitize=address -fno-omit-frame-pointer
#    (binding.gyp's fscrypt_local_asan=1) in build/asan/, a node-gyp
#    directory of its own: build/Release stays the production addon.
# 2. Proves the setup sees a memory error: a canary addon
#    (scripts/asan-canary.c, one deliberate heap-buffer-overflow), built with
#    the same flags and loaded into node the same way, must make ASan report
#    and abort, in a bare node and in a test file under tap. A run that
#    cannot fail proves nothing.
# 3. Proves lib/kernel really loads the ASan build (FSCRYPT_LOCAL_ADDON).
# 4. Runs the tests that drive the native code (default: the kernel tests and
#    the volume and key tests that issue ioctls) with the ASan runtime
#    preloaded into node, which is not instrumented itself:
#    LD_PRELOAD=$(g++ -print-file-name=libasan.so), and detect_leaks=0
#    because node's own allocations, never freed at exit, would all be
#    reported as leaks. Any ASan report aborts the test file: tap fails it.
#
# Needs what `npm ci` needs (g++, make, python3) plus the sanitizer runtime
# that Debian's g++ brings (libasan). Prints "ASan: N passed, N failed" last;
# exits non-zero on any failure.
set -uo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

# When not started by npm (which puts its node-gyp on PATH), use npm's own.
if ! command -v node-gyp >/dev/null 2>&1; then
  npm_cli=$(readlink -f "$(command -v npm)")
  gyp_js="$(dirname "$npm_cli")/../node_modules/node-gyp/bin/node-gyp.js"
  if [ ! -f "$gyp_js" ]; then echo "asan: node-gyp not found (npm's bundled node-gyp is expected beside $npm_cli)"; echo "ASan: 0 passed, 1 failed"; exit 1; fi
  node_gyp() { node "$gyp_js" "$@"; }
else
  node_gyp() { command node-gyp "$@"; }
fi

# The Node headers npm's own builds use (npm config nodedir, e.g. a distro's
# /usr), when not started by npm: node-gyp would otherwise download them.
if [ -z "${npm_config_nodedir:-}" ]; then
  configured=$(npm config get nodedir 2>/dev/null)
  if [ -n "$configured" ] && [ "$configured" != undefined ] && [ "$configured" != null ]; then export npm_config_nodedir="$configured"; fi
fi

libasan=$(g++ -print-file-name=libasan.so)
if [ ! -e "$libasan" ] || [ "$libasan" = libasan.so ]; then
  echo "asan: g++ has no AddressSanitizer runtime (libasan.so): apt-get install g++ (it depends on libasan)"
  echo "ASan: 0 passed, 1 failed"
  exit 1
fi
# halt_on_error is ASan's default; abort_on_error makes the exit a signal,
# which tap reports with the file, instead of a plain exit code 1.
asan_options="detect_leaks=0:abort_on_error=1:print_summary=1"

# 1. The ASan build, from the same binding.gyp and native/ sources.
stage="$repo/build/asan"
rm -rf "$stage"
mkdir -p "$stage"
cp binding.gyp "$stage/binding.gyp"
ln -s "$repo/native" "$stage/native"
ln -s "$repo/node_modules" "$stage/node_modules"
echo "== asan: building the addon with -fsanitize=address in $stage"
if ! (cd "$stage" && node_gyp rebuild -- -Dfscrypt_local_asan=1 >build.log 2>&1); then
  cat "$stage/build.log"
  echo "asan: the ASan build failed"
  echo "ASan: 0 passed, 1 failed"
  exit 1
fi
addon="$stage/build/Release/fscrypt_local.node"
if ! readelf -d "$addon" | grep -q 'NEEDED.*libasan'; then
  echo "asan: $addon is not linked against libasan: the build flags did not apply"
  echo "ASan: 0 passed, 1 failed"
  exit 1
fi

checks_passed=0
checks_failed=0
check() { if [ "$1" = ok ]; then checks_passed=$((checks_passed + 1)); echo "ok - $2"; else checks_failed=$((checks_failed + 1)); echo "not ok - $2"; fi; }

# 2. The canary: the same flags, the same node, the same preload.
nodedir=$(sed -nE 's/^ *"nodedir": "([^"]+)".*/\1/p' "$stage/build/config.gypi" | head -n 1)
canary="$stage/asan-canary.node"
canary_caught=0
if g++ -x c -shared -fPIC -fsanitize=address -fno-omit-frame-pointer -g -U_FORTIFY_SOURCE \
  -I"$nodedir/include/node" scripts/asan-canary.c -o "$canary" 2>"$stage/canary.log"; then
  canary_out=$(LD_PRELOAD="$libasan" ASAN_OPTIONS="$asan_options" node -e "require(process.argv[1]).overflow(); console.log('canary: not caught')" "$canary" 2>&1)
  canary_status=$?
  if [ "$canary_status" -ne 0 ] && grep -q 'ERROR: AddressSanitizer: heap-buffer-overflow' <<<"$canary_out" && ! grep -q 'not caught' <<<"$canary_out"; then
    check ok "the canary's heap-buffer-overflow is caught (node exited with $canary_status)"
    canary_caught=1
  else
    echo "$canary_out" | head -n 20
    check failed "the canary's heap-buffer-overflow is caught"
  fi
else
  cat "$stage/canary.log"
  check failed "the canary builds"
fi

# ... and under tap as the tests run: a test file whose addon overflows fails
# with the report, so a memory error in a test below cannot pass unseen.
if [ "$canary_caught" -eq 1 ]; then
  cat >"$stage/asan-canary.test.mjs" <<'EOF_CANARY'
import { createRequire } from 'node:module';
import t from 'tap';
t.test('an out-of-bounds write in an addon', async (t) => {
  createRequire(import.meta.url)(process.env.FSCRYPT_LOCAL_ASAN_CANARY).overflow();
  t.pass('not caught');
});
EOF_CANARY
  canary_tap=$(FSCRYPT_LOCAL_FIGURES='' FSCRYPT_LOCAL_ASAN_CANARY="$canary" LD_PRELOAD="$libasan" ASAN_OPTIONS="$asan_options" \
    ./node_modules/.bin/tap --disable-coverage "$stage/asan-canary.test.mjs" 2>&1)
  if grep -q 'ERROR: AddressSanitizer: heap-buffer-overflow' <<<"$canary_tap" && grep -qE '^# \{ total: 1, pass: 0, fail: 1 \}' <<<"$canary_tap"; then
    check ok "under tap, the canary's test file fails with the report"
  else
    echo "$canary_tap" | tail -n 20
    check failed "under tap, the canary's test file fails with the report"
  fi
fi

# 3. lib/kernel loads the ASan build when told to, and not the production one.
loader=./node_modules/@tapjs/typescript/dist/esm/import.mjs
maps=$(FSCRYPT_LOCAL_ADDON="$addon" LD_PRELOAD="$libasan" ASAN_OPTIONS="$asan_options" node --import="$loader" -e "
  const { native } = await import('./lib/kernel/binding.ts');
  native();
  const { readFileSync } = await import('node:fs');
  console.log(readFileSync('/proc/self/maps', 'utf8'));" --input-type=module 2>&1)
if grep -qF "$addon" <<<"$maps" && ! grep -qF "$repo/build/Release/fscrypt_local.node" <<<"$maps"; then
  check ok "lib/kernel loads $addon (FSCRYPT_LOCAL_ADDON)"
else
  echo "$maps" | grep -E 'fscrypt_local|Error' | head -n 5
  check failed "lib/kernel loads $addon (FSCRYPT_LOCAL_ADDON)"
fi

# 4. The tests. Without arguments: the kernel tests (every ioctl wrapper,
# every error path, the argument checks), and the key and volume tests that
# drive the addon through whole hooks (every hook of the lifecycle) at a
# cost of a minute or two. Any other test file can be named instead.
if [ "$#" -gt 0 ]; then
  tests=("$@")
else
  tests=(test/kernel/*.test.ts test/keys/slot.test.ts test/volume/state.test.ts test/volume/lifecycle.test.ts)
fi
echo "== asan: ${#tests[@]} test files with $libasan preloaded"
output=$(mktemp)
start=$(date +%s)
# No coverage (the full run's business), and twice tap's per-file timeout:
# the sanitizer's malloc slows every allocation of node, not only the addon's.
# The tests' own campaign figures are the full run's to record, not a second
# copy of them from this one: this script records its own below.
FSCRYPT_LOCAL_FIGURES='' FSCRYPT_LOCAL_ADDON="$addon" LD_PRELOAD="$libasan" ASAN_OPTIONS="$asan_options" \
  ./node_modules/.bin/tap --disable-coverage --timeout 600 "${tests[@]}" 2>&1 | tee "$output"
tap_status=${PIPESTATUS[0]}
echo "asan: the tests took $(( $(date +%s) - start )) s"
if grep -q 'ERROR: AddressSanitizer' "$output"; then
  echo "asan: AddressSanitizer reported:"
  grep -A 30 'ERROR: AddressSanitizer' "$output" | head -n 60
  checks_failed=$((checks_failed + 1))
fi
# tap's closing summary, read as .ci/run reads it; strict as there: a skip
# or todo proved nothing.
summary=$(grep -E '^# \{ total: [0-9]+' "$output" | tail -n 1)
rm -f "$output"
count() { local n; n=$(sed -nE "s/.*[{ ]$1: ([0-9]+).*/\\1/p" <<<"$summary"); echo "${n:-0}"; }
passed=$(( $(count pass) + checks_passed ))
failed=$(( $(count fail) + $(count skip) + $(count todo) + checks_failed ))
# A non-zero exit with no failed point (a crashed file, an ASan abort tap did not count) is still a failure.
if [ "$tap_status" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi
# The campaign's figures (test/fixtures/campaign/campaign.ts), when asked for.
if [ -n "${FSCRYPT_LOCAL_FIGURES:-}" ]; then
  figure() { printf '{"area":"asan","name":"%s","value":%s,"command":"scripts/asan-test.sh","node":"%s"}\n' "$1" "$2" "$(node --version)" >>"$FSCRYPT_LOCAL_FIGURES"; }
  figure "test files run under AddressSanitizer" "${#tests[@]}"
  figure "test points passed under AddressSanitizer" "$(count pass)"
  figure "deliberate memory errors caught (canary)" "$canary_caught"
fi
echo "ASan: ${passed} passed, ${failed} failed"
[ "$failed" -eq 0 ]
