#!/bin/bash
# Puts each defect of defects.py back into a scratch copy of the repository,
# one at a time, and runs TestStateMachine at its `make test` budget (fixed
# seed, every fault kind unless CARBON_SM_FAULTS says otherwise) there;
# prints CAUGHT (with the first violation) or MISSED for each.
#   tools/defects/run.sh                 # every defect
#   tools/defects/run.sh name1 name2     # some
# Needs python3. The scratch copy is $SCRATCH (default /tmp/carbon-defects).
set -u
repo=$(cd "$(dirname "$0")/../.." && pwd)
scratch=${SCRATCH:-/tmp/carbon-defects}
names=${*:-$(python3 "$repo/tools/defects/defects.py" list)}
for n in $names; do
  rm -rf "$scratch" && mkdir -p "$scratch"
  (cd "$repo" && git ls-files -z | xargs -0 cp --parents -t "$scratch")
  python3 "$repo/tools/defects/defects.py" "$n" "$scratch" || { echo "$n: PATTERN NOT FOUND"; continue; }
  start=$(date +%s)
  if ! (cd "$scratch" && go vet . >"$scratch.vet" 2>&1); then echo "$n: does not build"; head -3 "$scratch.vet"; continue; fi
  (cd "$scratch" && CARBON_SM_FAULTS=${CARBON_SM_FAULTS:-all} timeout 600 go test -count=1 -run 'TestStateMachine$' -timeout 590s . >"$scratch.log" 2>&1)
  rc=$?
  el=$(( $(date +%s) - start ))
  if [ $rc -ne 0 ]; then
    echo "$n: CAUGHT in ${el}s: $(grep -m1 -oE '(I[0-9]: .{0,140}|panic: .{0,100}|static role .{0,100})' "$scratch.log")"
  else
    echo "$n: MISSED (${el}s)"
  fi
done
