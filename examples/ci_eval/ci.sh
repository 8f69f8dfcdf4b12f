#!/usr/bin/env bash
# The CI step a team adds to its pipeline (GitHub Actions, GitLab CI, Jenkins…):
#   bash examples/ci_eval/ci.sh
# Runs the evaluation as a new versioned run, gates it against the `production` alias, writes JUnit XML
# and a Markdown summary for the CI system, and promotes the run when the gates pass on main.
set -euo pipefail
cd "$(dirname "$0")"
export RAGTRAIL_STORE="${RAGTRAIL_STORE:-$PWD/.ragtrail/ragtrail.db}"   # or postgresql://… shared by the team
ragtrail eval run eval.yaml --no-progress
RUN="support-rag:latest"
# --allow-missing-baseline: on the very first run there is no `production` yet; the absolute gates still apply
ragtrail gate "$RUN" --gates gates.yaml --allow-missing-baseline \
  --junit gates-junit.xml --markdown "${GITHUB_STEP_SUMMARY:-gates-summary.md}"
if [ "${CI_BRANCH:-main}" = "main" ]; then
  ragtrail runs promote "$RUN" --alias production --gates gates.yaml --allow-missing-baseline
fi
