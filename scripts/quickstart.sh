#!/usr/bin/env bash
# The README quickstart ("## Quickstart"), step by step, exactly as a newcomer types it.
# CI runs it through cli/tests/quickstart.rs, which also checks that every command line of
# the README's steps appears here, so the two cannot drift apart.
#
# Needs gwmon, gwmon-gateway and nvme-gw on PATH (the README's first step puts them there)
# and runs in the current directory (the README's scratch directory), where it makes the
# certificates everything uses for mutual TLS. Everything listens on
# the embedded monitor's default address, 127.0.0.1:7400, unless GWMON_LISTEN and
# GWMON_MONITORS say otherwise (the test points them at a free port).
#
# Where a person reads `nvme-gw show` and looks again a moment later, the script reruns it
# until the expected state shows, for at most a minute.
set -euo pipefail

# People read tables; the script reads what they read (piped output would default to JSON).
export GWMON_FORMAT=plain

started=()
cleanup() {
  # Only the processes this script started, by their ids.
  for pid in "${started[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${started[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
}
trap cleanup EXIT

# until_ok WHAT CODE: rerun the shell code CODE until it succeeds; give up after 60 s.
until_ok() {
  local what=$1 code=$2 deadline=$((SECONDS + 60))
  until eval "$code" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      echo "quickstart: timed out waiting for $what" >&2
      return 1
    fi
    sleep 0.2
  done
}

step() { printf '\n== %s\n' "$*"; }

step "2. Certificates, and the monitor"
nvme-gw certs init
nvme-gw certs issue monitor 1
nvme-gw certs issue admin me
nvme-gw certs issue gateway rbd/grp1/gw1
nvme-gw certs issue gateway rbd/grp1/gw2
export GWMON_TLS_CA="$PWD/gwmon-certs/ca.pem"
export GWMON_TLS_CERT="$PWD/gwmon-certs/admin-me.pem" GWMON_TLS_KEY="$PWD/gwmon-certs/admin-me.key"
gwmon --fencer file --fencer-file-targets "$PWD/{gateway}.json" \
  --tls-cert gwmon-certs/monitor-1.pem --tls-key gwmon-certs/monitor-1.key 2> gwmon.log &
MON=$!
started+=("$MON")
until_ok "the monitor to elect itself leader" 'nvme-gw cluster status | grep -q "^leader 1 "'
nvme-gw cluster status

step "3. Two gateways, each with a target file"
cat > gw1.json <<'EOF'
{
  "subsystems": [
    {
      "nqn": "nqn.2016-06.io.spdk:cnode1",
      "listeners": [{ "address": "127.0.0.1", "port": 4420 }],
      "namespaces": [{ "nsid": 1, "ana_group": 1 }, { "nsid": 2, "ana_group": 2 }]
    }
  ]
}
EOF
sed 's/4420/4421/' gw1.json > gw2.json
gwmon-gateway --id gw1 --pool rbd --group grp1 --adapter file --target gw1.json \
  --tls-cert gwmon-certs/gateway-rbd_grp1_gw1.pem --tls-key gwmon-certs/gateway-rbd_grp1_gw1.key 2> gw1.log &
GW1=$!
started+=("$GW1")
gwmon-gateway --id gw2 --pool rbd --group grp1 --adapter file --target gw2.json \
  --tls-cert gwmon-certs/gateway-rbd_grp1_gw2.pem --tls-key gwmon-certs/gateway-rbd_grp1_gw2.key 2> gw2.log &
GW2=$!
started+=("$GW2")

step "4. Create them in the map and look"
nvme-gw create gw1 rbd grp1
nvme-gw create gw2 rbd grp1
until_ok "both gateways to serve their own ANA group" \
  'nvme-gw show rbd grp1 | grep -Eq "^gw1 .*AVAILABLE .*1:ACTIVE 2:STANDBY$" &&
   nvme-gw show rbd grp1 | grep -Eq "^gw2 .*AVAILABLE .*1:STANDBY 2:ACTIVE$"'
nvme-gw show rbd grp1
nvme-gw listeners rbd grp1

step "5. Stop gw1 and watch gw2 take over its ANA group"
kill $GW1
until_ok "gw2 to serve both ANA groups" \
  'nvme-gw show rbd grp1 | grep -Eq "^gw1 .*UNAVAILABLE " &&
   nvme-gw show rbd grp1 | grep -Eq "^gw2 .*1:ACTIVE 2:ACTIVE$"'
nvme-gw show rbd grp1
until_ok "the file fencer to record gw1's fence" 'grep -q "\"fenced_epoch\"" gw1.json'
nvme-gw health
nvme-gw blocklist ls
grep -A 4 '"ana"' gw2.json
grep -A 4 '"ana"' gw1.json

step "6. Start gw1 again: failback"
gwmon-gateway --id gw1 --pool rbd --group grp1 --adapter file --target gw1.json \
  --tls-cert gwmon-certs/gateway-rbd_grp1_gw1.pem --tls-key gwmon-certs/gateway-rbd_grp1_gw1.key 2> gw1.log &
GW1=$!
started+=("$GW1")
until_ok "gw1 to take its ANA group back" \
  'nvme-gw show rbd grp1 | grep -Eq "^gw1 .*AVAILABLE .*1:ACTIVE 2:STANDBY$" &&
   nvme-gw show rbd grp1 | grep -Eq "^gw2 .*1:STANDBY 2:ACTIVE$"'
nvme-gw show rbd grp1

step "7. Stop everything"
kill $GW1 $GW2 $MON
wait $GW1 $GW2 $MON || true
started=()
echo "quickstart: ok"
