#!/usr/bin/env bash
# The fault suite, round after round, for as long as you give it: every test
# that injects a fault (kill -9, a cut or half-open link to either broker, a
# broker restart, scripted fake brokers, a full disk, hostile wasm), against the
# embedded broker and Mosquitto in turn. CI runs each of these once; this is
# the soak mode RELIABILITY.md speaks of, run by hand.
#
#   tests/soak.sh [MINUTES]     default 60
#
# One line per round (pass or FAIL, seconds, and what the tests counted), a
# summary at the end. A failed round's whole output is kept under $SOAK_DIR
# (default target/soak). Exits 1 if any round failed.
set -euo pipefail

minutes="${1:-60}"
case "$minutes" in
  ''|*[!0-9]*) echo "usage: tests/soak.sh [MINUTES]   (whole minutes, default 60)" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."
out="${SOAK_DIR:-target/soak}"
mkdir -p "$out"
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || {
  echo "soak: needs mosquitto (apt-get install mosquitto)" >&2; exit 2; }

# Substrings of the fault tests' names (libtest runs every test matching any).
faults=(
  kill_9 qos1_readings the_sender_outlives while_the_upstream_link when_its_own_records_fill
  functions_are_told a_broker_that_lost after_the_broker_restarts records_pile_up hostile_functions
  publishes_in_flight
)

echo "soak: building the tests"
cargo test -q --test gateway --test hostile --test durability --test live --test upstream --no-run

end=$(( $(date +%s) + minutes * 60 ))
round=0 failed=0
while [ "$(date +%s)" -lt "$end" ]; do
  round=$((round + 1))
  broker=embedded
  [ $((round % 2)) -eq 0 ] && broker=mosquitto
  log="$out/round-$round.log"
  start=$(date +%s)
  if EDGEFN_TEST_BROKER="$broker" cargo test -q --test gateway --test hostile --test durability --test live --test upstream -- --nocapture "${faults[@]}" >"$log" 2>&1; then
    verdict=pass
  else
    verdict=FAIL failed=$((failed + 1))
  fi
  # What the tests counted: records accepted and delivered, readings handled twice.
  counted=$(grep -hoE '(accepted [0-9]+ records|[0-9]+ readings|[0-9]+ records of).*' "$log" | sed 's/$/; /' | tr -d '\n' || true)
  echo "round $round ($broker): $verdict in $(( $(date +%s) - start )) s; ${counted:-no counts printed}"
  [ "$verdict" = pass ] && rm -f "$log"
done
where=""
[ "$failed" -gt 0 ] && where=" (their logs: $out)"
echo "soak: $round rounds in $minutes min, $failed failed$where"
[ "$failed" -eq 0 ]
