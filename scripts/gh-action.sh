#!/usr/bin/env bash
# The GitHub Action's logic (action.yml at the repository root calls it): run one command
# inside a Latch task, with just-in-time credentials and nothing else.
#
#   gh-action.sh run      wraps INPUT_RUN in `latch exec` (identity: the job's GitHub OIDC token)
#   gh-action.sh cleanup  cancels the task if `latch exec` could not end it (killed): the
#                         action's `if: always()` step
#
# Inputs (environment): LATCH (the binary), INPUT_SERVER, INPUT_AUDIENCE, INPUT_REQUESTS (one
# RESOURCE:ACTION[,ACTION…] per line), INPUT_RUN, INPUT_PURPOSE, INPUT_ENVIRONMENT, INPUT_TTL,
# INPUT_TASK_TTL, INPUT_WAIT_APPROVAL, INPUT_SHELL; from the runner: ACTIONS_ID_TOKEN_REQUEST_URL,
# ACTIONS_ID_TOKEN_REQUEST_TOKEN (the job needs `permissions: id-token: write`), RUNNER_TEMP.
#
# Security: credentials reach only INPUT_RUN's process (its environment, as
# LATCH_CREDENTIAL_<RESOURCE>); nothing is written to GITHUB_ENV, GITHUB_OUTPUT or GITHUB_PATH,
# and each credential is masked in the log (::add-mask::) before the command starts. `latch exec`
# removes the OIDC request token and URL from the command's environment, so the command cannot
# mint identity tokens and open tasks itself. The task is completed when the command ends,
# cancelled on SIGINT/SIGTERM (the runner's cancellation); a SIGKILLed `latch` leaves it to the
# cleanup step, and if that cannot run either, to the task's TTL (INPUT_TASK_TTL).
set -euo pipefail

die() { echo "::error title=latch::$*" >&2; exit 1; }

LATCH="${LATCH:-latch}"
STATE_DIR="${RUNNER_TEMP:-${TMPDIR:-/tmp}}/latch-action"
# RUNNER_TEMP belongs to one job; the action's steps run one after another, so one file.
STATE_FILE="$STATE_DIR/task"

common_args() {
  args=(--server "${INPUT_SERVER:?the action needs the broker URL (input server)}" --identity github)
  if [[ -n "${INPUT_AUDIENCE:-}" ]]; then args+=(--audience "$INPUT_AUDIENCE"); fi
}

need_oidc() {
  if [[ -z "${ACTIONS_ID_TOKEN_REQUEST_URL:-}" || -z "${ACTIONS_ID_TOKEN_REQUEST_TOKEN:-}" ]]; then
    die "no GitHub OIDC token service: give the job \`permissions: id-token: write\`"
  fi
}

run() {
  need_oidc
  [[ -n "${INPUT_RUN:-}" ]] || die "input run is empty"
  common_args
  args+=(--task-purpose "${INPUT_PURPOSE:-${GITHUB_WORKFLOW:-ci}: ${GITHUB_JOB:-job}}"
         --environment "${INPUT_ENVIRONMENT:-sandbox}")
  local line n=0
  while IFS= read -r line; do
    line="${line#"${line%%[![:space:]]*}"}"; line="${line%"${line##*[![:space:]]}"}"
    [[ -z "$line" || "$line" == \#* ]] && continue
    args+=(--request "$line"); n=$((n + 1))
  done <<< "${INPUT_REQUESTS:-}"
  [[ $n -gt 0 ]] || die "input requests is empty: one RESOURCE:ACTION[,ACTION…] per line"
  if [[ -n "${INPUT_TTL:-}" ]]; then args+=(--ttl "$INPUT_TTL"); fi
  args+=(--task-ttl "${INPUT_TASK_TTL:-1h}" --wait-approval "${INPUT_WAIT_APPROVAL:-0s}")
  mkdir -p "$STATE_DIR"
  rm -f "$STATE_FILE"
  # Inside the task: remember its id for the cleanup step, mask every credential line, then
  # run the user's command with the chosen shell.
  local wrapper='printf %s "$LATCH_TASK_ID" > "$LATCH_ACTION_STATE"
for v in $(compgen -v LATCH_CREDENTIAL_); do
  while IFS= read -r l; do [ -n "$l" ] && printf "::add-mask::%s\n" "$l"; done <<< "${!v}"
done
unset LATCH_ACTION_STATE
exec ${LATCH_ACTION_SHELL} "$LATCH_ACTION_RUN"'
  LATCH_ACTION_STATE="$STATE_FILE" LATCH_ACTION_RUN="$INPUT_RUN" \
    LATCH_ACTION_SHELL="${INPUT_SHELL:-bash -eo pipefail -c}" \
    exec "$LATCH" exec "${args[@]}" -- bash -c "$wrapper"
}

cleanup() {
  [[ -f "$STATE_FILE" ]] || exit 0
  local task; task="$(cat "$STATE_FILE")"; rm -f "$STATE_FILE"
  [[ -n "$task" ]] || exit 0
  need_oidc
  common_args
  local out
  if out="$("$LATCH" task show "$task" --json "${args[@]}" 2>&1)" \
     && grep -q '"state": *"open"' <<< "$out"; then
    "$LATCH" task cancel "$task" "${args[@]}" >/dev/null \
      && echo "latch: task $task was left open (latch exec was killed); cancelled, credentials revoked" >&2 \
      || echo "::warning title=latch::could not cancel task $task; its credentials expire with its TTL" >&2
  fi
}

case "${1:-run}" in
  run) run ;;
  cleanup) cleanup ;;
  *) die "usage: gh-action.sh run|cleanup" ;;
esac
