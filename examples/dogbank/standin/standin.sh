#!/bin/sh
# PID 1 of a stand-in service: sh handles the trap, so SIGTERM stops it at once.
name="${SERVICE_NAME:-service}"
echo "${name} started (pid $$)"
trap 'echo "${name} stopping"; exit 0' TERM INT
i=0
while :; do
  i=$((i + 1))
  if [ $((i % 30)) -eq 0 ]; then echo "${name} heartbeat ${i}"; fi
  sleep 1 &
  wait $!
done
