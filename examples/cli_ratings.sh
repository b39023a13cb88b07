#!/usr/bin/env bash
# The command-line workflow on MovieLens-shaped ratings:
# write a training file and a scoring file, fit, inspect, export coefficients, score.
#
#   bash examples/cli_ratings.sh            (about 200k ratings; runs in seconds)
#   ROWS=1000000 bash examples/cli_ratings.sh
set -euo pipefail
ROWS=${ROWS:-200000}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cd "$dir"

# 1. data: 90% of the rows to fit (CSV.gz), 10% to score (Parquet)
python3 - "$ROWS" <<'PY'
import sys
from impactglm.io import write_table
from impactglm.simulate import make_ratings
n = int(sys.argv[1])
data = make_ratings(n, kind="multinomial", seed=1).data
cut = int(0.9 * n)
write_table(data.iloc[:cut], "train.csv.gz")
write_table(data.iloc[cut:], "new.parquet")
PY
ls -l train.csv.gz new.parquet

# 2. fit: ^ makes UserID and MovieID high-cardinality factors with an estimated prior sd
impactglm fit --data train.csv.gz --formula "Rating ~ ^UserID + ^MovieID + age + C(genre)" \
    --family multinomial --prior-sd auto --holdout 0.1 --seed 1 \
    --model model.json --coef-tsv coef.tsv

# 3. every coefficient and level effect, readable by any tool
head -5 coef.tsv
cut -f3 coef.tsv | sort | uniq -c

# 4. the saved model's summary, without refitting
impactglm summary --model model.json > summary.txt
head -20 summary.txt

# 5. score new rows: class probabilities, the chosen class, then the input columns
impactglm score --model model.json --data new.parquet --out scored.csv
head -3 scored.csv

# 6. outputs are never overwritten silently
set +e
impactglm score --model model.json --data new.parquet --out scored.csv
status=$?
set -e
echo "(exit status $status: scored.csv exists; add --force to replace it)"
