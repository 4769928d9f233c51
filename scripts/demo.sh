#!/usr/bin/env bash
# A short real demo in a throwaway queue home: a job that succeeds, one that fails into the
# dead letter queue, one that waits for a delay, and priority deciding what runs first.
set -euo pipefail
demo="$(mktemp -d)"
export QUEUECTL_HOME="$demo/queue"
trap 'queuectl worker stop --force --timeout 10 >/dev/null 2>&1 || true; rm -rf "$demo"' EXIT
cd "$demo"
# Print each command shell-quoted, so a line pasted into a shell runs exactly what the demo ran.
shell_word() {
  if [[ $1 =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then printf '%s' "$1"
  elif [[ $1 != *"'"* ]]; then printf "'%s'" "$1"
  elif [[ $1 != *[\"\$\`\\!]* ]]; then printf '"%s"' "$1"
  else printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}
q() {
  printf '\n$ queuectl'
  local word
  for word in "$@"; do printf ' '; shell_word "$word"; done
  printf '\n'
  queuectl "$@"
}

q config set backoff_base 1          # retry quickly for the demo: 1s between runs
q enqueue --id hello "echo hello from queuectl; echo hello >> ran.txt"
q enqueue --id flaky --max-retries 2 "echo 'disk full' >&2; exit 3"
q enqueue --id later --delay 2s "echo later >> ran.txt"
q enqueue --id urgent --priority -10 "echo urgent >> ran.txt"
q list
# --burst runs what is due, follows each job through its retries, then quits. flaky's two
# retries (1 s apart) outlast later's 2 s delay, so later is due, and run, before the end.
q worker start --count 1 --burst
printf '\nOrder the jobs ran in (urgent first, later last):\n'; cat ran.txt
q logs flaky
q status
q dlq list
